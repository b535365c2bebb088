"""Preemption: SIGTERM during training saves a complete checkpoint; rerunning the same command resumes from it and
finishes; a checkpoint cut off mid-write is never resumed from."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from aha.callbacks import COMPLETE_MARKER, SIGTERM_EXIT_CODE, write_complete_marker
from aha.train import last_checkpoint
from tests.launch.conftest import grpo_recipe, output_tail, run_launch, start_launch

STEP = re.compile(r"step (\d+)/\d+ \|")  # the console's line for each logged step


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.e2e
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_and_finishes(tiny_model, tmp_path, launch_env):
    max_steps = 30  # about 10 s of steps: time for the signal to land mid-run
    recipe = grpo_recipe(tmp_path, tiny_model, cpu_processes=2, max_steps=max_steps)
    run = tmp_path / "run"
    first = tmp_path / "first.out"
    launcher = start_launch([str(recipe)], launch_env, first)
    try:
        wait_for(lambda: STEP.search(first.read_text(errors="replace")), 300, "the first training step")
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=120)
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        raise
    text = first.read_text(errors="replace")
    assert code == SIGTERM_EXIT_CODE, output_tail(first)
    checkpoints = sorted(run.glob("checkpoint-*"))
    assert len(checkpoints) == 1, checkpoints  # save_strategy is "no": this one is the SIGTERM's
    step = int(checkpoints[0].name.split("-")[1])
    assert 1 <= step < max_steps
    assert (checkpoints[0] / COMPLETE_MARKER).is_file()
    assert f"stopped by SIGTERM at step {step}" in text
    assert f"newest complete checkpoint: {checkpoints[0]}" in text
    assert not (run / "summary.json").exists()  # not a finished run

    second = tmp_path / "second.out"
    assert run_launch([str(recipe)], launch_env, second) == 0, output_tail(second)
    assert f"aha: resuming from {checkpoints[0]}" in second.read_text(errors="replace")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == str(checkpoints[0])
    assert summary["global_step"] == max_steps
    # the resumed run logged steps k+1..max only (logging_steps 1: one console line a step)
    logged = [int(n) for n in STEP.findall(second.read_text(errors="replace"))]
    assert logged[0] == step + 1 and logged[-1] == max_steps


@pytest.mark.parametrize(
    ("folders", "complete", "expected"),
    [
        ([], [], None),
        (["checkpoint-2", "checkpoint-10"], ["checkpoint-2", "checkpoint-10"], "checkpoint-10"),  # numeric, not text
        (["checkpoint-2", "checkpoint-3"], ["checkpoint-2"], "checkpoint-2"),  # 3 was cut off mid-write
        (["checkpoint-3"], [], None),
        (["checkpoint-4", "checkpoint-4.tmp", "other"], ["checkpoint-4"], "checkpoint-4"),
    ],
    ids=["none", "newest by step", "skips an incomplete one", "only incomplete", "ignores other folders"],
)
def test_resume_picks_the_newest_complete_checkpoint(tmp_path, folders, complete, expected):
    for name in folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}")
    for name in complete:
        write_complete_marker(tmp_path / name, int(name.split("-")[1]))
    assert last_checkpoint(str(tmp_path)) == (str(tmp_path / expected) if expected else None)


def test_resume_of_a_missing_output_dir_is_a_fresh_run(tmp_path):
    assert last_checkpoint(str(tmp_path / "never-created")) is None
