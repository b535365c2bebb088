"""The report's figures: which curves a run's scalars support, and drawing them (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.evaluation.metrics import (
    METRIC_LABELS,
)
from aha.reporting.evals import compared_metrics
from aha.reporting.runs import Series, train_tag

# Curves with more points than this get an exponential moving average drawn over the raw values.
SMOOTH_ABOVE = 20


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


def has_curve(scalars: dict[str, Series], tag: str) -> bool:
    return bool(scalars.get(tag))


def _nonzero(scalars: dict[str, Series], tag: str) -> bool:
    return any(abs(v) > 0 for _, v in scalars.get(tag, []))


def reward_components(scalars: dict[str, Series]) -> list[str]:
    """Reward function names with a logged mean (`train/rewards/<name>/mean`), in tag order."""
    prefix, suffix = train_tag("rewards/"), "/mean"
    return [tag[len(prefix) : -len(suffix)] for tag in scalars if tag.startswith(prefix) and tag.endswith(suffix)]


def run_plots(scalars: dict[str, Series]) -> list[Plot]:
    """The figures this run's scalars support (a figure without any logged curve is left out)."""
    plots = [rewards_plot(scalars), completions_plot(scalars), training_plot(scalars), aha_plot(scalars)]
    return [plot for plot in plots if plot.panels]


def rewards_plot(scalars: dict[str, Series]) -> Plot:
    rewards = Plot(
        "rewards",
        "Rewards",
        "The weighted reward should rise; each component shows which part of the behaviour is learned (the "
        "accuracy reward is the task's training accuracy). Bands: ± one standard deviation over the completions.",
    )
    if has_curve(scalars, train_tag("reward")):
        rewards.panels.append(
            Panel("reward (weighted sum)", [Curve(train_tag("reward"), "reward", ("std", train_tag("reward_std")))])
        )
    for name in reward_components(scalars):
        mean, std = train_tag(f"rewards/{name}/mean"), train_tag(f"rewards/{name}/std")
        rewards.panels.append(Panel(name, [Curve(mean, name, ("std", std))]))
    return rewards


def completions_plot(scalars: dict[str, Series]) -> Plot:
    completions = Plot(
        "completions",
        "Completions",
        "Length in tokens (band: shortest to longest in the batch). Growing length is one of the aha signals; a "
        "rising share cut off at the token budget means the budget (max_completion_length) binds.",
    )
    length = train_tag("completions/mean_length")
    if has_curve(scalars, length):
        curves = [Curve(length, "all", (train_tag("completions/min_length"), train_tag("completions/max_length")))]
        if has_curve(scalars, train_tag("completions/mean_terminated_length")):
            curves.append(Curve(train_tag("completions/mean_terminated_length"), "ended with EOS"))
        completions.panels.append(Panel("completion length", curves, unit="tokens"))
    if has_curve(scalars, train_tag("completions/clipped_ratio")):
        completions.panels.append(
            Panel("cut off at the token budget", [Curve(train_tag("completions/clipped_ratio"), "share")], percent=True)
        )
    return completions


def training_plot(scalars: dict[str, Series]) -> Plot:
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
        tag = train_tag(name)
        if has_curve(scalars, tag) and (name not in ("kl", "clip_ratio/region_mean") or _nonzero(scalars, tag)):
            panel = Panel(title, [Curve(tag, name)], percent=percent, scientific=name == "learning_rate")
            training.panels.append(panel)
    return training


def aha_plot(scalars: dict[str, Series]) -> Plot:
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
        if has_curve(scalars, train_tag(name)):
            aha.panels.append(Panel(title, [Curve(train_tag(name), name)], percent=percent))
    phrase_prefix = train_tag("aha/phrase/")
    phrases = [tag for tag in scalars if tag.startswith(phrase_prefix) and _nonzero(scalars, tag)]
    phrases.sort(key=lambda tag: -max(v for _, v in scalars[tag]))
    if phrases:
        curves = [Curve(tag, tag[len(phrase_prefix) :].replace("_", " ")) for tag in phrases[:6]]
        aha.panels.append(Panel("completions with the phrase", curves, percent=True, legend=True))
    return aha


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
