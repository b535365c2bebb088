"""The model card (README.md) of a trained model: written by `aha report` into the run folder and by `aha export` into
the exported folder, from the same facts, by this one function."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from aha.recipe import SYNTHETIC_PREFIX, looks_like_local_path
from aha.reporting.evals import eval_description, eval_table

# Recipe settings a reader of the card wants first (the full recipe follows in a fold).
CARD_KEYS = (
    "learning_rate",
    "beta",
    "loss_type",
    "num_generations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_completion_length",
    "temperature",
    "max_steps",
    "reward_funcs",
    "reward_weights",
    "use_peft",
    "lora_r",
)


@dataclass
class CardFacts:
    """What the card says about one trained model."""

    name: str  # the title: the run folder's name
    model_ref: str  # what `from_pretrained` is given in the usage example
    recipe_source: str | None  # the recipe's path as the run was started with it
    recipe: dict[str, Any]  # the recipe's settings as the run used them
    recipe_yaml: str | None  # the recipe text shown in full
    summary: dict[str, Any]  # the run's summary.json
    baseline: dict[str, Any] | None = None  # eval-baseline.json
    trained: dict[str, Any] | None = None  # eval.json
    plots: Sequence[tuple[str, str]] = ()  # (alt text, path relative to the card)
    last_logged: Sequence[tuple[str, float]] = ()  # training scalars at the last logged step
    adapter: bool = False  # the folder holds a LoRA adapter (loaded with peft)
    merged: bool = False  # a LoRA adapter merged into the full weights (aha export)
    dtype: str | None = None  # the dtype the weights were saved in, when known
    links: list[str] = field(default_factory=list)  # closing lines (e.g. the full report)

    @property
    def base_model(self) -> str:
        return str(self.summary.get("model") or self.recipe.get("model_name_or_path") or "")

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.recipe.get("dataset_name") or "")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _front_matter(facts: CardFacts) -> list[str]:
    """The hub's metadata block. A generated or local dataset is not a hub dataset, so it is not listed."""
    metadata: dict[str, Any] = {}
    if facts.base_model:
        metadata["base_model"] = facts.base_model
    metadata["library_name"] = "peft" if facts.adapter and not facts.merged else "transformers"
    metadata["pipeline_tag"] = "text-generation"
    metadata["tags"] = ["aha", "grpo", "trl", "reasoning", *(["lora-merged"] if facts.merged else [])]
    dataset = facts.dataset
    if dataset and not dataset.startswith(SYNTHETIC_PREFIX) and not looks_like_local_path(dataset):
        metadata["datasets"] = [dataset]
    return ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", ""]


def _intro(facts: CardFacts) -> list[str]:
    summary, recipe = facts.summary, facts.recipe
    trainer = str(summary.get("trainer") or recipe.get("trainer") or "grpo").upper()
    how = " (a LoRA adapter merged into the full weights)" if facts.merged else ""
    saved = f", saved in {facts.dtype}" if facts.dtype else ""
    steps = f" ({summary['global_step']} steps)" if "global_step" in summary else ""
    return [
        f"# {facts.name}",
        "",
        f"`{facts.base_model or 'the base model'}` trained with {trainer}{how} on `{facts.dataset or 'its dataset'}` "
        f"by the aha recipe `{facts.recipe_source or 'unknown'}`{steps}{saved}.",
        "",
    ]


def _prompt(recipe: dict[str, Any]) -> list[str]:
    lines = [
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
    return [*lines, ""]


def _results(facts: CardFacts) -> list[str]:
    lines = ["## Results on the held-out set", ""]
    if facts.baseline is None and facts.trained is None:
        return [*lines, "Not evaluated yet (`aha eval --model <this folder>`).", ""]
    lines.append(eval_table(facts.baseline, facts.trained))
    for label, result in (("base model", facts.baseline), ("trained", facts.trained)):
        if result is not None and "settings" in result:
            lines.append(f"\n- {label}: {eval_description(result)}")
    return [*lines, ""]


def _training(facts: CardFacts) -> list[str]:
    summary, recipe = facts.summary, facts.recipe
    lines = ["## Training", ""]
    if "global_step" in summary:
        rows = [
            ("steps", f"{summary.get('global_step')} of {summary.get('max_steps')}"),
            ("stopped by", str(summary.get("stopped_by", "max_steps"))),
            ("training processes", _number(summary.get("processes"))),
            ("wall time", f"{summary.get('wall_time_s')} s"),
        ]
        lines += ["| fact | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    shown = [(key, recipe[key]) for key in CARD_KEYS if key in recipe]
    if shown:
        lines += ["| setting | value |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in shown), ""]
    final = summary.get("final_metrics") or {}
    if final:
        lines += ["Metrics at the last logged step:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in final.items()] + [""]
    elif facts.last_logged:
        lines += ["Last logged training step: " + ", ".join(f"{k} {v:.3g}" for k, v in facts.last_logged) + ".", ""]
    return lines


def _use(facts: CardFacts) -> list[str]:
    return [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{facts.model_ref}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{facts.model_ref}")',
        "```",
        "",
        f"or `aha chat {facts.model_ref}` (terminal; `--web` for a local page), which applies the recipe's system "
        "prompt and prefill.",
        "",
    ]


def model_card(facts: CardFacts) -> str:
    """The card: metadata, what was trained, how to prompt it, held-out results, training facts, usage, curves and
    the full recipe."""
    parts = [*_front_matter(facts), *_intro(facts), *_prompt(facts.recipe), *_results(facts), *_training(facts)]
    parts += _use(facts)
    if facts.plots:
        parts += ["## Curves", "", *(f"![{alt}]({path})" for alt, path in facts.plots), ""]
    if facts.recipe_yaml:
        parts += ["## Recipe", "", "<details><summary>The full recipe</summary>", ""]
        parts += ["```yaml", facts.recipe_yaml.strip(), "```", "", "</details>", ""]
    parts += [*facts.links, "Made with aha (GRPO recipes on TRL)."]
    return "\n".join(parts) + "\n"
