"""`make smoke-gpu` and `make gpu-wheels` checked here: the skip path without a GPU, the wheel list against the pins,
every part's launch plan; on a machine with a CUDA GPU the smoke itself runs (marked gpu, skipped elsewhere)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts" / "gpu"))
import smoke
import wheels

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins_of(requirements: list[str]) -> dict[str, str]:
    found = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        found[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.split(";")[0].strip()
    return found


def test_without_a_gpu_the_smoke_says_so_in_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "scripts/gpu/smoke.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], done.stdout
    assert time.monotonic() - began < 30


def test_the_make_target_runs_without_a_venv_dependency():
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^smoke-gpu:(.*)$", makefile, re.M)
    assert target is not None and "STAMP" not in target.group(1)  # a bare GPU machine has no .venv to build


def test_the_wheel_list_matches_the_project_pins():
    pins = {re.sub(r"[-_.]+", "-", p.name).lower(): p for p in wheels.read_pins()}
    project = pins_of(PYPROJECT["project"]["dependencies"])
    for name in ("trl", "datasets", "deepspeed", "math-verify"):
        assert pins[name].version == project[name], name
    assert pins["bitsandbytes"].version == pins_of(PYPROJECT["project"]["optional-dependencies"]["gpu"])["bitsandbytes"]
    assert pins["deepspeed"].build  # no wheel on PyPI: built here with its ops off
    assert pins["bitsandbytes"].platform == "manylinux_2_24_x86_64"  # else pip falls back to a 105 MB wheel
    # what the smoke imports must be in the list (or on the GPU machine: torch, transformers, accelerate, peft, ...)
    listed = {name.replace("-", "_") for name in pins}
    assert set(smoke.NEEDED) <= listed


@pytest.mark.parametrize(
    ("line", "problem"),
    [("trl", "expected 'name==version"), ("trl==1.0 cp311", "neither 'build'"), ("a==1 b c", "expected")],
)
def test_a_malformed_wheel_line_names_the_file_and_line(tmp_path, line, problem):
    listing = tmp_path / "wheels.txt"
    listing.write_text(f"# comment\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(problem)) as err:
        wheels.read_pins(listing)
    assert f"{listing}:2" in str(err.value)


def test_collected_wheels_fit_the_budget_when_present():
    manifest = REPO / ".gpu-wheels" / wheels.MANIFEST
    if not manifest.is_file():
        pytest.skip("no .gpu-wheels/ here (make gpu-wheels collects them; it needs the package registry)")
    data = json.loads(manifest.read_text())
    assert data["total_mib"] <= wheels.BUDGET_MIB
    assert len(data["wheels"]) == len(wheels.read_pins())


def test_every_part_plans_for_one_gpu(tmp_path, capsys):
    assert smoke.plan_all(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.count("plans:") == len(smoke.launches(tmp_path))
    assert "zero3" in out and "ddp" in out


def test_the_markdown_table_has_a_row_per_part():
    report = {
        "date": "2026-12-04T00:00:00+00:00",
        "gpu": "NVIDIA H200",
        "versions": {"torch": "2.11.0"},
        "wall_s": 1.0,
        "parts": [
            {"part": "a", "ok": True, "seconds": 1, "peak_gpu_mib": 10, "loss": [0.5], "reward": [0.1], "check": "x"},
            {"part": "b", "ok": False, "error": "RuntimeError: boom\nmore"},
        ],
    }
    text = smoke.markdown(report)
    assert "| a | ok | 1 | 10 |" in text
    assert "| b | FAILED |" in text and "boom" in text and "more" not in text


@pytest.mark.gpu
def test_the_smoke_passes_on_a_cuda_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    done = subprocess.run([sys.executable, "scripts/gpu/smoke.py", "--out", str(tmp_path)], cwd=REPO, timeout=900)
    assert done.returncode == 0
    report = json.loads((tmp_path / "smoke-gpu.json").read_text())
    assert all(part["ok"] for part in report["parts"])
