"""Trainer callbacks every aha run gets: `default_callbacks(recipe)` is what `aha.train` passes to the trainer.

- `SaveOnSigterm`: SIGTERM (Slurm preemption or time limit, `aha launch` stopping a run, `kill`) finishes the current
  optimizer step, saves a checkpoint and stops; rerunning the same command resumes from it.
- `MarkCompleteCheckpoints`: writes `aha-complete.json` into a checkpoint once every rank has written its part.
  A checkpoint folder without it was cut off mid-write, and `aha.train` never resumes from it.
- `CompactProgress` / `CompactPrinter`: TRL logs some forty scalars a step, most of them zero on a small run; they all
  go to TensorBoard, and the console gets one short line a step (`compact_line`) instead of the whole dict.
- `TrainTimeBudget` (recipes with `max_train_minutes`): a guard, set well above the expected time, that stops
  training once that much time went into steps; the model is saved, the run says it stopped early, and rerunning the
  same command resumes from its checkpoint to `max_steps`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from transformers import (
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from aha.run_folder import CHECKPOINT_PREFIX, COMPLETE_MARKER, write_json_atomic

# exit status of a run stopped by SIGTERM after saving (128 + signal number, what a shell reports for it)
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def _distributed() -> Any:
    """torch.distributed when this process is one rank of several, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on at least one: ranks must agree on stopping, or the ones that go on
    wait forever in the next collective."""
    dist = _distributed()
    if dist is None:
        return flag
    import torch

    # NCCL reduces CUDA tensors only; gloo (CPU runs) reduces CPU tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class SaveOnSigterm(TrainerCallback):
    """On SIGTERM: finish the optimizer step under way, save a checkpoint, stop training.

    The handler only records the signal; the step end (where the trainer can save) acts on it. Before training starts
    (model loading) SIGTERM keeps its default effect: there is nothing to save yet. `received` tells `aha.train` to
    skip the final model save and exit with `SIGTERM_EXIT_CODE`."""

    def __init__(self) -> None:
        self.received = False
        self.stopped_at_step: int | None = None
        self._previous_handler: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # a job-wide SIGTERM and the launcher's own may both arrive: say it once
            return
        self.received = True
        # os.write, not print: the handler may interrupt a write to sys.stderr, whose buffer is not reentrant
        message = f"aha: SIGTERM received (pid {os.getpid()}): saving a checkpoint after this step\n"
        with contextlib.suppress(OSError):
            os.write(2, message.encode())

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._previous_handler = signal.signal(signal.SIGTERM, self._handle)
        # `aha launch` starts the trainer with SIGTERM blocked, so that accelerate's agent outlives a job-wide
        # SIGTERM (Slurm signals every process) instead of killing the ranks 30 s later mid-save: the ranks take it
        # from here (aha.launch.processes)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if _any_rank(self.received):
            self.received = True
            self.stopped_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


class MarkCompleteCheckpoints(TrainerCallback):
    """After a checkpoint save: wait for every rank (each writes its own optimizer shards and RNG state), then the
    main process writes the marker atomically (temporary file, fsync, rename)."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        dist = _distributed()
        if dist is not None:
            dist.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if folder.is_dir():
                write_complete_marker(folder, state.global_step)
        if dist is not None:
            dist.barrier()  # no rank goes on (or exits) before the marker exists


def write_complete_marker(folder: Path, step: int) -> None:
    write_json_atomic(folder / COMPLETE_MARKER, {"global_step": step})


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / COMPLETE_MARKER).is_file()


class TrainTimeBudget(TrainerCallback):
    """Stop after `seconds` of training, counted from the first step's start (model loading excluded). The stop
    happens at a step end, on every rank at once; `stopped_at_step` tells the summary why the run ended early."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stopped_at_step: int | None = None
        self._start: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        spent = time.perf_counter() - (self._start if self._start is not None else time.perf_counter())
        if state.global_step >= state.max_steps > 0:
            return control  # the last step: max_steps ends the run, whatever the clock says
        if _any_rank(spent >= self.seconds):
            self.stopped_at_step = state.global_step
            control.should_save = True  # a checkpoint at the stop: rerunning the same command resumes from it
            control.should_training_stop = True
        return control


# What the console line shows of a step's logs, in order: (log key, label, format). Missing keys are left out.
CONSOLE_KEYS = (
    ("reward", "reward", "{:.3f}"),
    ("reward_std", "±", "{:.3f}"),
    ("loss", "loss", "{:.4g}"),
    ("mean_token_accuracy", "token accuracy", "{:.3f}"),
    ("completions/mean_length", "length", "{:.0f} tok"),
    ("completions/clipped_ratio", "cut off", "{:.0%}"),
    ("entropy", "entropy", "{:.3f}"),
    ("learning_rate", "lr", "{:.2e}"),
)


def compact_line(state: TrainerState, logs: dict[str, Any]) -> str | None:
    """One line for a person: `step 12/200 | reward 0.412 ± 0.301 | loss 0.0123 | ...`; None for the trainer's
    closing summary (train_runtime ...: the run's own ending lines say what matters)."""
    if "train_runtime" in logs:
        return None
    parts = [f"step {state.global_step}/{state.max_steps}"]
    for key, label, form in CONSOLE_KEYS:
        value = logs.get(key)
        if isinstance(value, int | float):
            text = form.format(value)
            parts.append(f"± {text}" if label == "±" else f"{label} {text}")
    return " | ".join(parts).replace(" | ± ", " ± ")


class CompactProgress(ProgressCallback):
    """transformers' progress bar, with `compact_line` written under it instead of the whole logs dict."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            line = compact_line(state, logs)
            if line is not None:
                self.training_bar.write(line)


class CompactPrinter(PrinterCallback):
    """transformers' printer (no progress bar: `disable_tqdm`), printing `compact_line` instead of the dict."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            line = compact_line(state, logs)
            if line is not None:
                print(line, flush=True)


def use_compact_console(trainer: Any) -> None:
    """Swap the trainer's console logger (progress bar or printer) for its compact twin; TensorBoard is unchanged."""
    for full, compact in ((ProgressCallback, CompactProgress), (PrinterCallback, CompactPrinter)):
        if trainer.pop_callback(full) is not None:
            trainer.add_callback(compact)


def default_callbacks(recipe: Any) -> list[TrainerCallback]:
    """The callbacks of every run of `recipe` (an `aha.recipe.Recipe`)."""
    callbacks: list[TrainerCallback] = [SaveOnSigterm(), MarkCompleteCheckpoints()]
    if recipe.launch.max_train_minutes is not None:
        callbacks.append(TrainTimeBudget(60.0 * recipe.launch.max_train_minutes))
    return callbacks


def time_budget_callback(callbacks: list[TrainerCallback]) -> TrainTimeBudget | None:
    return next((c for c in callbacks if isinstance(c, TrainTimeBudget)), None)


def sigterm_callback(callbacks: list[TrainerCallback]) -> SaveOnSigterm | None:
    return next((c for c in callbacks if isinstance(c, SaveOnSigterm)), None)
