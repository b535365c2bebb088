"""`aha export RUN_DIR`: a trained run as one self-contained model folder, ready for `from_pretrained`, vLLM or the hub.

    aha export runs/qwen2.5-3b-gsm8k-lora                          # -> runs/qwen2.5-3b-gsm8k-lora-merged
    aha export runs/qwen2.5-3b-gsm8k-lora/checkpoint-500 --output models/gsm8k-lora-500
    aha export runs/qwen2.5-3b-gsm8k-lora --push-to-hub you/qwen2.5-3b-gsm8k-grpo [--private]

RUN_DIR is a run's output_dir (or one of its checkpoint-<step> folders). A LoRA adapter (adapter_config.json) is
merged into its base model with peft's `merge_and_unload`, in the training dtype (the recipe's `dtype`; `--dtype`
overrides): the "merge to 16-bit" of the Unsloth-style recipe. A full model is re-saved in that dtype. The folder also
gets the tokenizer with its chat template, the run's recipe (recipe.yaml and the resolved recipe.resolved.yaml), its
summary and eval files, its plots, and
a model card (README.md) with the recipe, the final training metrics, before/after evaluation and the curves.

`--push-to-hub REPO` uploads the folder (off by default). The token comes from HF_TOKEN or `hf auth login`, through
huggingface_hub; it is never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError
from aha.recipe import looks_like_local_path
from aha.run_folder import (
    ADAPTER_CONFIG,
    CHECKPOINT_PREFIX,
    MODEL_CARD_FILE,
    MODEL_CONFIG,
    PLOTS_SUBDIR,
    TOKENIZER_CONFIG,
    RunFolder,
    write_text_atomic,
)

DTYPES = ("float32", "bfloat16", "float16")


class ExportError(AhaUserError):
    """The run folder cannot be exported as asked; the message says why and what to do. Exit 2."""


@dataclass
class ExportSource:
    """What is exported. `weights`: the folder with the model or adapter (RUN_DIR itself); `run`: the run folder
    (RUN_DIR, or its parent for a checkpoint)."""

    weights: Path
    run: RunFolder
    adapter_base: str | None  # the LoRA adapter's base model; None for a full model
    summary: dict[str, Any]
    recipe_path: Path | None  # the run's recipe file (aha.run_folder.RunFolder.recipe_file)
    recipe: dict[str, Any]  # the recipe's keys as the run used them (not validated: export needs only a few)

    @property
    def is_adapter(self) -> bool:
        return self.adapter_base is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path} is not readable JSON ({err}); rerun the step that writes it or delete it.") from err
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object.")
    return data


def inspect_run(run_dir: str | Path) -> ExportSource:
    weights = Path(run_dir).expanduser()
    if not weights.is_dir():
        raise ExportError(f"run folder {str(run_dir)!r} does not exist; pass a run's output_dir, e.g. runs/<name>.")
    adapter_base = None
    if (weights / ADAPTER_CONFIG).is_file():
        adapter_base = _read_json(weights / ADAPTER_CONFIG).get("base_model_name_or_path")
        if not adapter_base:
            raise ExportError(f"{weights / ADAPTER_CONFIG} names no base_model_name_or_path; add the base model.")
        if looks_like_local_path(adapter_base) and not Path(adapter_base).expanduser().is_dir():
            raise ExportError(
                f"the adapter's base model {adapter_base!r} does not exist from {os.getcwd()}; run from the folder "
                f"the training ran in, or fix base_model_name_or_path in {weights / ADAPTER_CONFIG}."
            )
    elif not (weights / MODEL_CONFIG).is_file():
        checkpoints = [folder.name for _, folder in RunFolder(weights).checkpoints()]
        hint = f" It has checkpoints: pass one of them, e.g. {weights / checkpoints[-1]}." if checkpoints else ""
        raise ExportError(
            f"{weights} holds neither a LoRA adapter ({ADAPTER_CONFIG}) nor a model ({MODEL_CONFIG}): the run has not "
            f"finished.{hint}"
        )
    run = RunFolder.of(weights)
    summary = _read_json(run.summary_file) if run.summary_file.is_file() else {}
    return ExportSource(weights, run, adapter_base, summary, run.recipe_file(), run.recipe_settings())


def training_dtype(folder: ExportSource, override: str | None) -> str:
    """The dtype to save in: `--dtype`, else the recipe's `dtype`, else the (base) model's config, else float32."""
    if override:
        return override
    recipe_dtype = folder.recipe.get("dtype")
    if recipe_dtype in DTYPES:
        return recipe_dtype
    config_path = folder.weights / MODEL_CONFIG
    if folder.is_adapter and looks_like_local_path(folder.adapter_base or ""):
        config_path = Path(folder.adapter_base or "") / MODEL_CONFIG
    if config_path.is_file():
        config = _read_json(config_path)
        dtype = config.get("dtype") or config.get("torch_dtype")
        if dtype in DTYPES:
            return dtype
    return "float32"


# --------------------------------------------------------------------------------------------------------------------
# Weights and tokenizer


def load_merged_model(folder: ExportSource, dtype: str):
    """The run's model with any LoRA adapter merged into the base weights, in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    if not folder.is_adapter:
        return AutoModelForCausalLM.from_pretrained(folder.weights, dtype=torch_dtype)
    from peft import PeftModel

    # The base loads unquantized even when training used 4-bit weights: merging into nf4 would round the adapter away.
    base = AutoModelForCausalLM.from_pretrained(folder.adapter_base, dtype=torch_dtype)
    model = PeftModel.from_pretrained(base, folder.weights, autocast_adapter_dtype=False)
    return model.merge_and_unload()


def load_run_tokenizer(folder: ExportSource):
    """The tokenizer training saved next to the weights (with the recipe's chat template), else the base model's."""
    from transformers import AutoTokenizer

    source = folder.weights if (folder.weights / TOKENIZER_CONFIG).is_file() else folder.adapter_base
    tokenizer = AutoTokenizer.from_pretrained(source)
    template = folder.recipe.get("chat_template")
    if template and Path(template).is_file():  # the recipe replaced the tokenizer's template (aha.train does the same)
        tokenizer.chat_template = Path(template).read_text()
    return tokenizer


# --------------------------------------------------------------------------------------------------------------------
# Export and push


def copy_run_files(folder: ExportSource, output: Path) -> tuple[dict[bool, dict[str, Any]], list[str]]:
    """Recipe (as written and as resolved), summary, eval files and plots into `output`; returns the evaluations read
    ({baseline: eval file content}) and the plot paths (relative to `output`)."""
    run, target = folder.run, RunFolder(output)
    for source, copy in ((run.recipe_copy, target.recipe_copy), (run.resolved_recipe, target.resolved_recipe)):
        if source.is_file():
            shutil.copyfile(source, copy)
    if folder.recipe_path and not target.recipe_copy.is_file():  # an older run: the recipe summary.json names
        shutil.copyfile(folder.recipe_path, target.recipe_copy)
    if run.summary_file.is_file():
        shutil.copyfile(run.summary_file, target.summary_file)
    evals = {}
    for baseline in (True, False):
        if run.eval_file(baseline).is_file():
            evals[baseline] = _read_json(run.eval_file(baseline))
            shutil.copyfile(run.eval_file(baseline), target.eval_file(baseline))
    plots = []
    for png in sorted(run.path.rglob("*.png")):
        relative = png.relative_to(run.path)
        if relative.parts[0].startswith(CHECKPOINT_PREFIX) or png.resolve().is_relative_to(output.resolve()):
            continue  # checkpoints hold no plots of their own; an earlier export inside the run folder is not the run's
        target_png = target.plots_dir / png.name
        target_png.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, target_png)
        plots.append(f"{PLOTS_SUBDIR}/{png.name}")
    return evals, plots


def card_facts(folder: ExportSource, base_model: str, dtype: str, evals: dict[bool, Any], plots: list[str]):
    """The model card's facts for the exported folder."""
    from aha.reporting.card import CardFacts

    return CardFacts(
        name=folder.run.path.name,
        model_ref="<this folder or repo>",
        recipe_source=folder.summary.get("recipe") or (str(folder.recipe_path) if folder.recipe_path else None),
        recipe={"model_name_or_path": base_model, **folder.recipe},
        recipe_yaml=folder.recipe_path.read_text() if folder.recipe_path else None,
        summary={**folder.summary, "model": base_model},
        baseline=evals.get(True),
        trained=evals.get(False),
        plots=[(Path(p).stem, p) for p in plots],
        adapter=folder.is_adapter,
        merged=folder.is_adapter,
        dtype=dtype,
    )


def export(run_dir: str | Path, output: str | Path, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Write the exported model folder; return its path."""
    folder = inspect_run(run_dir)
    output = Path(output).expanduser()
    if output.resolve() == folder.weights.resolve():
        raise ExportError(f"--output {output} is the run folder itself; choose another folder.")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise ExportError(f"{output} exists and is not empty; pass --overwrite or another --output.")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    dtype = training_dtype(folder, dtype)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-shard bars are noise for a command that prints one line
    model = load_merged_model(folder, dtype)
    base_model = folder.adapter_base or folder.summary.get("model") or folder.recipe.get("model_name_or_path") or "?"
    model.save_pretrained(output)
    tokenizer = load_run_tokenizer(folder)
    tokenizer.save_pretrained(output)
    if not tokenizer.chat_template:
        print("aha export: note: the tokenizer has no chat template; prompts will need one.", file=sys.stderr)
    evals, plots = copy_run_files(folder, output)
    from aha.reporting.card import model_card

    write_text_atomic(output / MODEL_CARD_FILE, model_card(card_facts(folder, str(base_model), dtype, evals, plots)))
    return output


def push_to_hub(folder: Path, repo: str, private: bool) -> str:
    """Upload `folder` to the hub repo `repo` (created if missing); return the repo URL. The token is huggingface_hub's
    business (HF_TOKEN or the cached login): it is never read, printed or logged here."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", commit_message="aha export")
    return str(url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aha export", description="Merge a run's LoRA adapter into a full model folder with a model card."
    )
    parser.add_argument("run_dir", help="a run's output_dir or one of its checkpoint-<step> folders")
    parser.add_argument("--output", help="folder to write (default: RUN_DIR-merged next to the run)")
    parser.add_argument("--dtype", choices=DTYPES, help="save dtype (default: the recipe's dtype, the training dtype)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload to this hub repo (off by default)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output) if args.output else Path(f"{str(args.run_dir).rstrip('/')}-merged")
    path = export(args.run_dir, output, args.dtype, args.overwrite)
    print(f"aha export: model -> {path}")
    if args.push_to_hub:
        url = push_to_hub(path, args.push_to_hub, args.private)
        print(f"aha export: pushed -> {url}")
    return 0


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha export`

    sys.exit(aha_main(["export", *sys.argv[1:]]))
