"""`aha report RUN_DIR`: what a run did, as a page a person can read: curves, before/after, sample completions.

    aha report runs/tiny-grpo-arith
    make report RUN=runs/tiny-grpo-arith

Reads the run folder that `aha train` wrote (TensorBoard events under `tensorboard/`, `summary.json`, TRL's
`completions/*.parquet` when the recipe logs completions, `aha-samples.jsonl` from the aha-signals hook) and the
evaluations `aha eval` wrote into it (`eval-baseline.json` for the base model, `eval.json` for the trained one).
Writes, into the run folder:
  plots/*.png   rewards (the weighted sum and each reward function), completion length and truncation, the
                optimisation (loss, grad norm, KL when logged, entropy, zero-variance groups, clipping), the aha
                signals (reflection phrases, length), and the before/after evaluation
  report.md     the plots with what to look for, the before/after table, sample completions from the start,
                middle and end of training
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
    EVAL_FILE,
    METRIC_LABELS,
    PERCENT_METRICS,
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

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    @property
    def recipe(self) -> dict[str, Any]:
        try:
            loaded = yaml.safe_load(self.recipe_yaml) if self.recipe_yaml else None
        except yaml.YAMLError:
            return {}
        return loaded if isinstance(loaded, dict) else {}


def collect(run_dir: Path) -> RunReport:
    """Read everything the report shows and draw the plots (into RUN_DIR/plots)."""
    if not run_dir.is_dir():
        raise ReportError(f"run folder {str(run_dir)!r} does not exist; pass the output_dir of a run (runs/<name>).")
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
        run_dir, summary, recipe_path, recipe_yaml, scalars, plots, eval_plot, baseline, trained, source, samples
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
    parts += ["", "## Before and after (held-out set)", "", evaluation_markdown(report), "", "## Training curves", ""]
    if not report.plots:
        parts.append(f"No TensorBoard events under {report.run_dir} (the recipe needs `report_to: [tensorboard]`).")
    for plot, path in report.plots:
        parts += [f"### {plot.title}", "", plot.caption, "", f"![{plot.title}]({report.relative(path)})", ""]
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


def write_report(run_dir: str | Path, *, card: bool = True) -> RunReport:
    """Write report.md (and the model card unless `card` is False) into `run_dir`; return what was collected."""
    report = collect(Path(run_dir))
    _write(report.run_dir / REPORT_FILE, report_markdown(report))
    if card:
        _write(report.run_dir / MODEL_CARD_FILE, model_card(report))
    return report


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aha report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder (the recipe's output_dir), e.g. runs/tiny-grpo-arith")
    parser.add_argument("--no-model-card", action="store_true", help="leave README.md in the run folder alone")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = write_report(args.run_dir, card=not args.no_model_card)
    except ReportError as err:
        print(f"aha report: {err}", file=sys.stderr)
        return 2
    print(f"aha report: {len(report.plots) + (report.eval_plot is not None)} plots -> {report.run_dir / PLOTS_DIR}")
    print(f"aha report: report -> {report.run_dir / REPORT_FILE}")
    if not args.no_model_card:
        print(f"aha report: model card -> {report.run_dir / MODEL_CARD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
