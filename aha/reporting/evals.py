"""Before and after: the base model's and the trained model's evaluations side by side."""

from __future__ import annotations

from typing import Any

from aha.evaluation.metrics import (
    METRIC_LABELS,
    PERCENT_METRICS,
    format_metric,
    shown_metrics,
)


def compared_metrics(baseline: dict[str, Any] | None, trained: dict[str, Any] | None) -> list[str]:
    """Metric keys to show, in display order: every metric of either evaluation but counts and stderrs."""
    keys = {key for result in (trained, baseline) for key in (result or {}).get("metrics", {})}
    return shown_metrics(sorted(keys))


def _change(key: str, before: Any, after: Any) -> str:
    if before is None or after is None:
        return ""
    delta = after - before
    if key.startswith(PERCENT_METRICS):
        return f"{100 * delta:+.1f} pts"
    return f"{delta:+.3f}" if abs(delta) < 10 else f"{delta:+.1f}"


SETTINGS_COMPARED = ("samples", "temperature", "max_new_tokens", "backend")


def eval_mismatches(baseline: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    """How the two evaluations differ in what they measured (a fair comparison has none)."""
    problems = []
    for key in ("task", "dataset", "split", "n"):
        if baseline.get(key) != trained.get(key):
            problems.append(f"{key}: {baseline.get(key)} vs {trained.get(key)}")
    for key in SETTINGS_COMPARED:
        before, after = baseline.get("settings", {}).get(key), trained.get("settings", {}).get(key)
        if before != after:
            problems.append(f"{key}: {before} vs {after}")
    return problems


def eval_table(baseline: dict[str, Any] | None, trained: dict[str, Any] | None) -> str:
    """Markdown table: metric, base model, trained model, change (stderr shown as ±)."""
    columns = [("base model", baseline), ("trained", trained)]
    present = [(name, result) for name, result in columns if result is not None]
    header = "| metric | " + " | ".join(name for name, _ in present) + (" | change |" if len(present) == 2 else " |")
    lines = [header, "|---" * (len(present) + 1 + (len(present) == 2)) + "|"]
    for key in compared_metrics(baseline, trained):
        cells = []
        for _, result in present:
            metrics = result["metrics"]
            cells.append(format_metric(key, metrics.get(key), metrics.get(f"{key}_stderr")))
        row = f"| {METRIC_LABELS.get(key, key)} | " + " | ".join(cells)
        if len(present) == 2:
            assert baseline is not None and trained is not None
            row += f" | {_change(key, baseline['metrics'].get(key), trained['metrics'].get(key))}"
        lines.append(row + " |")
    return "\n".join(lines)


def eval_description(result: dict[str, Any]) -> str:
    settings = result["settings"]
    return (
        f"{result['model']} on {result['task']} ({result['dataset']} {result['split']}, {result['n']} problems, "
        f"{settings['samples']} samples at temperature {settings['temperature']}, up to {settings['max_new_tokens']} "
        f"new tokens, {settings['backend']}, {result['wall_time_s']} s)"
    )
