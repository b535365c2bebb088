"""`aha report RUN_DIR`: what a run did, as a page a person can read: curves, before/after, sample completions.

    aha report runs/demo
    aha report runs/demo --compare runs/demo-seed1 --compare runs/tiny-sft-same-time
    make report RUN=runs/demo

Reads the run folder that `aha train` wrote (TensorBoard events under `tensorboard/`, `summary.json`, TRL's
`completions/*.parquet` when the recipe logs completions, `aha-samples.jsonl` from the aha-signals hook) and the
evaluations `aha eval` wrote into it (`eval-baseline.json` / `samples-baseline.jsonl` for the base model, `eval.json`
/ `samples.jsonl` for the trained one). `--compare DIR` (repeatable) adds other run folders, each with its own
eval.json and summary.json: another seed of the recipe, or another method trained for the same wall time.
Writes, into the run folder:
  plots/*.png   rewards (the weighted sum and each reward function), completion length and truncation, the
                optimisation (loss, grad norm, KL when logged, entropy, zero-variance groups, clipping), the aha
                signals (reflection phrases, length), and the before/after evaluation
  report.md     the plots with what to look for, the before/after table, the compared runs (with --compare), the
                same held-out problems answered by the base model and the trained one, the stability check of a
                GRPO run (the recipe's guards against collapse, entropy/length/format at the start and end, a
                verdict), sample completions from the start, middle and end of training
  comparison.json  with --compare: the compared-runs table for scripts ({"keys", "columns": [{"label", "folder",
                "trainer", "seed", "steps", "train_minutes", "stopped_by", "metrics"}], "mismatches"})
  README.md     the model card of the trained model in that folder (recipe, metrics, curves); `--no-model-card`
                leaves an existing README.md alone
Missing pieces (no evaluation yet, no completions logged) are said in the report, not errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aha.evaluate import (
    BASELINE_EVAL_FILE,
    BASELINE_SAMPLES_FILE,
    EVAL_FILE,
    METRIC_LABELS,
    PERCENT_METRICS,
    SAMPLES_FILE,
    format_metric,
    shown_metrics,
)
from aha.run_folder import RECIPE_COPY, SUMMARY_FILE

PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
MODEL_CARD_FILE = "README.md"
COMPLETIONS_DIR = "completions"
AHA_SAMPLES_FILE = "aha-samples.jsonl"
TRAIN_PREFIX = "train/"
# Sample completions shown per point of training (start, middle, end), and characters kept of each.
SAMPLES_PER_POINT = 2
MAX_COMPLETION_CHARS = 1200
MAX_PROMPT_CHARS = 300
# Curves with more points than this get an exponential moving average drawn over the raw values.
SMOOTH_ABOVE = 20

Series = list[tuple[int, float]]  # (step, value), sorted by step


class ReportError(ValueError):
    """Bad input to `aha report`; the message states the rule and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# Reading a run


def event_files(run_dir: Path, summary: dict[str, Any]) -> list[Path]:
    """TensorBoard event files of the run: under summary.json's tensorboard_dir, else `tensorboard/`, else anywhere
    in the run folder; oldest first (a resumed run adds a file)."""
    candidates = [Path(summary["tensorboard_dir"])] if summary.get("tensorboard_dir") else []
    candidates += [run_dir / "tensorboard", run_dir]
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
    """(the recipe's path as the run was started with it, its YAML text), or (None, None). The text comes from the
    run folder's copy when there is one: the file at the original path may have changed since."""
    original = summary.get("recipe")
    for path in (run_dir / RECIPE_COPY, Path(original) if original else None):
        if path is not None and path.is_file():
            return original or str(path), path.read_text()
    return None, None


# ----------------------------------------------------------------------------------------------------------------
# Plots


@dataclass
class Curve:
    tag: str
    label: str
    band: tuple[str, str] | None = None  # ("std", tag) for mean ± std, or (low_tag, high_tag)


@dataclass
class Panel:
    title: str
    curves: list[Curve]
    unit: str = ""
    percent: bool = False  # a share: drawn on a fixed 0-100% axis
    legend: bool = False  # name the curves even when there is one
    scientific: bool = False  # tick labels as 5.0e-05


@dataclass
class Plot:
    name: str  # file stem
    title: str
    caption: str  # what to look for
    panels: list[Panel] = field(default_factory=list)


def _tag(name: str) -> str:
    return TRAIN_PREFIX + name


def _has(scalars: dict[str, Series], tag: str) -> bool:
    return bool(scalars.get(tag))


def _nonzero(scalars: dict[str, Series], tag: str) -> bool:
    return any(abs(v) > 0 for _, v in scalars.get(tag, []))


def reward_components(scalars: dict[str, Series]) -> list[str]:
    """Reward function names with a logged mean (`train/rewards/<name>/mean`), in tag order."""
    prefix, suffix = _tag("rewards/"), "/mean"
    return [tag[len(prefix) : -len(suffix)] for tag in scalars if tag.startswith(prefix) and tag.endswith(suffix)]


def run_plots(scalars: dict[str, Series]) -> list[Plot]:
    """The figures this run's scalars support (a figure without any logged curve is left out)."""
    plots = []
    rewards = Plot(
        "rewards",
        "Rewards",
        "The weighted reward should rise; each component shows which part of the behaviour is learned (the "
        "accuracy reward is the task's training accuracy). Bands: ± one standard deviation over the completions.",
    )
    if _has(scalars, _tag("reward")):
        rewards.panels.append(
            Panel("reward (weighted sum)", [Curve(_tag("reward"), "reward", ("std", _tag("reward_std")))])
        )
    for name in reward_components(scalars):
        mean, std = _tag(f"rewards/{name}/mean"), _tag(f"rewards/{name}/std")
        rewards.panels.append(Panel(name, [Curve(mean, name, ("std", std))]))
    plots.append(rewards)

    completions = Plot(
        "completions",
        "Completions",
        "Length in tokens (band: shortest to longest in the batch). Growing length is one of the aha signals; a "
        "rising share cut off at the token budget means the budget (max_completion_length) binds.",
    )
    length = _tag("completions/mean_length")
    if _has(scalars, length):
        curves = [Curve(length, "all", (_tag("completions/min_length"), _tag("completions/max_length")))]
        if _has(scalars, _tag("completions/mean_terminated_length")):
            curves.append(Curve(_tag("completions/mean_terminated_length"), "ended with EOS"))
        completions.panels.append(Panel("completion length", curves, unit="tokens"))
    if _has(scalars, _tag("completions/clipped_ratio")):
        completions.panels.append(
            Panel("cut off at the token budget", [Curve(_tag("completions/clipped_ratio"), "share")], percent=True)
        )
    plots.append(completions)

    training = Plot(
        "training",
        "Optimisation",
        "Groups with no reward variance give no gradient: the share should stay well below 1. Entropy falling "
        "fast means the policy is collapsing; KL (when beta > 0) measures the drift from the reference model.",
    )
    for name, title, percent in (
        ("loss", "loss", False),
        ("grad_norm", "gradient norm", False),
        ("kl", "KL to the reference model", False),
        ("entropy", "entropy (nats per token)", False),
        ("mean_token_accuracy", "token accuracy", True),
        ("frac_reward_zero_std", "groups with zero reward variance", True),
        ("clip_ratio/region_mean", "ratio clipped (PPO clip)", True),
        ("learning_rate", "learning rate", False),
    ):
        tag = _tag(name)
        if _has(scalars, tag) and (name not in ("kl", "clip_ratio/region_mean") or _nonzero(scalars, tag)):
            panel = Panel(title, [Curve(tag, name)], percent=percent, scientific=name == "learning_rate")
            training.panels.append(panel)
    plots.append(training)

    aha = Plot(
        "aha",
        "Aha signals",
        "The 'aha moment' of DeepSeek-R1-Zero shows as longer completions and more self-checking: the share of "
        "completions with a reflection phrase ('wait', 'let me check', 'however', ...), phrases per completion, and "
        "the most frequent phrases.",
    )
    for name, title, percent in (
        ("aha/reflection_rate", "completions with a reflection phrase", True),
        ("aha/reflections_per_completion", "reflection phrases per completion", False),
        ("aha/completion_length", "completion length", False),
    ):
        if _has(scalars, _tag(name)):
            aha.panels.append(Panel(title, [Curve(_tag(name), name)], percent=percent))
    phrase_prefix = _tag("aha/phrase/")
    phrases = [tag for tag in scalars if tag.startswith(phrase_prefix) and _nonzero(scalars, tag)]
    phrases.sort(key=lambda tag: -max(v for _, v in scalars[tag]))
    if phrases:
        curves = [Curve(tag, tag[len(phrase_prefix) :].replace("_", " ")) for tag in phrases[:6]]
        aha.panels.append(Panel("completions with the phrase", curves, percent=True, legend=True))
    plots.append(aha)
    return [plot for plot in plots if plot.panels]


def _smooth(values: Sequence[float]) -> list[float]:
    """Exponential moving average over about a tenth of the points."""
    alpha = 2 / (max(2, len(values) // 10) + 1)
    smoothed, current = [], values[0]
    for value in values:
        current = alpha * value + (1 - alpha) * current
        smoothed.append(current)
    return smoothed


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def draw(plot: Plot, scalars: dict[str, Series], path: Path) -> Path:
    """Render `plot` as a PNG grid of panels (three per row) at `path`."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    columns = min(3, len(plot.panels))
    rows = math.ceil(len(plot.panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False, dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, panel in enumerate(plot.panels):
        ax = axes[index // columns][index % columns]
        for number, curve in enumerate(panel.curves):
            points = scalars.get(curve.tag, [])
            if not points:
                continue
            color = colors[number % len(colors)]
            steps = [s for s, _ in points]
            values = [v for _, v in points]
            if curve.band is not None:
                low, high = _band(scalars, curve.band, points)
                if low is not None:
                    ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
            if len(points) > SMOOTH_ABOVE:
                ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
                ax.plot(steps, _smooth(values), color=color, linewidth=1.8, label=curve.label)
            else:
                ax.plot(steps, values, color=color, linewidth=1.6, marker="o", markersize=3, label=curve.label)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        if panel.unit:
            ax.set_ylabel(panel.unit, fontsize=8)
        if panel.percent:  # shares: the whole 0-100% range, so a small wiggle does not look like a trend
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_ylim(-0.03, 1.03)
        if panel.scientific:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.1e}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(panel.curves) > 1 or panel.legend:
            ax.legend(fontsize=7, frameon=False)
    for index in range(len(plot.panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(plot.title, fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _band(scalars: dict[str, Series], band: tuple[str, str], points: Series):
    """Lower and upper edge of a curve's band at its steps (None when the band's tags are missing)."""
    kind, other = band
    if kind == "std":
        std = dict(scalars.get(other, []))
        if not std:
            return None, None
        return [v - std.get(s, 0.0) for s, v in points], [v + std.get(s, 0.0) for s, v in points]
    low, high = dict(scalars.get(kind, [])), dict(scalars.get(other, []))
    if not low or not high:
        return None, None
    return [low.get(s, v) for s, v in points], [high.get(s, v) for s, v in points]


# ----------------------------------------------------------------------------------------------------------------
# Before and after


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


def draw_eval(baseline: dict[str, Any] | None, trained: dict[str, Any] | None, path: Path) -> Path | None:
    """Grouped bars of the accuracy-type metrics, base model vs trained (either may be missing)."""
    results = [(name, r) for name, r in (("base model", baseline), ("trained", trained)) if r is not None]
    if not results:
        return None
    keys = [k for k in compared_metrics(baseline, trained) if k in ("greedy_pass@1", "pass@1", "format_greedy")]
    largest = [k for k in compared_metrics(baseline, trained) if k.startswith(("pass@", "maj@")) and k != "pass@1"]
    keys[2:2] = [k for k in largest if k.startswith("maj@")] + [k for k in largest if k.startswith("pass@")][-1:]
    if not keys:
        return None
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    figure, ax = plt.subplots(figsize=(1.2 * len(keys) + 2.5, 3.4), dpi=110)
    width = 0.8 / len(results)
    for number, (name, result) in enumerate(results):
        values = [result["metrics"].get(k) or 0.0 for k in keys]
        positions = [i + (number - (len(results) - 1) / 2) * width for i in range(len(keys))]
        bars = ax.bar(positions, values, width=width * 0.95, label=name)
        ax.bar_label(bars, labels=[f"{100 * v:.0f}%" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(keys)), [METRIC_LABELS.get(k, k) for k in keys], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_title("Held-out evaluation", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Sample completions


@dataclass
class Sample:
    step: int
    prompt: str | None
    completion: str
    scores: dict[str, float | None]


def _text_of(value: Any) -> str:
    """The text of a prompt or completion as TRL logs it: a string, or a list of messages (last one's content)."""
    if isinstance(value, str):
        return value
    try:
        messages = list(value)
    except TypeError:
        return str(value)
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    chosen = users[-1] if users else (messages[-1] if messages else {})
    return str(chosen.get("content", "")) if isinstance(chosen, dict) else str(chosen)


def _spread(steps: Sequence[int]) -> list[int]:
    """The first, middle and last of sorted `steps` (fewer when there are fewer)."""
    if not steps:
        return []
    picks = [steps[0], steps[len(steps) // 2], steps[-1]]
    return sorted(set(picks))


def _pick(rows: list[Sample]) -> list[Sample]:
    """The first row, then the first whose scores differ from it (often a right and a wrong one)."""
    if not rows:
        return []
    chosen = [rows[0]]
    for row in rows[1:]:
        if len(chosen) >= SAMPLES_PER_POINT:
            break
        if row.scores != rows[0].scores:
            chosen.append(row)
    return chosen


def completion_samples(run_dir: Path) -> tuple[str | None, dict[int, list[Sample]]]:
    """(source, samples by step) at the start, middle and end of training: from TRL's completion tables when the run
    logged them (`log_completions: true`), else from the aha-signals hook's samples; (None, {}) when neither."""
    tables = sorted((run_dir / COMPLETIONS_DIR).glob("completions_*.parquet"))
    if tables:
        import pandas as pd

        by_step = {int(path.stem.split("_")[-1]): path for path in tables}
        picked: dict[int, list[Sample]] = {}
        for step in _spread(sorted(by_step)):
            frame = pd.read_parquet(by_step[step])
            reserved = {"step", "prompt", "completion", "advantage", "image"}
            score_columns = [c for c in frame.columns if c not in reserved]
            rows = [
                Sample(
                    step=step,
                    prompt=_text_of(record["prompt"]),
                    completion=_text_of(record["completion"]),
                    scores={c: _number(record[c]) for c in score_columns},
                )
                for record in frame.to_dict("records")
            ]
            picked[step] = _pick(rows)
        return f"{COMPLETIONS_DIR}/*.parquet", picked
    hook_file = run_dir / AHA_SAMPLES_FILE
    if hook_file.is_file():
        rows_by_step: dict[int, list[Sample]] = {}
        for line in hook_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a stopped run
            scores = {**record.get("rewards", {}), "reflections": record.get("reflections")}
            sample = Sample(int(record["step"]), record.get("prompt"), record.get("completion", ""), scores)
            rows_by_step.setdefault(sample.step, []).append(sample)
        return AHA_SAMPLES_FILE, {step: _pick(rows_by_step[step]) for step in _spread(sorted(rows_by_step))}
    return None, {}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _fence(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for char in line:
        if char == "`":
            current += char
        elif current:
            runs.append(current)
            current = ""
    return [*runs, current] if current else runs


def _clip(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def samples_markdown(source: str | None, samples: dict[int, list[Sample]]) -> str:
    if not samples:
        return (
            "No completions were logged. Set `log_completions: true` in the recipe (TRL writes "
            f"`{COMPLETIONS_DIR}/*.parquet`), or train with the aha-signals hook (it writes `{AHA_SAMPLES_FILE}`)."
        )
    steps = sorted(samples)
    names = {steps[0]: "Start", steps[-1]: "End"}
    if len(steps) == 3:
        names[steps[1]] = "Middle"
    origin = "TRL's completion logs" if source.endswith(".parquet") else "the aha-signals hook"
    parts = [f"From {origin} (`{source}`)."]
    for step in steps:
        parts.append(f"\n### {names.get(step, 'Step')} (step {step})")
        for sample in samples[step]:
            scores = ", ".join(f"{k} {_score(v)}" for k, v in sample.scores.items())
            parts.append(f"\n**Prompt:** {_clip(sample.prompt, MAX_PROMPT_CHARS)}  \n**Scores:** {scores}\n")
            parts.append(_fence(_clip(sample.completion, MAX_COMPLETION_CHARS)))
    return "\n".join(parts)


def _score(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------------------------
# Recipe settings as the run used them


def _load_recipe(text: str | None) -> dict[str, Any]:
    """A recipe's YAML as a dict ({} when missing or unreadable: the report then says "not set")."""
    try:
        loaded = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def override_values(overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe keys a run's CLI flags set (summary.json `overrides`: `["--seed", "1", "--max_steps=5"]`), typed
    as YAML reads them. A flag followed by several values gives a list, a flag without a value True (a switch)."""
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


def effective_recipe(recipe_yaml: str | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The recipe's settings as the run used them: its YAML with summary.json's CLI overrides on top (they won)."""
    return {**_load_recipe(recipe_yaml), **override_values(summary.get("overrides") or [])}


def train_minutes(summary: dict[str, Any]) -> float | None:
    """Minutes spent training: TRL's train_runtime (the optimizer loop) when summary.json has it, else the whole
    process's wall time (model loading included, so a little more)."""
    runtime = (summary.get("train_summary") or {}).get("train_runtime")
    seconds = runtime if isinstance(runtime, int | float) else summary.get("wall_time_s")
    return seconds / 60 if isinstance(seconds, int | float) else None


# ----------------------------------------------------------------------------------------------------------------
# Compared runs: this run next to other runs (other seeds, another method given the same time)

COMPARISON_FILE = "comparison.json"
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


# ----------------------------------------------------------------------------------------------------------------
# Same problems, before and after: the base model's and this run's greedy completions of the same questions

PROBLEMS_SHOWN = 3


@dataclass
class ProblemPair:
    """One held-out problem as both evaluations saw it (lines of samples-baseline.jsonl and samples.jsonl)."""

    index: int  # the problem's `index` in samples.jsonl
    question: str
    gold: dict[str, Any]
    before: dict[str, Any]  # the base model's greedy completion (text, correct, formatted, tokens, ...)
    after: dict[str, Any]  # the trained model's

    @property
    def right_before(self) -> bool:
        return (self.before.get("correct") or 0.0) >= 1.0

    @property
    def right_after(self) -> bool:
        return (self.after.get("correct") or 0.0) >= 1.0


@dataclass
class SameProblems:
    pairs: list[ProblemPair]
    missing: list[str]  # a sentence per missing samples file: which command writes it
    lines: tuple[int, int] = (0, 0)  # problems in samples-baseline.jsonl, samples.jsonl


def read_problems(path: Path) -> list[dict[str, Any]]:
    """The lines of a samples file (a line cut off by a stopped eval is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _problem_key(row: dict[str, Any]) -> str:
    """What makes two lines the same problem: the question (the prompt's user message), which both evaluations
    build from the same held-out row; the line's index when there is no prompt."""
    prompt = row.get("prompt")
    return f"question:{_text_of(prompt)}" if prompt else f"index:{row.get('index')}"


def match_problems(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> list[ProblemPair]:
    """Problems in both files whose greedy completions were both scored (a gold answer that does not parse leaves
    `correct` null), in samples.jsonl's order."""
    earlier: dict[str, dict[str, Any]] = {}
    for row in before:
        earlier.setdefault(_problem_key(row), row)
    pairs = []
    for row in after:
        old = earlier.get(_problem_key(row))
        if old is None or not old.get("greedy") or not row.get("greedy"):
            continue
        if old["greedy"].get("correct") is None or row["greedy"].get("correct") is None:
            continue
        question = _text_of(row["prompt"]) if row.get("prompt") else ""
        pairs.append(
            ProblemPair(
                int(row.get("index", len(pairs))), question, row.get("gold") or {}, old["greedy"], row["greedy"]
            )
        )
    return pairs


def pick_problems(pairs: Sequence[ProblemPair]) -> list[tuple[str, ProblemPair]]:
    """Up to three (heading, problem): one training fixed, one right both times, one still wrong after training
    (wrong both times, else one training broke)."""

    def first(before: bool, after: bool) -> ProblemPair | None:
        return next((p for p in pairs if p.right_before == before and p.right_after == after), None)

    still = first(False, False)
    picks = [
        ("Fixed by training: wrong before, right after", first(False, True)),
        ("Right before and after", first(True, True)),
        ("Still wrong after training", still)
        if still
        else ("Broken by training: right before, wrong after", first(True, False)),
    ]
    return [(heading, pair) for heading, pair in picks if pair is not None][:PROBLEMS_SHOWN]


def problem_counts(pairs: Sequence[ProblemPair]) -> dict[str, int]:
    """Matched problems by greedy correctness: fixed (wrong -> right), broken (right -> wrong), kept, still wrong."""
    kinds = {(False, True): "fixed", (True, False): "broken", (True, True): "kept", (False, False): "still_wrong"}
    counts = dict.fromkeys(kinds.values(), 0)
    for pair in pairs:
        counts[kinds[(pair.right_before, pair.right_after)]] += 1
    return counts


def same_problems(run_dir: Path, recipe_path: str | None) -> SameProblems:
    before_file, after_file = run_dir / BASELINE_SAMPLES_FILE, run_dir / SAMPLES_FILE
    missing = []
    if not before_file.is_file():
        missing.append(
            f"`{before_file}` is missing: `aha eval --baseline --recipe {recipe_path or 'RECIPE'}` writes it (with "
            f"{BASELINE_EVAL_FILE})."
        )
    if not after_file.is_file():
        missing.append(f"`{after_file}` is missing: `aha eval --model {run_dir}` writes it (with {EVAL_FILE}).")
    if missing:
        return SameProblems([], missing)
    before, after = read_problems(before_file), read_problems(after_file)
    return SameProblems(match_problems(before, after), [], (len(before), len(after)))


def _gold_text(gold: dict[str, Any]) -> str:
    if "answer" in gold:
        return str(gold["answer"])
    if "target" in gold:
        return f"{gold['target']} from the numbers {gold.get('nums')}"
    return ", ".join(f"{key} {value}" for key, value in gold.items()) or "unknown"


def _verdict(right: bool) -> str:
    return "right" if right else "wrong"


def same_problems_markdown(same: SameProblems) -> str:
    if same.missing:
        return "No per-problem completions to compare. " + " ".join(same.missing)
    if not same.pairs:
        return (
            f"No problem of {SAMPLES_FILE} ({same.lines[1]} lines) is in {BASELINE_SAMPLES_FILE} ({same.lines[0]} "
            "lines) with both greedy completions scored: were both evaluated on the same held-out set (task, n)?"
        )
    counts = problem_counts(same.pairs)
    parts = [
        f"{len(same.pairs)} problems in both {BASELINE_SAMPLES_FILE} and {SAMPLES_FILE} (matched by question), by "
        f"greedy correctness: **{counts['fixed']} fixed** (wrong -> right), **{counts['broken']} broken** (right -> "
        f"wrong), {counts['kept']} right both times, {counts['still_wrong']} wrong both times."
    ]
    for heading, pair in pick_problems(same.pairs):
        parts += [
            f"\n### {heading} (problem {pair.index})",
            f"\n**Question:** {_clip(pair.question, MAX_PROMPT_CHARS)}  \n**Gold answer:** {_gold_text(pair.gold)}\n",
            f"Base model, greedy ({_verdict(pair.right_before)}):\n",
            _fence(_clip(pair.before.get("text", ""), MAX_COMPLETION_CHARS)),
            f"\nTrained, greedy ({_verdict(pair.right_after)}):\n",
            _fence(_clip(pair.after.get("text", ""), MAX_COMPLETION_CHARS)),
        ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Stability: the guards a GRPO recipe set against collapse, and whether the run collapsed anyway

# Start and end of a signal: its mean over the first and last tenth of the logged steps (at least one point each),
# so one noisy batch neither raises nor clears the alarm.
WINDOW_SHARE = 0.1
# Collapse thresholds, end of training against its start:
# - entropy: a learning run sharpens its policy (the tiny recipe: 0.19 -> 0.15 nats/token at lr 1e-4), but below a
#   quarter of the start the samples of a group are near-copies, their rewards tie and the gradient dies;
ENTROPY_FLOOR = 0.25
# - format reward (a 0-1 share of well-formed completions): degenerate text (the tiny recipe's collapse at lr 3e-4)
#   breaks the strict layout, and a fall of more than 0.2 is well beyond batch-to-batch noise;
FORMAT_DROP = 0.2
# - cut-off share: when most completions hit max_completion_length the policy rambles or loops instead of
#   answering, and the rewards score truncated text;
CLIPPED_CEILING = 0.5
# - mean length: halving means the reasoning was dropped (answer-only shortcuts, empty text); doubling within one
#   run is more often repetition than the aha kind of longer reasoning (the cut-off share and samples tell which).
LENGTH_SHRINK = 0.5
LENGTH_GROWTH = 2.0
ACCURACY_REWARD_NAMES = ("gsm8k_accuracy", "countdown_equation")
FORMAT_REWARD_NAME = "think_format"

# Recipe settings that keep a GRPO run from collapsing, and what each one guards (TRL's default when not set).
GUARD_KEYS = (
    ("learning_rate", "step size: too high is the usual cause of collapse"),
    ("lr_scheduler_type", "how the step size changes over the run"),
    ("beta", "KL penalty towards the reference model (0: none)"),
    ("scale_rewards", "per-group std scaling of advantages (amplifies noise in small groups)"),
    ("loss_type", "how token losses are averaged (dapo, grpo, dr_grpo, ...)"),
    ("max_completion_length", "token budget per completion"),
    ("temperature", "sampling temperature of the rollouts"),
)


@dataclass
class Signal:
    """A logged training signal at the start and end of the run."""

    role: str  # entropy, length, clipped, format, accuracy or zero_std: what collapse_reasons looks at
    label: str
    tag: str
    start: float
    end: float
    start_steps: tuple[int, int]
    end_steps: tuple[int, int]
    percent: bool = False  # a share: shown in %
    unit: str = ""


@dataclass
class Stability:
    guards: list[tuple[str, str, str]]  # (setting, value, what it guards)
    signals: list[Signal]
    reasons: list[str]  # why collapse is suspected; [] when nothing crossed a threshold


def window_means(points: Series) -> tuple[float, float, tuple[int, int], tuple[int, int]]:
    """(start mean, end mean, start steps, end steps) over the first and last WINDOW_SHARE of `points`."""
    size = max(1, math.ceil(WINDOW_SHARE * len(points)))
    head, tail = points[:size], points[-size:]
    return (
        sum(v for _, v in head) / len(head),
        sum(v for _, v in tail) / len(tail),
        (head[0][0], head[-1][0]),
        (tail[0][0], tail[-1][0]),
    )


def _reward_name(scalars: dict[str, Series], names: Sequence[str]) -> str | None:
    """The logged reward among `names` (a labelled copy such as think_format@strict counts as its base name)."""
    components = reward_components(scalars)
    exact = [name for name in components if name in names]
    labelled = [name for name in components if name.partition("@")[0] in names]
    return (exact or labelled or [None])[0]


def stability_signals(scalars: dict[str, Series]) -> list[Signal]:
    """The collapse signals this run logged (a missing scalar is left out)."""
    wanted = [
        ("entropy", "entropy", _tag("entropy"), False, "nats/token"),
        ("length", "completion length", _tag("completions/mean_length"), False, "tokens"),
        ("clipped", "cut off at the token budget", _tag("completions/clipped_ratio"), True, ""),
    ]
    format_name = _reward_name(scalars, (FORMAT_REWARD_NAME,))
    if format_name:
        wanted.append(("format", f"format reward ({format_name})", _tag(f"rewards/{format_name}/mean"), False, ""))
    accuracy_name = _reward_name(scalars, ACCURACY_REWARD_NAMES)
    if accuracy_name:
        wanted.append(
            ("accuracy", f"accuracy reward ({accuracy_name})", _tag(f"rewards/{accuracy_name}/mean"), False, "")
        )
    wanted.append(("zero_std", "groups with zero reward variance", _tag("frac_reward_zero_std"), True, ""))
    signals = []
    for role, label, tag, percent, unit in wanted:
        points = [(s, v) for s, v in scalars.get(tag, []) if not math.isnan(v)]
        if points:
            start, end, start_steps, end_steps = window_means(points)
            signals.append(Signal(role, label, tag, start, end, start_steps, end_steps, percent, unit))
    return signals


def collapse_reasons(signals: Sequence[Signal]) -> list[str]:
    """Why the run looks collapsed (see the thresholds above); [] when no signal crossed one."""
    by_role = {signal.role: signal for signal in signals}
    reasons = []
    entropy = by_role.get("entropy")
    if entropy is not None and entropy.start > 0 and entropy.end < ENTROPY_FLOOR * entropy.start:
        reasons.append(
            f"entropy fell to {100 * entropy.end / entropy.start:.0f}% of its start ({entropy.start:.3f} -> "
            f"{entropy.end:.3f} nats/token; alarm below {100 * ENTROPY_FLOOR:.0f}%)"
        )
    fmt = by_role.get("format")
    if fmt is not None and fmt.start - fmt.end > FORMAT_DROP:
        reasons.append(
            f"{fmt.label} down {fmt.start - fmt.end:.2f} ({fmt.start:.2f} -> {fmt.end:.2f}; alarm above {FORMAT_DROP})"
        )
    clipped = by_role.get("clipped")
    if clipped is not None and clipped.end > CLIPPED_CEILING:
        reasons.append(
            f"{100 * clipped.end:.0f}% of completions cut off at the token budget at the end (alarm above "
            f"{100 * CLIPPED_CEILING:.0f}%)"
        )
    length = by_role.get("length")
    if length is not None and length.start > 0:
        if length.end < LENGTH_SHRINK * length.start:
            reasons.append(f"mean length {length.start:.1f} -> {length.end:.1f} tokens (below half its start)")
        elif length.end > LENGTH_GROWTH * length.start:
            reasons.append(f"mean length {length.start:.1f} -> {length.end:.1f} tokens (above double its start)")
    return reasons


def guard_rows(recipe: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(setting, value, what it guards) of the recipe's anti-collapse settings; unset ones say TRL's default."""
    rows = [(key, f"`{recipe[key]}`" if key in recipe else "not set (TRL's default)", why) for key, why in GUARD_KEYS]
    funcs = recipe.get("reward_funcs")
    if funcs:
        funcs = funcs if isinstance(funcs, list) else [funcs]
        weights = recipe.get("reward_weights")
        weights = weights if isinstance(weights, list) and len(weights) == len(funcs) else [1.0] * len(funcs)
        shown = ", ".join(f"{name} × {weight}" for name, weight in zip(funcs, weights, strict=True))
        rows.append(("reward_funcs × reward_weights", shown, "what is rewarded, and how much each part weighs"))
        formats = [name for name in funcs if str(name).partition("@")[0] == FORMAT_REWARD_NAME]
        options = recipe.get("reward_options") or {}
        if formats:
            strict = [bool((options.get(name) or {}).get("strict")) for name in formats]
            value = ", ".join(
                f"{name}: {'strict' if s else 'not strict'}" for name, s in zip(formats, strict, strict=True)
            )
            why = "strict: exactly one think block then one answer block; loose text drifts into degenerate forms"
            rows.append((f"reward_options.{FORMAT_REWARD_NAME}", value, why))
    return rows


def stability(scalars: dict[str, Series], recipe: dict[str, Any]) -> Stability | None:
    """Guards and measured collapse signals of a GRPO run (one that logged `train/reward`); None for other runs."""
    if not _has(scalars, _tag("reward")):
        return None
    signals = stability_signals(scalars)
    return Stability(guard_rows(recipe) if recipe else [], signals, collapse_reasons(signals))


def _signal_value(signal: Signal, value: float) -> str:
    if signal.percent:
        return f"{100 * value:.1f}%"
    text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {signal.unit}".strip()


def stability_markdown(result: Stability, recipe_source: str | None) -> str:
    parts = []
    if result.guards:
        parts += [
            f"Guards against collapse the recipe set (`{recipe_source}`, with summary.json's CLI overrides):",
            "",
            "| setting | value | what it guards |",
            "|---|---|---|",
        ]
        parts += [f"| {key} | {value} | {why} |" for key, value, why in result.guards]
    else:
        parts.append(f"No recipe copy in the run folder ({RECIPE_COPY}): the guards it set are unknown.")
    parts.append("")
    if not result.signals:
        parts.append(
            "Verdict: not judged: none of entropy, completion length, cut-off share or format reward was logged."
        )
        return "\n".join(parts)
    parts += [
        f"Measured: start and end are means over the first and last {100 * WINDOW_SHARE:.0f}% of logged steps.",
        "",
        "| signal | start | end | steps (start; end) |",
        "|---|---|---|---|",
    ]
    for s in result.signals:
        steps = f"{s.start_steps[0]}-{s.start_steps[1]}; {s.end_steps[0]}-{s.end_steps[1]}"
        parts.append(f"| {s.label} | {_signal_value(s, s.start)} | {_signal_value(s, s.end)} | {steps} |")
    parts.append("")
    if result.reasons:
        parts.append("Verdict: **Collapse suspected:** " + "; ".join(result.reasons) + ".")
    else:
        parts.append(
            "Verdict: **No sign of collapse** (alarms: entropy below "
            f"{100 * ENTROPY_FLOOR:.0f}% of its start, format reward down more than {FORMAT_DROP}, more than "
            f"{100 * CLIPPED_CEILING:.0f}% cut off at the end, mean length below {LENGTH_SHRINK:g}x or above "
            f"{LENGTH_GROWTH:g}x its start)."
        )
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# report.md and the model card


@dataclass
class RunReport:
    run_dir: Path
    summary: dict[str, Any]
    recipe_path: str | None
    recipe_yaml: str | None
    scalars: dict[str, Series]
    plots: list[tuple[Plot, Path]]
    eval_plot: Path | None
    baseline: dict[str, Any] | None
    trained: dict[str, Any] | None
    samples_source: str | None
    samples: dict[int, list[Sample]]
    same: SameProblems | None = None
    stability: Stability | None = None  # None: not a GRPO run
    comparison: Comparison | None = None  # None: no --compare

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    @property
    def recipe(self) -> dict[str, Any]:
        return _load_recipe(self.recipe_yaml)


def collect(run_dir: Path, compare: Sequence[str | Path] = ()) -> RunReport:
    """Read everything the report shows and draw the plots (into RUN_DIR/plots); `compare`: other run folders to
    put next to this one."""
    if not run_dir.is_dir():
        raise ReportError(f"run folder {str(run_dir)!r} does not exist; pass the output_dir of a run (runs/<name>).")
    compare_dirs = check_compare_dirs(compare)  # before the slow drawing: a typo fails at once
    summary = read_json(run_dir / SUMMARY_FILE) or {}
    files = event_files(run_dir, summary)
    scalars = read_scalars(files)
    if not summary and not scalars:
        raise ReportError(
            f"{run_dir} holds neither summary.json nor TensorBoard events: is it a run folder (a recipe's "
            "output_dir after `aha train`)?"
        )
    recipe_path, recipe_yaml = recipe_text(run_dir, summary)
    plots_dir = run_dir / PLOTS_DIR
    plots = [(plot, draw(plot, scalars, plots_dir / f"{plot.name}.png")) for plot in run_plots(scalars)]
    baseline = read_json(run_dir / BASELINE_EVAL_FILE)
    trained = read_json(run_dir / EVAL_FILE)
    eval_plot = draw_eval(baseline, trained, plots_dir / "eval.png")
    source, samples = completion_samples(run_dir)
    return RunReport(
        run_dir,
        summary,
        recipe_path,
        recipe_yaml,
        scalars,
        plots,
        eval_plot,
        baseline,
        trained,
        source,
        samples,
        same=same_problems(run_dir, recipe_path),
        stability=stability(scalars, effective_recipe(recipe_yaml, summary)),
        comparison=compare_runs(run_dir, baseline, compare_dirs) if compare_dirs else None,
    )


def _final(scalars: dict[str, Series], name: str) -> float | None:
    points = scalars.get(_tag(name))
    return points[-1][1] if points else None


def evaluation_markdown(report: RunReport) -> str:
    baseline, trained = report.baseline, report.trained
    if baseline is None and trained is None:
        return (
            "No evaluation yet. Measure the base model and the trained one on the held-out set:\n\n"
            f"```bash\naha eval --baseline --recipe {report.recipe_path or 'RECIPE'}\n"
            f"aha eval --model {report.run_dir}\n```"
        )
    parts = []
    for label, result in (("Base model", baseline), ("Trained", trained)):
        if result is not None:
            parts.append(f"- {label}: {eval_description(result)}")
    if baseline is None:
        parts.append(f"- Base model: not evaluated (`aha eval --baseline --recipe {report.recipe_path or 'RECIPE'}`)")
    if trained is None:
        parts.append(f"- Trained: not evaluated (`aha eval --model {report.run_dir}`)")
    if baseline is not None and trained is not None:
        for problem in eval_mismatches(baseline, trained):
            parts.append(f"- **Not comparable as is:** {problem}")
    parts.append("\n" + eval_table(baseline, trained))
    if report.eval_plot is not None:
        parts.append(f"\n![held-out evaluation]({report.relative(report.eval_plot)})")
    parts.append(
        "\nRates are shares of the held-out problems (± one standard error); pass@k and maj@k use the sampled "
        "completions, greedy pass@1 the greedy one (see `aha eval --help`)."
    )
    return "\n".join(parts)


def run_facts(report: RunReport) -> list[tuple[str, str]]:
    summary, recipe = report.summary, report.recipe
    facts = [
        ("run folder", str(report.run_dir)),
        ("recipe", report.recipe_path or str(summary.get("recipe", "unknown"))),
        ("base model", str(summary.get("model") or recipe.get("model_name_or_path", "unknown"))),
        ("dataset", str(summary.get("dataset") or recipe.get("dataset_name", "unknown"))),
        ("trainer", str(summary.get("trainer") or recipe.get("trainer", "unknown"))),
    ]
    if "global_step" in summary:
        facts.append(("steps", f"{summary['global_step']} of {summary.get('max_steps')}"))
    if "wall_time_s" in summary:
        minutes = summary["wall_time_s"] / 60
        facts.append(("wall time", f"{minutes:.1f} min on {summary.get('processes', 1)} process(es)"))
    if summary.get("resumed_from"):
        facts.append(("resumed from", str(summary["resumed_from"])))
    return facts


def report_markdown(report: RunReport) -> str:
    name = report.run_dir.name
    parts = [f"# Run report: {name}", ""]
    parts += [f"- {key}: `{value}`" for key, value in run_facts(report)]
    parts += ["", "## Before and after (held-out set)", "", evaluation_markdown(report), ""]
    if report.comparison is not None:
        parts += ["## Compared runs", "", comparison_markdown(report.comparison, report.recipe_path), ""]
    if report.same is not None:
        parts += ["## Same problems, before and after", "", same_problems_markdown(report.same), ""]
    parts += ["## Training curves", ""]
    if not report.plots:
        parts.append(f"No TensorBoard events under {report.run_dir} (the recipe needs `report_to: [tensorboard]`).")
    for plot, path in report.plots:
        parts += [f"### {plot.title}", "", plot.caption, "", f"![{plot.title}]({report.relative(path)})", ""]
    if report.stability is not None:
        source = RECIPE_COPY if (report.run_dir / RECIPE_COPY).is_file() else report.recipe_path
        parts += ["## Stability", "", stability_markdown(report.stability, source), ""]
    parts += ["## Sample completions", "", samples_markdown(report.samples_source, report.samples), ""]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    parts.append(f"_Written by `aha report {report.run_dir}` at {stamp}._")
    return "\n".join(parts) + "\n"


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


def model_card(report: RunReport) -> str:
    """A model card (README.md) for the trained model in the run folder: metadata, results, usage, recipe, curves."""
    from aha.recipe import looks_like_local_path

    recipe, summary = report.recipe, report.summary
    base = str(summary.get("model") or recipe.get("model_name_or_path") or "")
    dataset = str(summary.get("dataset") or recipe.get("dataset_name") or "")
    metadata: dict[str, Any] = {"library_name": "peft" if recipe.get("use_peft") else "transformers"}
    metadata["pipeline_tag"] = "text-generation"
    metadata["tags"] = ["aha", "grpo", "trl", "reasoning"]
    if base and not looks_like_local_path(base):
        metadata["base_model"] = base
    if dataset and not dataset.startswith("synthetic:") and not looks_like_local_path(dataset):
        metadata["datasets"] = [dataset]
    name = report.run_dir.name
    trainer = str(summary.get("trainer") or recipe.get("trainer") or "grpo").upper()
    parts = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    parts.append(
        f"`{base or 'the base model'}` trained with {trainer} on `{dataset or 'its dataset'}` by the aha recipe "
        f"`{report.recipe_path or summary.get('recipe', 'unknown')}`"
        + (f" ({summary['global_step']} steps)." if "global_step" in summary else ".")
    )
    parts += ["", "## Results on the held-out set", ""]
    if report.baseline is None and report.trained is None:
        parts.append("Not evaluated yet (`aha eval --model <this folder>`).")
    else:
        parts.append(eval_table(report.baseline, report.trained))
        for label, result in (("base model", report.baseline), ("trained", report.trained)):
            if result is not None:
                parts.append(f"\n- {label}: {eval_description(result)}")
    final = [(k, _final(report.scalars, k)) for k in ("reward", "entropy", "completions/mean_length")]
    final = [(k, v) for k, v in final if v is not None]
    if final:
        parts += ["", "Last logged training step: " + ", ".join(f"{k} {v:.3g}" for k, v in final) + "."]
    parts += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'generate = pipeline("text-generation", model="{report.run_dir}")',
        "```",
        "",
        f"or `aha chat {report.run_dir}`, which applies the recipe's system prompt and prefill. Prompt the model as "
        "the recipe did: its system prompt and user template are in the recipe below.",
        "",
        "## Training",
        "",
    ]
    shown = [(key, recipe[key]) for key in CARD_KEYS if key in recipe]
    if shown:
        parts += ["| setting | value |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in shown]
    if report.recipe_yaml:
        parts += ["", "<details><summary>The full recipe</summary>", "", "```yaml", report.recipe_yaml.strip(), "```"]
        parts += ["", "</details>"]
    if report.plots:
        parts += ["", "## Curves", ""]
        parts += [f"![{plot.title}]({report.relative(path)})" for plot, path in report.plots]
    parts += ["", "Full report: [report.md](report.md). Made with aha (GRPO recipes on TRL)."]
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | Path, *, card: bool = True, compare: Sequence[str | Path] = ()) -> RunReport:
    """Write report.md (and the model card unless `card` is False) into `run_dir`, and comparison.json when
    `compare` names other run folders; return what was collected."""
    report = collect(Path(run_dir), compare)
    _write(report.run_dir / REPORT_FILE, report_markdown(report))
    if report.comparison is not None:
        _write(report.run_dir / COMPARISON_FILE, json.dumps(comparison_json(report.comparison), indent=2) + "\n")
    if card:
        _write(report.run_dir / MODEL_CARD_FILE, model_card(report))
    return report


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aha report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder (the recipe's output_dir), e.g. runs/demo")
    parser.add_argument("--no-model-card", action="store_true", help="leave README.md in the run folder alone")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="DIR",
        help="another run folder to put next to this one (repeatable): report.md's 'Compared runs' table and "
        f"RUN_DIR/{COMPARISON_FILE}",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = write_report(args.run_dir, card=not args.no_model_card, compare=args.compare)
    except ReportError as err:
        print(f"aha report: {err}", file=sys.stderr)
        return 2
    print(f"aha report: {len(report.plots) + (report.eval_plot is not None)} plots -> {report.run_dir / PLOTS_DIR}")
    print(f"aha report: report -> {report.run_dir / REPORT_FILE}")
    if report.comparison is not None:
        print(f"aha report: comparison -> {report.run_dir / COMPARISON_FILE}")
    if not args.no_model_card:
        print(f"aha report: model card -> {report.run_dir / MODEL_CARD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
