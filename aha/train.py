"""One training process of a recipe: what `accelerate launch` (or plain python) runs on every rank.

    accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 2 -m aha.train RECIPE [--key value]
    aha train recipes/tiny/grpo-arith.yaml --max_steps 5        # one process, no launcher

Most users run `aha launch RECIPE` (or `make train RECIPE=...`), which plans the topology and calls this.
Everything below the recipe is TRL: GRPOTrainer (or SFTTrainer for a warm-up), TensorBoard logging under
`<output_dir>/tensorboard`, checkpoints under `<output_dir>/checkpoint-<step>`; a rerun resumes from the newest one.
At the start the run folder gets the recipe as this run uses it (`recipe.resolved.yaml`, see aha.run_folder); at the
end the model and tokenizer go to `output_dir`, `summary.json` records what happened, and two or three lines say
it: steps done of max_steps and why the run stopped, the reward at the start and the end, what to run next.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aha.recipe import Recipe, load, read_yaml
from aha.run_folder import TRAINER_STATE, RunFolder, override_values, write_json_atomic, write_text_atomic
from aha.topology import process_rank, process_world_size

# Set by `aha launch` for the processes it starts: the CLI overrides the user gave (JSON list). The launcher appends
# its own (--num_nodes, --gpus_per_node, the vLLM server's host and port) after them; those are the plan, not choices.
USER_OVERRIDES_ENV = "AHA_USER_OVERRIDES"


def world_size() -> int:
    """Training ranks of this run as the launcher set them up (1 without a launcher)."""
    return process_world_size()


def is_main_process() -> bool:
    return process_rank() == 0


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    model = recipe.model
    tokenizer = AutoTokenizer.from_pretrained(model.model_name_or_path, revision=model.model_revision)
    if recipe.prompt.chat_template:
        tokenizer.chat_template = Path(recipe.prompt.chat_template).read_text()
    if tokenizer.pad_token is None:  # batched generation needs one; eos is the conventional stand-in
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def model_init_kwargs(recipe: Recipe) -> dict[str, Any]:
    """How the trainer loads the model, from the recipe's model section (ModelConfig)."""
    model = recipe.model
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {"revision": model.model_revision, "dtype": model.dtype}
    if model.attn_implementation is not None:
        kwargs["attn_implementation"] = model.attn_implementation
    quantization = get_quantization_config(model)  # None unless load_in_4bit / load_in_8bit
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # one GPU per rank
    return kwargs


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint in `output_dir`, or None for a fresh run. Complete: every rank finished writing
    it (aha.callbacks.MarkCompleteCheckpoints); a folder cut off mid-write (a kill during the save) is skipped."""
    from aha.callbacks import is_complete_checkpoint

    for _, folder in reversed(RunFolder(Path(output_dir)).checkpoints()):
        path = str(folder)
        if is_complete_checkpoint(path):
            return path
        if is_main_process():
            print(f"aha: skipping {path}: incomplete (cut off while saving)", file=sys.stderr, flush=True)
    return None


_CPU_RANK_LOCATIONS_REGISTERED = False


def allow_cpu_rank_map_location() -> None:
    """Resuming a multi-rank CPU run: transformers loads the optimizer state with `map_location=args.device`, which
    is `cpu:<rank>` on CPU ranks, a location torch.load cannot restore ("don't know how to restore data location").
    This teaches torch that `cpu:<n>` is the CPU."""
    global _CPU_RANK_LOCATIONS_REGISTERED
    if _CPU_RANK_LOCATIONS_REGISTERED:
        return
    import torch

    def restore(storage, location: str):
        return storage if location.startswith("cpu:") else None  # None: the next handler decides

    # 11: just after torch's own CPU handler (10); priorities must be unique
    torch.serialization.register_package(11, lambda storage: None, restore)
    _CPU_RANK_LOCATIONS_REGISTERED = True


def build_trainer(recipe: Recipe, callbacks: list | None = None):
    """The TRL trainer the recipe describes. The dataset is built before the model loads, so data errors are cheap."""
    from trl import get_peft_config

    import rewards

    training = recipe.training
    tokenizer = load_tokenizer(recipe)
    if training.model_init_kwargs is None:
        training.model_init_kwargs = model_init_kwargs(recipe)
    peft_config = get_peft_config(recipe.model)
    if recipe.is_async:
        from aha.async_grpo import build_async_trainer
        from aha.data import grpo_dataset

        training.model_init_kwargs.pop("attn_implementation", None)  # TRL's packed attention is the only one
        train_dataset = grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, recipe.dataset.dataset_train_split)
        return build_async_trainer(recipe, tokenizer, train_dataset, callbacks)
    if recipe.is_grpo:
        from trl import GRPOTrainer

        from aha.aha_metrics import aha_metrics_hooks
        from aha.data import grpo_dataset

        train_dataset = grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, recipe.dataset.dataset_train_split)
        assert recipe.rewards is not None
        options = recipe.rewards.reward_options or {}
        reward_funcs = [rewards.get(name, **options.get(name, {})) for name in recipe.rewards.reward_funcs]
        # the aha signals (reflection phrases, completion length) ride on the first reward's calls into TRL's logger
        reward_funcs = aha_metrics_hooks(recipe).attach(reward_funcs)
        return GRPOTrainer(
            model=recipe.model.model_name_or_path,
            reward_funcs=reward_funcs,
            args=training,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    from trl import SFTTrainer

    from aha.data import sft_dataset

    train_dataset = sft_dataset(recipe.dataset, recipe.prompt, recipe.dataset.dataset_train_split)
    return SFTTrainer(
        model=recipe.model.model_name_or_path,
        args=training,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def user_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides the user chose: what `aha launch` says they were (when they lead the flags this process got),
    else all of them (`aha train` run by hand)."""
    told = os.environ.get(USER_OVERRIDES_ENV)
    try:
        user = json.loads(told) if told else None
    except ValueError:
        user = None
    if isinstance(user, list) and list(overrides[: len(user)]) == user:
        return user
    return list(overrides)


def _plain(value: Any) -> Any:
    """A parsed recipe value as YAML writes it back: enums by value, tuples and paths as lists and strings."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolved_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe as this run uses it: the YAML's keys with every CLI override applied, each override valued as the
    run parsed it. Loading the result with `aha.recipe.load` and no overrides gives the same recipe."""
    settings = read_yaml(recipe.path)
    sections = [s for s in (recipe.dataset, recipe.prompt, recipe.rewards, recipe.launch, recipe.training) if s]
    sections.append(recipe.model)
    for key in override_values(recipe.overrides):
        for section in sections:
            if key in {f.name for f in dataclasses.fields(section)}:
                settings[key] = _plain(getattr(section, key))
                break
    return settings


def write_run_recipe(recipe: Recipe, user: Sequence[str]) -> Path:
    """Copy the recipe file into the run folder and write the resolved recipe beside it (what eval, chat, export and
    report load); the resolved recipe's path."""
    folder = RunFolder(Path(recipe.training.output_dir))
    folder.path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, folder.recipe_copy)
    launcher = list(recipe.overrides[len(user) :])
    header = [
        f"# The recipe as the run in {folder.path} used it: {recipe.path}",
        f"# with the user's overrides {' '.join(user) or '(none)'}"
        + (f" and the launcher's plan {' '.join(launcher)}" if launcher else ""),
        f"# Written by aha train at {datetime.now(UTC).isoformat(timespec='seconds')}. aha eval, chat, export and "
        "report load this file.",
    ]
    body = yaml.safe_dump(resolved_settings(recipe), sort_keys=False, allow_unicode=True, width=120)
    return write_text_atomic(folder.resolved_recipe, "\n".join(header) + "\n" + body)


def write_summary(
    recipe: Recipe,
    trainer,
    wall_time_s: float,
    resumed_from: str | None,
    stopped_by: str = "max_steps",
    user: Sequence[str] | None = None,
) -> Path:
    history = trainer.state.log_history
    train_logs = [entry for entry in history if "loss" in entry or "reward" in entry]
    summary = {
        "recipe": recipe.path,
        "overrides": list(recipe.overrides if user is None else user),  # the user's CLI overrides only
        "trainer": recipe.launch.trainer,
        "model": recipe.model.model_name_or_path,
        "dataset": recipe.dataset.dataset_name,
        "output_dir": recipe.training.output_dir,
        "tensorboard_dir": os.environ.get("TENSORBOARD_LOGGING_DIR"),
        "processes": world_size(),
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from": resumed_from,
        "stopped_by": stopped_by,  # max_steps, or max_train_minutes when the time guard ended the run
        "wall_time_s": round(wall_time_s, 2),
        "final_metrics": train_logs[-1] if train_logs else {},
        "train_summary": next((e for e in reversed(history) if "train_runtime" in e), {}),
    }
    return write_json_atomic(RunFolder(Path(recipe.training.output_dir)).summary_file, summary)


def completed_step(checkpoint: str | None, max_steps: int) -> int | None:
    """The step of `checkpoint` when it already reached `max_steps` (> 0), else None."""
    if checkpoint is None or max_steps <= 0:
        return None
    state = Path(checkpoint) / TRAINER_STATE
    step = json.loads(state.read_text()).get("global_step", 0) if state.is_file() else 0
    return step if step >= max_steps else None


# Steps at each end of the run that the start and end reward (or loss) are averaged over.
ENDS_WINDOW = 10


def moving_ends(history: Sequence[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """Mean of `key` over the first and the last ENDS_WINDOW logged steps; None when it was never logged."""
    values = [float(entry[key]) for entry in history if isinstance(entry.get(key), int | float)]
    if not values:
        return None
    window = min(ENDS_WINDOW, len(values))
    return sum(values[:window]) / window, sum(values[-window:]) / window


def ending_lines(recipe: Recipe, trainer, stopped_by: str) -> list[str]:
    """What a person reads when the run ends: steps done and why it stopped, the reward at the start and end, where
    the model is and what to run next."""
    state, output_dir = trainer.state, recipe.training.output_dir
    if stopped_by == "max_train_minutes":
        why = (
            f"stopped by the time guard max_train_minutes={recipe.launch.max_train_minutes} before max_steps: the "
            f"model is only partly trained. Run the same command again to train on to step {state.max_steps}."
        )
    else:
        why = "reached max_steps"
    lines = [f"aha: trained {state.global_step} of {state.max_steps} steps ({why})"]
    key = "reward" if recipe.is_grpo else "loss"
    ends = moving_ends(state.log_history, key)
    if ends is not None:
        lines.append(
            f"aha: {key} (mean of up to {ENDS_WINDOW} logged steps) {ends[0]:.3f} at the start -> {ends[1]:.3f} at "
            "the end"
        )
    lines.append(f"aha: model -> {output_dir}; next: aha eval --model {output_dir} && aha report {output_dir}")
    return lines


def run(recipe: Recipe, user: Sequence[str] | None = None) -> Path | None:
    """Train; the summary's path, or None when SIGTERM stopped the run after saving a checkpoint. `user`: the CLI
    overrides the user gave (the rest of `recipe.overrides` came from the launcher); default all of them."""
    from aha.callbacks import default_callbacks, sigterm_callback, time_budget_callback, use_compact_console

    start = time.perf_counter()
    user = list(recipe.overrides if user is None else user)
    output_dir = recipe.training.output_dir
    folder = RunFolder(Path(output_dir))
    # TensorBoard's folder comes from this variable in transformers 5 (TrainingArguments lost logging_dir)
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(folder.tensorboard_dir))
    resume = recipe.training.resume_from_checkpoint or last_checkpoint(output_dir)
    if recipe.is_grpo and not recipe.is_async and recipe.training.use_vllm and recipe.training.use_cpu:
        from aha import cpu_weight_sync

        cpu_weight_sync.install()  # TRL's weight sync is NCCL-only; GPU runs keep it
    if recipe.training.use_cpu and resume:
        allow_cpu_rank_map_location()
    done = completed_step(resume, recipe.training.max_steps)
    if done is not None and folder.summary_file.is_file():
        # rerunning a finished run (make demo after make train) must not train on, nor overwrite its summary
        if is_main_process():
            print(
                f"aha: {output_dir} already finished step {done} of {recipe.training.max_steps}; nothing to train. "
                f"Summary -> {folder.summary_file}. Raise --max_steps to train on, or use a new output_dir.",
                flush=True,
            )
        return folder.summary_file
    if is_main_process():
        write_run_recipe(recipe, user)  # later commands load the recipe from the run folder, never re-resolve it
    if recipe.training.ddp_find_unused_parameters is None:
        # transformers' default (True without gradient checkpointing) makes DDP search every step for parameters the
        # forward pass did not use, and warn each run that it found none: a causal LM, full or LoRA, uses them all
        recipe.training.ddp_find_unused_parameters = False
    callbacks = default_callbacks(recipe)
    trainer = build_trainer(recipe, callbacks=callbacks)
    use_compact_console(trainer)  # every logged scalar still goes to TensorBoard
    if resume and is_main_process():
        print(f"aha: resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    preempted = sigterm_callback(callbacks)
    if preempted is not None and preempted.received:
        if is_main_process():
            print(
                f"aha: stopped by SIGTERM at step {trainer.state.global_step}; checkpoint in {output_dir}; rerun the "
                "same command to resume",
                flush=True,
            )
        return None
    trainer.save_model(output_dir)  # gathers ZeRO-3 shards; writes the tokenizer too
    summary = folder.summary_file
    if trainer.accelerator.is_main_process:
        budget = time_budget_callback(callbacks)
        stopped_by = "max_train_minutes" if budget is not None and budget.stopped_at_step is not None else "max_steps"
        summary = write_summary(recipe, trainer, time.perf_counter() - start, resume, stopped_by, user)
        print("\n".join(ending_lines(recipe, trainer, stopped_by)), flush=True)
        print(f"aha: tensorboard -> {os.environ['TENSORBOARD_LOGGING_DIR']}; summary -> {summary}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    recipe = load(argv[0], argv[1:], processes=world_size())
    summary = run(recipe, user_overrides(argv[1:]))
    leave_process_group()  # not after a failure: the other ranks may be gone, a barrier would wait for them
    if summary is None:
        from aha.callbacks import SIGTERM_EXIT_CODE

        return SIGTERM_EXIT_CODE
    return 0


def leave_process_group() -> None:
    """Every rank waits for the others, then tears the process group down: a rank whose interpreter exits while
    another still saves can abort in gloo's threads ("terminate called without an active exception", exit -6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha train`

    sys.exit(aha_main(["train", *sys.argv[1:]]))
