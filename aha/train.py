"""One training process of a recipe: what `accelerate launch` (or plain python) runs on every rank.

    accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 2 -m aha.train RECIPE [--key value]
    aha train recipes/tiny/grpo-arith.yaml --max_steps 5        # one process, no launcher

Most users run `aha launch RECIPE` (or `make train RECIPE=...`), which plans the topology and calls this.
Everything below the recipe is TRL: GRPOTrainer (or SFTTrainer for a warm-up), TensorBoard logging under
`<output_dir>/tensorboard`, checkpoints under `<output_dir>/checkpoint-<step>`; a rerun resumes from the newest one.
At the end the model and tokenizer go to `output_dir` and `summary.json` records what happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from aha.recipe import Recipe, RecipeError, load
from aha.run_folder import RECIPE_COPY, SUMMARY_FILE, TENSORBOARD_SUBDIR

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


def world_size() -> int:
    """Training ranks of this run as the launcher set them up (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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

    if not os.path.isdir(output_dir):
        return None
    steps = [(int(m.group(1)), m.group(0)) for m in map(CHECKPOINT_DIR.fullmatch, os.listdir(output_dir)) if m]
    for _, name in sorted(steps, reverse=True):
        path = os.path.join(output_dir, name)
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


def write_summary(
    recipe: Recipe, trainer, wall_time_s: float, resumed_from: str | None, stopped_by: str = "max_steps"
) -> Path:
    history = trainer.state.log_history
    train_logs = [entry for entry in history if "loss" in entry or "reward" in entry]
    summary = {
        "recipe": recipe.path,
        "overrides": recipe.overrides,
        "trainer": recipe.launch.trainer,
        "model": recipe.model.model_name_or_path,
        "dataset": recipe.dataset.dataset_name,
        "output_dir": recipe.training.output_dir,
        "tensorboard_dir": os.environ.get("TENSORBOARD_LOGGING_DIR"),
        "processes": world_size(),
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from": resumed_from,
        "stopped_by": stopped_by,  # max_steps, or max_train_minutes when the time budget ended the run
        "wall_time_s": round(wall_time_s, 2),
        "final_metrics": train_logs[-1] if train_logs else {},
        "train_summary": next((e for e in reversed(history) if "train_runtime" in e), {}),
    }
    path = Path(recipe.training.output_dir) / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a summary
    return path


def completed_step(checkpoint: str | None, max_steps: int) -> int | None:
    """The step of `checkpoint` when it already reached `max_steps` (> 0), else None."""
    if checkpoint is None or max_steps <= 0:
        return None
    state = Path(checkpoint) / "trainer_state.json"
    step = json.loads(state.read_text()).get("global_step", 0) if state.is_file() else 0
    return step if step >= max_steps else None


def stopped_by_time_budget(checkpoint: str | None, summary_file: Path) -> int | None:
    """The step of `checkpoint` when the run's time budget (max_train_minutes) ended the run there, else None."""
    if checkpoint is None or not summary_file.is_file():
        return None
    state = Path(checkpoint) / "trainer_state.json"
    try:
        summary = json.loads(summary_file.read_text())
        step = json.loads(state.read_text()).get("global_step") if state.is_file() else None
    except (OSError, ValueError):
        return None
    finished = summary.get("stopped_by") == "max_train_minutes" and summary.get("global_step") == step
    return step if finished else None


def run(recipe: Recipe) -> Path | None:
    """Train; the summary's path, or None when SIGTERM stopped the run after saving a checkpoint."""
    from aha.callbacks import default_callbacks, sigterm_callback, time_budget_callback

    start = time.perf_counter()
    output_dir = recipe.training.output_dir
    # TensorBoard's folder comes from this variable in transformers 5 (TrainingArguments lost logging_dir)
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", os.path.join(output_dir, TENSORBOARD_SUBDIR))
    resume = recipe.training.resume_from_checkpoint or last_checkpoint(output_dir)
    if recipe.is_grpo and recipe.training.use_vllm and recipe.training.use_cpu:
        from aha import cpu_weight_sync

        cpu_weight_sync.install()  # TRL's weight sync is NCCL-only; GPU runs keep it
    if recipe.training.use_cpu and resume:
        allow_cpu_rank_map_location()
    summary = Path(output_dir) / SUMMARY_FILE
    done = completed_step(resume, recipe.training.max_steps)
    if done is None:
        done = stopped_by_time_budget(resume, summary)
    if done is not None and summary.is_file():
        # rerunning a finished run (make demo after make train) must not train on, nor overwrite its summary
        if is_main_process():
            print(
                f"aha: {output_dir} already finished step {done} of {recipe.training.max_steps}; nothing to train. "
                f"Summary -> {summary}. Raise --max_steps to train on, or use a new output_dir.",
                flush=True,
            )
        return summary
    if is_main_process():
        # the run folder carries its recipe: report, export and chat read it from there (overrides: summary.json)
        os.makedirs(output_dir, exist_ok=True)
        shutil.copyfile(recipe.path, os.path.join(output_dir, RECIPE_COPY))
    callbacks = default_callbacks(recipe)
    trainer = build_trainer(recipe, callbacks=callbacks)
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
    summary = Path(output_dir) / SUMMARY_FILE
    if trainer.accelerator.is_main_process:
        budget = time_budget_callback(callbacks)
        stopped_by = "max_train_minutes" if budget is not None and budget.stopped_at_step is not None else "max_steps"
        summary = write_summary(recipe, trainer, time.perf_counter() - start, resume, stopped_by)
        print(
            f"aha: model -> {output_dir}\naha: tensorboard -> {os.environ['TENSORBOARD_LOGGING_DIR']}\n"
            f"aha: summary -> {summary}",
            flush=True,
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        recipe = load(argv[0], argv[1:], processes=world_size())
    except RecipeError as err:
        print(f"aha train: {argv[0]}: {err}", file=sys.stderr)
        return 2
    if run(recipe) is None:
        from aha.callbacks import SIGTERM_EXIT_CODE

        return SIGTERM_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
