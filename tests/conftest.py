"""Shared fixtures: the tiny offline model; tests run from the repo root, as `make` does."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.helpers import REPO

# Recipes use paths relative to the repo root.
os.chdir(REPO)
# Two cores: more threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The 'small' tiny model (about 0.1M parameters), built once per session in about a second."""
    from aha.tiny import PRESETS, build_tiny_model, default_corpus

    out = tmp_path_factory.mktemp("tiny") / "model"
    return build_tiny_model(out, seed=0, corpus=default_corpus(0), **dataclasses.asdict(PRESETS["small"]))
