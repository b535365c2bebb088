"""End-to-end fixtures: a warm-started tiny model, trained for real by the project's own SFT recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, write_recipe


def run_aha(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`aha <args>` in a fresh process, as a user runs it; output kept for the assertion message."""
    done = subprocess.run(
        [sys.executable, "-m", "aha.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"aha {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="session")
def warm_model(tiny_model, tmp_path_factory) -> Path:
    """The small tiny model after a short supervised warm start (recipes/tiny/sft-warmup.yaml, shortened): it emits
    think/answer tags often enough that format rewards vary within a group."""
    folder = tmp_path_factory.mktemp("warm")
    recipe = write_recipe(
        folder,
        "tiny/sft-warmup.yaml",
        model_name_or_path=str(tiny_model),
        output_dir=str(folder / "model"),
        max_steps=60,
        learning_rate=3e-3,
        warmup_steps=5,
        report_to=[],
        dataset_generator={"n_train": 1000, "n_test": 50, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1},
    )
    run_aha("train", str(recipe))
    return folder / "model"
