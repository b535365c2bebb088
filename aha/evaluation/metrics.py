"""How eval.json's metrics are labelled, ordered and printed (also used by `aha report` and the model card)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRIC_LABELS = {
    "greedy_pass@1": "greedy pass@1",
    "pass@1": "sampled pass@1",
    "format_greedy": "format (greedy)",
    "format_sampled": "format (sampled)",
    "reward": "reward (recipe weights)",
    "mean_tokens_greedy": "tokens (greedy)",
    "mean_tokens_sampled": "tokens (sampled)",
    "truncated_sampled": "truncated (sampled)",
    "reflection_rate": "reflection rate",
    "reflections_per_completion": "reflections / completion",
}
PERCENT_METRICS = ("greedy_pass@", "pass@", "maj@", "format_", "truncated_", "reflection_rate")


def format_metric(name: str, value: float | int | None, stderr: float | None = None) -> str:
    if value is None:
        return "-"
    if name.startswith(PERCENT_METRICS):
        text = f"{100 * value:.1f}%"
        return f"{text} ± {100 * stderr:.1f}" if stderr is not None else text
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# Display order: accuracy first, then format, reward, length, reflection; unknown keys last.
METRIC_ORDER = (
    "greedy_pass@1",
    "pass@1",
    "pass@",
    "maj@",
    "format_greedy",
    "format_sampled",
    "reward",
    "rewards/",
    "mean_tokens_greedy",
    "mean_tokens_sampled",
    "truncated_sampled",
    "reflection_rate",
    "reflections_per_completion",
)
COUNT_METRICS = ("n", "n_scored", "n_unscorable")


def metric_rank(key: str) -> tuple[int, int]:
    """Sort key of a metric in tables: its group in METRIC_ORDER, then k for pass@k."""
    for rank, prefix in enumerate(METRIC_ORDER):
        if key == prefix or (prefix.endswith(("@", "/")) and key.startswith(prefix)):
            k = key.rsplit("@", 1)[-1]
            return rank, int(k) if prefix.endswith("@") and k.isdigit() else 0
    return len(METRIC_ORDER), 0


def shown_metrics(keys: Sequence[str]) -> list[str]:
    """The metrics worth a table row (no counts, stderr folded into its metric), in display order."""
    return sorted((k for k in keys if not k.endswith("_stderr") and k not in COUNT_METRICS), key=metric_rank)


def display_metrics(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, value) for every metric worth a row, in display order (stderr folded into its metric)."""
    rows = []
    for key in shown_metrics(list(metrics)):
        value = metrics[key]
        label = METRIC_LABELS.get(key, key)
        rows.append((key, label, format_metric(key, value, metrics.get(f"{key}_stderr"))))
    return rows


def print_table(result: dict[str, Any], eval_file: Path) -> None:
    settings = result["settings"]
    metrics = result["metrics"]
    print(
        f"aha eval: {result['model']} ({result['model_kind']}) on {result['task']}: {result['dataset']} "
        f"{result['split']}, {metrics['n_scored']} of {result['n']} problems scored, {settings['samples']} samples "
        f"at T={settings['temperature']}, up to {settings['max_new_tokens']} new tokens, {settings['backend']}"
    )
    rows = display_metrics(metrics)
    width = max(len(label) for _, label, _ in rows)
    print(f"  {'metric':<{width}}  value")
    for _, label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for note in result["notes"]:
        print(f"  note: {note}")
    print(f"aha eval: {result['wall_time_s']} s (generation {result['generate_time_s']} s) -> {eval_file}")
