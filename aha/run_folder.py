"""A run folder (a recipe's `output_dir`): every file in it named once, how each is written, and how its recipe is
found. Training writes the folder; eval, report, export, chat and the demo read it through `RunFolder`.

    runs/demo/
      recipe.yaml              the recipe file the run was started from, as written
      recipe.resolved.yaml     the recipe as the run used it: the YAML with every CLI override applied (what later
                               commands load; `aha eval/chat/export/report` never re-apply overrides)
      summary.json             what happened: steps done of max_steps, why it stopped, wall time, final metrics
      tensorboard/             TensorBoard event files (every logged scalar)
      checkpoint-<step>/       Trainer checkpoints; `aha-complete.json` inside marks one that every rank finished
      completions/             TRL's logged completions (parquet), when the recipe sets log_completions
      aha-samples.jsonl        a few completions per tenth of the run (aha.aha_metrics)
      launch/                  `aha launch`: plan.json, trainer and vLLM logs, trainer-exit.json (multi-node)
      config.json, model.safetensors, tokenizer files   the trained model (or adapter_config.json: a LoRA adapter)
      eval.json, samples.jsonl                   `aha eval --model RUN`
      eval-baseline.json, samples-baseline.jsonl `aha eval --baseline`
      report.md, plots/, comparison.json, README.md (the model card)   `aha report RUN`

Every file a reader relies on is written atomically (`atomic_write`): a temporary file in the same folder, flushed
to disk, then renamed over the target, so a reader sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUMMARY_FILE = "summary.json"
RECIPE_COPY = "recipe.yaml"
RESOLVED_RECIPE = "recipe.resolved.yaml"
TENSORBOARD_SUBDIR = "tensorboard"
COMPLETIONS_SUBDIR = "completions"  # TRL's own name for its logged completions
AHA_SAMPLES_FILE = "aha-samples.jsonl"
EVAL_FILE, SAMPLES_FILE = "eval.json", "samples.jsonl"
BASELINE_EVAL_FILE, BASELINE_SAMPLES_FILE = "eval-baseline.json", "samples-baseline.jsonl"
REPORT_FILE = "report.md"
PLOTS_SUBDIR = "plots"
COMPARISON_FILE = "comparison.json"
MODEL_CARD_FILE = "README.md"
REAL_DEMO_FILE = "real-demo.json"  # `make demo-real`: the figures of its README table for this run
DEMO_LOG_FILE = "demo.log"  # a demo stage's console output when stages run side by side
# the model as transformers / peft save it
MODEL_CONFIG = "config.json"
WEIGHTS_FILE = "model.safetensors"  # a single-file full model; also the file the CPU vLLM weight sync writes
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
LAUNCH_SUBDIR = "launch"  # aha launch: plan.json, the trainer's and the vLLM server's logs, their pid files
PLAN_FILE = "plan.json"
# written by node 0 of a multi-node run once its trainer stopped (checkpoint saved); the vLLM node serves until then
TRAINER_EXIT_FILE = "trainer-exit.json"
TRAINER_STATE = "trainer_state.json"  # inside a checkpoint: global_step and the log history
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
COMPLETE_MARKER = "aha-complete.json"  # inside a checkpoint, written once every rank finished saving it


# --------------------------------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, flush it to disk, then rename it over `path`.
    The temporary name carries the process id, so two processes never write the same temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------------------------------------
# Reading the recipe a run used


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def override_values(overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe keys CLI flags set (`["--seed", "1", "--max_steps=5"]`), typed as YAML reads them. A flag followed
    by several values gives a list, a flag without a value True (a switch)."""
    tokens: dict[str, list[str]] = {}
    key: str | None = None
    for token in overrides:
        if token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            tokens[name] = [value] if sep else []
            key = None if sep else name
        elif key is not None:
            tokens[key].append(token)
    values: dict[str, Any] = {}
    for name, given in tokens.items():
        if not given:
            values[name] = True
        else:
            values[name] = _yaml_value(given[0]) if len(given) == 1 else [_yaml_value(v) for v in given]
    return values


def yaml_mapping(text: str | None) -> dict[str, Any]:
    """A recipe's YAML as a dict ({} when missing or unreadable)."""
    try:
        loaded = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder. `RunFolder.of(path)` for a model folder or one of its checkpoints."""

    path: Path

    @classmethod
    def of(cls, model_or_checkpoint: str | os.PathLike) -> RunFolder:
        """The run folder holding `model_or_checkpoint`: the folder itself, or its parent when the folder is a
        checkpoint (the parent holds summary.json)."""
        folder = Path(model_or_checkpoint).expanduser()
        if not (folder / SUMMARY_FILE).is_file() and (folder.parent / SUMMARY_FILE).is_file():
            return cls(folder.parent)
        return cls(folder)

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def recipe_copy(self) -> Path:
        return self.path / RECIPE_COPY

    @property
    def resolved_recipe(self) -> Path:
        return self.path / RESOLVED_RECIPE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_SUBDIR

    @property
    def completions_dir(self) -> Path:
        return self.path / COMPLETIONS_SUBDIR

    @property
    def aha_samples_file(self) -> Path:
        return self.path / AHA_SAMPLES_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_SUBDIR

    @property
    def comparison_file(self) -> Path:
        return self.path / COMPARISON_FILE

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD_FILE

    @property
    def real_demo_file(self) -> Path:
        return self.path / REAL_DEMO_FILE

    @property
    def demo_log(self) -> Path:
        return self.path / DEMO_LOG_FILE

    @property
    def launch_dir(self) -> Path:
        return self.path / LAUNCH_SUBDIR

    @property
    def trainer_exit_file(self) -> Path:
        return self.launch_dir / TRAINER_EXIT_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    def eval_file(self, baseline: bool = False) -> Path:
        return self.path / (BASELINE_EVAL_FILE if baseline else EVAL_FILE)

    def samples_file(self, baseline: bool = False) -> Path:
        return self.path / (BASELINE_SAMPLES_FILE if baseline else SAMPLES_FILE)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every `checkpoint-<step>` folder, oldest first (complete or not)."""
        if not self.path.is_dir():
            return []
        matches = [m for m in map(CHECKPOINT_DIR.fullmatch, os.listdir(self.path)) if m]
        found = [(int(m.group(1)), self.path / m.group(0)) for m in matches]
        return sorted((step, folder) for step, folder in found if folder.is_dir())

    def summary(self) -> dict[str, Any]:
        """summary.json's content; {} when the run wrote none (yet). ValueError when it is not a JSON object."""
        if not self.summary_file.is_file():
            return {}
        data = json.loads(self.summary_file.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.summary_file} must hold a JSON object; rerun the training that writes it.")
        return data

    def recipe_file(self) -> Path | None:
        """The run's recipe: the resolved one the run wrote, else (a run from before resolved recipes) its copy of
        the recipe file, else the recipe path summary.json names; None when none exists."""
        for candidate in (self.resolved_recipe, self.recipe_copy):
            if candidate.is_file():
                return candidate
        try:
            named = self.summary().get("recipe")
        except ValueError:
            return None
        return Path(named) if named and Path(named).is_file() else None

    def recipe_settings(self) -> dict[str, Any]:
        """The recipe's keys as the run used them. A resolved recipe holds them all; an older run's recipe copy gets
        summary.json's CLI overrides applied on top (they won)."""
        path = self.recipe_file()
        settings = yaml_mapping(path.read_text() if path else None)
        if path is not None and path.name != RESOLVED_RECIPE:
            with contextlib.suppress(ValueError):  # an unreadable summary.json: the copy as written
                settings.update(override_values(self.summary().get("overrides") or []))
        return settings
