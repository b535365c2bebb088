"""Reading a run folder for the report: its TensorBoard scalars, JSON files and the recipe as the run used it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError
from aha.run_folder import RunFolder, override_values, yaml_mapping

TRAIN_PREFIX = "train/"  # TRL's training scalars in TensorBoard

Series = list[tuple[int, float]]  # (step, value), sorted by step


class ReportError(AhaUserError, ValueError):
    """Bad input to `aha report`; the message states the rule and the fix."""


def train_tag(name: str) -> str:
    """The TensorBoard tag of a training metric TRL logs as `name`."""
    return TRAIN_PREFIX + name


def event_files(run_dir: Path, summary: dict[str, Any]) -> list[Path]:
    """TensorBoard event files of the run: under summary.json's tensorboard_dir, else `tensorboard/`, else anywhere
    in the run folder; oldest first (a resumed run adds a file)."""
    candidates = [Path(summary["tensorboard_dir"])] if summary.get("tensorboard_dir") else []
    candidates += [RunFolder(run_dir).tensorboard_dir, run_dir]
    for folder in candidates:
        files = sorted(folder.rglob("events.out.tfevents.*")) if folder.is_dir() else []
        if files:
            return sorted(files, key=lambda f: (f.stat().st_mtime, f.name))
    return []


def read_scalars(files: Sequence[Path]) -> dict[str, Series]:
    """Every scalar of the event files by tag; for a step logged twice (a resumed run) the later file wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            points = merged.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                points[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err}); rerun the command that writes it.") from err


def recipe_text(run_dir: Path, summary: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the recipe's path as the run was started with it, the text of the recipe the run used), or (None, None).
    The text is the run folder's resolved recipe (or its copy, for an older run): the file at the original path may
    have changed since."""
    path = RunFolder(run_dir).recipe_file()
    if path is None:
        return None, None
    return summary.get("recipe") or str(path), path.read_text()


def effective_recipe(recipe_yaml: str | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The recipe's settings as the run used them, from its text with summary.json's CLI overrides on top (they won;
    a resolved recipe holds them already, an older run's recipe copy does not)."""
    return {**yaml_mapping(recipe_yaml), **override_values(summary.get("overrides") or [])}


def train_minutes(summary: dict[str, Any]) -> float | None:
    """Minutes spent training: TRL's train_runtime (the optimizer loop) when summary.json has it, else the whole
    process's wall time (model loading included, so a little more)."""
    runtime = (summary.get("train_summary") or {}).get("train_runtime")
    seconds = runtime if isinstance(runtime, int | float) else summary.get("wall_time_s")
    return seconds / 60 if isinstance(seconds, int | float) else None
