"""Compared runs: this run next to other run folders (other seeds, another method given the same time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.evaluation.metrics import (
    METRIC_LABELS,
    format_metric,
)
from aha.reporting.evals import eval_mismatches
from aha.reporting.runs import ReportError, effective_recipe, read_json, recipe_text, train_minutes
from aha.run_folder import (
    BASELINE_EVAL_FILE,
    EVAL_FILE,
    SUMMARY_FILE,
)

BASE_LABEL, THIS_LABEL = "base model", "this run"


@dataclass
class ComparedColumn:
    """One column of the comparison: the base model, this run, or a compared run folder."""

    label: str  # the table header
    kind: str  # base, this or compared
    folder: str  # the run folder; for the base model, the model that eval-baseline.json measured
    eval_file: Path
    result: dict[str, Any] | None  # the eval.json (eval-baseline.json) content; None: not evaluated
    trainer: str | None = None
    seed: Any = None
    steps: int | None = None  # optimizer steps done (summary.json global_step)
    max_steps: int | None = None
    train_minutes: float | None = None
    stopped_by: str | None = None  # max_steps, or max_train_minutes when the time budget ended the run


@dataclass
class Comparison:
    columns: list[ComparedColumn]
    keys: list[str]  # the metric of each row, in order
    mismatches: list[str]  # evaluations that measured something different from the reference column


def check_compare_dirs(dirs: Sequence[str | Path]) -> list[Path]:
    """The compared run folders as paths; a missing one is an error (a typo would otherwise compare nothing)."""
    for folder in dirs:
        if not Path(folder).is_dir():
            raise ReportError(
                f"compared run folder {str(folder)!r} does not exist; pass the output_dir of another run to --compare "
                "(e.g. runs/demo-seed1)."
            )
    return [Path(folder) for folder in dirs]


def describe_run(folder: Path, label: str, kind: str = "compared") -> ComparedColumn:
    """A run folder's column: its eval.json and what summary.json and its recipe copy say about the training."""
    summary = read_json(folder / SUMMARY_FILE) or {}
    _, text = recipe_text(folder, summary)
    recipe = effective_recipe(text, summary)
    eval_file = folder / EVAL_FILE
    return ComparedColumn(
        label=label,
        kind=kind,
        folder=str(folder),
        eval_file=eval_file,
        result=read_json(eval_file),
        trainer=summary.get("trainer") or recipe.get("trainer"),
        seed=recipe.get("seed"),
        steps=summary.get("global_step"),
        max_steps=summary.get("max_steps"),
        train_minutes=train_minutes(summary),
        stopped_by=summary.get("stopped_by"),
    )


def _labels(dirs: Sequence[Path]) -> list[str]:
    """Column headers of compared folders: the folder's name, or the path as given when names repeat."""
    names = [folder.name for folder in dirs]
    return [
        name if names.count(name) == 1 and name not in (BASE_LABEL, THIS_LABEL) else str(folder)
        for name, folder in zip(names, dirs, strict=True)
    ]


def compared_keys(results: Sequence[dict[str, Any]]) -> list[str]:
    """The rows: greedy pass@1, sampled pass@1, pass@k for the largest k any evaluation measured, format (sampled)."""
    ks = []
    for result in results:
        for key in result.get("metrics", {}):
            k = key.removeprefix("pass@")
            if key.startswith("pass@") and k.isdigit() and int(k) > 1:
                ks.append(int(k))
    return ["greedy_pass@1", "pass@1", *([f"pass@{max(ks)}"] if ks else []), "format_sampled"]


def compare_runs(run_dir: Path, baseline: dict[str, Any] | None, dirs: Sequence[Path]) -> Comparison:
    """The base model (RUN_DIR/eval-baseline.json), this run and each compared folder, on the same rows."""
    base = ComparedColumn(
        BASE_LABEL,
        "base",
        str(baseline["model"]) if baseline else "",
        run_dir / BASELINE_EVAL_FILE,
        baseline,
        steps=0,
        train_minutes=0.0,
    )
    columns = [base, describe_run(run_dir, THIS_LABEL, "this")]
    columns += [describe_run(folder, label) for folder, label in zip(dirs, _labels(dirs), strict=True)]
    evaluated = [column for column in columns if column.result is not None]
    mismatches = []
    if evaluated:  # the base model when evaluated, else this run: what every other column must have measured too
        reference = evaluated[0]
        for column in evaluated[1:]:
            mismatches += [
                f"{column.label} vs {reference.label}: {p}" for p in eval_mismatches(reference.result, column.result)
            ]
    return Comparison(columns, compared_keys([column.result for column in evaluated]), mismatches)


def _metric(column: ComparedColumn, key: str) -> float | None:
    return (column.result or {}).get("metrics", {}).get(key)


def comparison_table(comparison: Comparison) -> str:
    """Markdown table: a row per metric, a column per run; non-base cells add the change vs the base model in
    points, e.g. `42.5% ± 2.5 (+9.2)`."""
    columns = comparison.columns
    base = next((column for column in columns if column.kind == "base"), None)
    lines = ["| metric | " + " | ".join(column.label for column in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key in comparison.keys:
        cells = []
        for column in columns:
            value = _metric(column, key)
            cell = format_metric(key, value, _metric(column, f"{key}_stderr"))
            before = _metric(base, key) if base is not None else None
            if column.kind != "base" and value is not None and before is not None:
                cell += f" ({100 * (value - before):+.1f})"
            cells.append(cell)
        lines.append(f"| {METRIC_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def column_line(column: ComparedColumn, recipe_path: str | None) -> str:
    """What a column is: folder, trainer, seed, steps, training time, why it stopped; or how to evaluate it."""
    if column.kind == "base":
        if column.result is None:
            return (
                f"- **{column.label}**: not evaluated; `aha eval --baseline --recipe {recipe_path or 'RECIPE'}` writes "
                f"`{column.eval_file}`"
            )
        return f"- **{column.label}**: `{column.folder}`, untrained (`{column.eval_file}`)"
    steps = "steps unknown" if column.steps is None else f"{column.steps} steps"
    if column.steps is not None and column.max_steps and column.max_steps != column.steps:
        steps += f" of {column.max_steps}"
    facts = [
        f"`{column.folder}`",
        f"trainer {column.trainer or 'unknown'}",
        f"seed {'unknown' if column.seed is None else column.seed}",
        steps,
        "training time unknown" if column.train_minutes is None else f"{column.train_minutes:.1f} min of training",
    ]
    if column.stopped_by:
        facts.append(f"stopped by {column.stopped_by}")
    line = f"- **{column.label}**: " + ", ".join(facts)
    if column.result is None:
        line += f"; not evaluated: no {EVAL_FILE} in `{column.folder}`, make it with `aha eval --model {column.folder}`"
    return line


def comparison_markdown(comparison: Comparison, recipe_path: str | None) -> str:
    parts = [
        "Held-out results of this run next to other runs (another seed, another method given the same training "
        "time). In parentheses: the change versus the base model, in points.",
        "",
        comparison_table(comparison),
        "",
    ]
    parts += [column_line(column, recipe_path) for column in comparison.columns]
    parts += [f"- **Not comparable as is:** {problem}" for problem in comparison.mismatches]
    return "\n".join(parts)


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """comparison.json: the table for scripts (metric values as fractions, not percent; null when not measured)."""
    return {
        "keys": comparison.keys,
        "columns": [
            {
                "label": column.label,
                "kind": column.kind,
                "folder": column.folder,
                "eval_file": str(column.eval_file) if column.result is not None else None,
                "trainer": column.trainer,
                "seed": column.seed,
                "steps": column.steps,
                "train_minutes": None if column.train_minutes is None else round(column.train_minutes, 2),
                "stopped_by": column.stopped_by,
                "metrics": {key: _metric(column, key) for key in comparison.keys},
            }
            for column in comparison.columns
        ],
        "mismatches": comparison.mismatches,
    }
