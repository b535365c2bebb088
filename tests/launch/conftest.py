"""Launch-test fixtures: recipes in tmp folders, `aha launch` in its own session, and a check that nothing a test
started outlives it.

Every process a test starts carries `AHA_TEST_TOKEN=<unique>` in its environment (children inherit it); after the test
the fixture looks for that token in /proc/*/environ, kills what it finds and fails the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, write_recipe

TOKEN_VARIABLE = "AHA_TEST_TOKEN"
REWARD = "tests.launch.launch_rewards:distinct_characters"


def processes_with_token(token: str) -> list[int]:
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            status = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # zombies (state Z) hold no resources; their parent reaps them
        if needle in environ.split(b"\0") and status.rsplit(")", 1)[-1].split()[0] != "Z":
            found.append(int(entry))
    return found


@contextlib.contextmanager
def tracked_environment() -> Iterator[dict[str, str]]:
    """Environment for `aha launch` subprocesses; on exit, asserts none of them (or their children) is left."""
    token = uuid.uuid4().hex
    env = {**os.environ, TOKEN_VARIABLE: token, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    yield env
    deadline = time.monotonic() + 15  # a stopped process may still be exiting
    while (left := processes_with_token(token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    described = []
    for pid in left:
        try:
            described.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ')[:200]!r}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, "processes left running after the test (now killed):\n" + "\n".join(described)


@pytest.fixture
def launch_env() -> Iterator[dict[str, str]]:
    with tracked_environment() as env:
        yield env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`aha launch ARGS` in its own session, output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "aha.cli", "launch", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_launch(args: list[str], env: dict[str, str], log: Path, timeout: float = 600) -> int:
    """`aha launch ARGS` to completion; on timeout its whole session is killed and the test fails."""
    process = start_launch(args, env, log)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"aha launch {' '.join(args)} ran over {timeout} s; output:\n{log.read_text()[-4000:]}")


def output_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def grpo_recipe(folder: Path, model: Path, **keys) -> Path:
    """recipes/tiny/grpo-arith.yaml cut down to seconds: 2 steps, 4 prompts of 2 generations per rank, 8 tokens."""
    values = {
        "model_name_or_path": str(model),
        "output_dir": str(folder / "run"),
        "dataset_generator": {"n_train": 64, "n_test": 8, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1},
        "system_prompt": None,
        "reward_funcs": [REWARD],
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "save_strategy": "no",
        "report_to": [],
        **keys,
    }
    return write_recipe(folder, "tiny/grpo-arith.yaml", drop=("reward_weights", "reward_options"), **values)


def sft_recipe(folder: Path, model: Path, **keys) -> Path:
    values = {
        "model_name_or_path": str(model),
        "output_dir": str(folder / "run"),
        "dataset_generator": {"n_train": 64, "n_test": 8, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1},
        "max_steps": 1,
        "warmup_steps": 0,
        "logging_steps": 1,
        "report_to": [],
        **keys,
    }
    return write_recipe(folder, "tiny/sft-warmup.yaml", **values)
