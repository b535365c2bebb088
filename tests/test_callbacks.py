"""The training callbacks' decisions, driven with TrainerState/TrainerControl as the trainer drives them, and what
the end of a run says."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from aha.callbacks import TrainTimeBudget, compact_line
from aha.train import USER_OVERRIDES_ENV, completed_step, ending_lines, user_overrides


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])


def test_time_budget_lets_steps_run_until_it_is_spent(args, monkeypatch):
    clock = iter([100.0, 100.5, 160.5])  # train begin, first step end (0.5 s), second step end (60.5 s)
    monkeypatch.setattr("aha.callbacks.time.perf_counter", lambda: next(clock))
    budget, state, control = TrainTimeBudget(seconds=60.0), TrainerState(), TrainerControl()
    budget.on_train_begin(args, state, control)
    state.global_step = 1
    assert not budget.on_step_end(args, state, control).should_training_stop
    state.global_step = 2
    stopped = budget.on_step_end(args, state, control)
    assert stopped.should_training_stop and stopped.should_save
    assert budget.stopped_at_step == 2


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_run_stopped_by_its_time_guard_is_not_finished(tmp_path):
    """The time guard stops a run before max_steps; rerunning the same command resumes it to max_steps."""
    checkpoint = tmp_path / "checkpoint-40"
    write(checkpoint / "trainer_state.json", {"global_step": 40})
    write(tmp_path / "summary.json", {"stopped_by": "max_train_minutes", "global_step": 40})
    assert completed_step(str(checkpoint), max_steps=200) is None
    assert completed_step(str(checkpoint), max_steps=40) == 40


def test_the_end_of_a_run_says_steps_why_reward_and_next_command():
    history = [{"reward": 0.1 * step, "step": step} for step in range(1, 31)] + [{"train_runtime": 9.0}]
    state = SimpleNamespace(global_step=30, max_steps=200, log_history=history)
    recipe = SimpleNamespace(
        is_grpo=True, launch=SimpleNamespace(max_train_minutes=30.0), training=SimpleNamespace(output_dir="runs/x")
    )
    lines = ending_lines(recipe, SimpleNamespace(state=state), "max_train_minutes")
    assert len(lines) == 3
    assert lines[0].startswith("aha: trained 30 of 200 steps (stopped by the time guard max_train_minutes=30.0")
    assert "Run the same command again to train on to step 200" in lines[0]
    assert "0.550 at the start -> 2.550 at the end" in lines[1]  # means of steps 1-10 and 21-30
    assert "aha eval --model runs/x" in lines[2] and "aha report runs/x" in lines[2]
    done = ending_lines(
        recipe, SimpleNamespace(state=SimpleNamespace(**{**vars(state), "global_step": 200})), "max_steps"
    )
    assert done[0] == "aha: trained 200 of 200 steps (reached max_steps)"


def test_only_the_users_overrides_are_recorded(monkeypatch):
    launched = ["--seed", "1", "--num_nodes", "1", "--gpus_per_node", "0"]
    monkeypatch.setenv(USER_OVERRIDES_ENV, json.dumps(["--seed", "1"]))
    assert user_overrides(launched) == ["--seed", "1"]
    monkeypatch.setenv(USER_OVERRIDES_ENV, json.dumps(["--seed", "2"]))  # not what this process got: all are the user's
    assert user_overrides(launched) == launched
    monkeypatch.delenv(USER_OVERRIDES_ENV)
    assert user_overrides(launched) == launched  # `aha train` by hand


def test_the_console_line_shows_what_a_person_reads_and_skips_the_zero_counters():
    state = TrainerState()
    state.global_step, state.max_steps = 12, 200
    logs = {"reward": 0.4123, "reward_std": 0.3, "loss": 0.0123, "completions/mean_length": 33.2,
            "completions/clipped_ratio": 0.0, "entropy": 0.118, "learning_rate": 1.5e-4, "step_time": 2.7,
            "frac_reward_zero_std": 0.0, "sampling/importance_sampling_ratio/min": 0.0}  # fmt: skip
    line = compact_line(state, logs)
    assert line == (
        "step 12/200 | reward 0.412 ± 0.300 | loss 0.0123 | length 33 tok | cut off 0% | entropy 0.118 | lr 1.50e-04"
    )
    assert compact_line(state, {"train_runtime": 540.0, "train_loss": 0.01}) is None
