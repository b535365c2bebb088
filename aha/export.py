"""`aha export RUN_DIR`: a trained run as one self-contained model folder, ready for `from_pretrained`, vLLM or the hub.

    aha export runs/qwen2.5-3b-gsm8k-lora                          # -> runs/qwen2.5-3b-gsm8k-lora-merged
    aha export runs/qwen2.5-3b-gsm8k-lora/checkpoint-500 --output models/gsm8k-lora-500
    aha export runs/qwen2.5-3b-gsm8k-lora --push-to-hub you/qwen2.5-3b-gsm8k-grpo [--private]

RUN_DIR is a run's output_dir (or one of its checkpoint-<step> folders). A LoRA adapter (adapter_config.json) is
merged into its base model with peft's `merge_and_unload`, in the training dtype (the recipe's `dtype`; `--dtype`
overrides): the "merge to 16-bit" of the Unsloth-style recipe. A full model is re-saved in that dtype. The folder also
gets the tokenizer with its chat template, the recipe (recipe.yaml), the run's summary and eval files, its plots, and
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

import yaml

from aha.recipe import looks_like_local_path
from aha.run_folder import RECIPE_COPY, SUMMARY_FILE

ADAPTER_CONFIG = "adapter_config.json"
EVAL_FILES = ("eval-baseline.json", "eval.json")  # aha.evaluate's before / after files in a run folder
PLOTS_SUBDIR = "plots"
DTYPES = ("float32", "bfloat16", "float16")
EXIT_USAGE = 2


class ExportError(Exception):
    """The run folder cannot be exported as asked; the message says why and what to do. Exit 2."""


@dataclass
class RunFolder:
    """What a run folder holds. `weights`: the folder with the model or adapter (RUN_DIR itself); `run`: the folder
    with summary.json (RUN_DIR, or its parent for a checkpoint)."""

    weights: Path
    run: Path
    adapter_base: str | None  # the LoRA adapter's base model; None for a full model
    summary: dict[str, Any]
    recipe_path: Path | None
    recipe: dict[str, Any]  # the recipe's keys as written (not validated: export needs only a few of them)

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


def inspect_run(run_dir: str | Path) -> RunFolder:
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
    elif not (weights / "config.json").is_file():
        checkpoints = sorted(p.name for p in weights.glob("checkpoint-*") if p.is_dir())
        hint = f" It has checkpoints: pass one of them, e.g. {weights / checkpoints[-1]}." if checkpoints else ""
        raise ExportError(
            f"{weights} holds neither a LoRA adapter ({ADAPTER_CONFIG}) nor a model (config.json): the run has not "
            f"finished.{hint}"
        )
    run = next((p for p in (weights, weights.parent) if (p / SUMMARY_FILE).is_file()), weights)
    summary = _read_json(run / SUMMARY_FILE) if (run / SUMMARY_FILE).is_file() else {}
    recipe_path = None
    for candidate in (summary.get("recipe"), weights / RECIPE_COPY):
        if candidate and Path(candidate).is_file():
            recipe_path = Path(candidate)
            break
    recipe = yaml.safe_load(recipe_path.read_text()) if recipe_path else {}
    return RunFolder(weights, run, adapter_base, summary, recipe_path, recipe if isinstance(recipe, dict) else {})


def training_dtype(folder: RunFolder, override: str | None) -> str:
    """The dtype to save in: `--dtype`, else the recipe's `dtype`, else the (base) model's config, else float32."""
    if override:
        return override
    recipe_dtype = folder.recipe.get("dtype")
    if recipe_dtype in DTYPES:
        return recipe_dtype
    config_path = folder.weights / "config.json"
    if folder.is_adapter and looks_like_local_path(folder.adapter_base or ""):
        config_path = Path(folder.adapter_base or "") / "config.json"
    if config_path.is_file():
        config = _read_json(config_path)
        dtype = config.get("dtype") or config.get("torch_dtype")
        if dtype in DTYPES:
            return dtype
    return "float32"


# --------------------------------------------------------------------------------------------------------------------
# Weights and tokenizer


def load_merged_model(folder: RunFolder, dtype: str):
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


def load_run_tokenizer(folder: RunFolder):
    """The tokenizer training saved next to the weights (with the recipe's chat template), else the base model's."""
    from transformers import AutoTokenizer

    source = folder.weights if (folder.weights / "tokenizer_config.json").is_file() else folder.adapter_base
    tokenizer = AutoTokenizer.from_pretrained(source)
    template = folder.recipe.get("chat_template")
    if template and Path(template).is_file():  # the recipe replaced the tokenizer's template (aha.train does the same)
        tokenizer.chat_template = Path(template).read_text()
    return tokenizer


# --------------------------------------------------------------------------------------------------------------------
# The model card


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _eval_section(evals: dict[str, dict[str, Any]]) -> list[str]:
    from aha.evaluate import display_metrics

    before, after = evals.get("eval-baseline.json"), evals.get("eval.json")
    shown = [e for e in (before, after) if e]
    if not shown:
        return []
    first = shown[-1]
    lines = [
        "## Evaluation",
        "",
        f"Held-out set: {first.get('dataset')} {first.get('split') or ''} ({first.get('n')} problems), scored by the "
        "recipe's reward functions (`aha eval`).",
        "",
    ]
    columns = {name: dict((k, v) for k, _, v in display_metrics(e.get("metrics", {}))) for name, e in evals.items()}
    labels = {k: label for e in shown for k, label, _ in display_metrics(e.get("metrics", {}))}
    header = ("metric", *(("base model",) if before else ()), *(("this model",) if after else ()))
    rows = []
    for key, label in labels.items():
        row = [label]
        if before:
            row.append(columns["eval-baseline.json"].get(key, "-"))
        if after:
            row.append(columns["eval.json"].get(key, "-"))
        rows.append(tuple(row))
    return [*lines, *_table(rows, header), ""]


def model_card(
    folder: RunFolder, base_model: str, dtype: str, evals: dict[str, dict[str, Any]], plots: list[str]
) -> str:
    recipe, summary = folder.recipe, folder.summary
    dataset = recipe.get("dataset_name") or summary.get("dataset")
    front = {
        "base_model": base_model,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["aha", "grpo", "trl", "reasoning", *(["lora-merged"] if folder.is_adapter else [])],
    }
    if isinstance(dataset, str) and not dataset.startswith("synthetic:") and not looks_like_local_path(dataset):
        front["datasets"] = [dataset]
    how = "a LoRA adapter merged into the full weights" if folder.is_adapter else "full fine-tuning"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {folder.run.name}",
        "",
        f"`{base_model}` trained with GRPO ({how}), saved in {dtype}. Recipe: `{folder.recipe_path or 'unknown'}` "
        f"(copied here as `{RECIPE_COPY}`).",
        "",
        "## Prompt",
        "",
        "Prompt it as it was trained: the tokenizer's chat template with this system prompt and user message.",
        "",
        f"- system prompt: `{json.dumps(recipe.get('system_prompt'))}`",
        f"- user message template: `{json.dumps(recipe.get('user_template'))}`",
    ]
    if recipe.get("assistant_prefill"):
        lines.append(
            f"- the assistant turn starts with `{json.dumps(recipe['assistant_prefill'])}` (pre-filled in the prompt)"
        )
    lines.append("")
    if summary:
        lines += ["## Training", ""]
        facts = [
            ("steps", f"{summary.get('global_step')} of {summary.get('max_steps')}"),
            ("training processes", _number(summary.get("processes"))),
            ("wall time", f"{summary.get('wall_time_s')} s"),
            ("dataset", f"{summary.get('dataset')}"),
        ]
        lines += [*_table(facts, ("", "")), ""]
        final = summary.get("final_metrics") or {}
        if final:
            lines += ["Metrics at the last logged step:", ""]
            lines += [*_table([(key, _number(value)) for key, value in final.items()], ("metric", "value")), ""]
    lines += _eval_section(evals)
    if plots:
        lines += ["## Curves", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    if folder.recipe_path:
        lines += ["## Recipe", "", "```yaml", folder.recipe_path.read_text().rstrip(), "```", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")',
        "```",
        "",
        "Or chat with it: `aha chat <this folder>` (terminal) / `aha chat <this folder> --web`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Export and push


def copy_run_files(folder: RunFolder, output: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Recipe, summary, eval files and plots into `output`; returns the eval files read and the plot paths (relative
    to `output`)."""
    if folder.recipe_path:
        shutil.copyfile(folder.recipe_path, output / RECIPE_COPY)
    if (folder.run / SUMMARY_FILE).is_file():
        shutil.copyfile(folder.run / SUMMARY_FILE, output / SUMMARY_FILE)
    evals = {}
    for name in EVAL_FILES:
        path = folder.run / name
        if path.is_file():
            evals[name] = _read_json(path)
            shutil.copyfile(path, output / name)
    plots = []
    for png in sorted(folder.run.rglob("*.png")):
        relative = png.relative_to(folder.run)
        if relative.parts[0].startswith("checkpoint-") or png.resolve().is_relative_to(output.resolve()):
            continue  # checkpoints hold no plots of their own; an earlier export inside the run folder is not the run's
        target = output / PLOTS_SUBDIR / png.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, target)
        plots.append(f"{PLOTS_SUBDIR}/{png.name}")
    return evals, plots


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
    (output / "README.md").write_text(model_card(folder, str(base_model), dtype, evals, plots))
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
    try:
        path = export(args.run_dir, output, args.dtype, args.overwrite)
    except ExportError as err:
        print(f"aha export: {args.run_dir}: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"aha export: model -> {path}")
    if args.push_to_hub:
        url = push_to_hub(path, args.push_to_hub, args.private)
        print(f"aha export: pushed -> {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
