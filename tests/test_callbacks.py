"""The training callbacks' decisions, driven with TrainerState/TrainerControl as the trainer drives them."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from aha.callbacks import TrainTimeBudget
from aha.train import stopped_by_time_budget


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


@pytest.mark.parametrize(
    ("stopped_by", "summary_step", "checkpoint_step", "finished"),
    [
        ("max_train_minutes", 40, 40, 40),  # the budget ended the run at its last checkpoint: finished
        ("max_train_minutes", 40, 25, None),  # a checkpoint older than the summary's end: resume from it
        ("max_steps", 40, 40, None),  # ended by max_steps: completed_step decides, not this
    ],
)
def test_a_run_ended_by_its_time_budget_counts_as_finished(tmp_path, stopped_by, summary_step, checkpoint_step,
                                                          finished):  # fmt: skip
    checkpoint = tmp_path / f"checkpoint-{checkpoint_step}"
    write(checkpoint / "trainer_state.json", {"global_step": checkpoint_step})
    write(tmp_path / "summary.json", {"stopped_by": stopped_by, "global_step": summary_step})
    assert stopped_by_time_budget(str(checkpoint), tmp_path / "summary.json") == finished


def test_no_summary_means_not_finished(tmp_path):
    write(tmp_path / "checkpoint-5" / "trainer_state.json", {"global_step": 5})
    assert stopped_by_time_budget(str(tmp_path / "checkpoint-5"), tmp_path / "summary.json") is None
