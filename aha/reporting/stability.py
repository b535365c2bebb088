"""Stability: the guards a GRPO recipe set against collapse, and whether the run collapsed anyway."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aha.reporting.plots import has_curve, reward_components
from aha.reporting.runs import Series, train_tag
from aha.run_folder import (
    RECIPE_COPY,
    RESOLVED_RECIPE,
)
from rewards import names as reward_names

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
# The rewards read as the accuracy and format signals: the registry's roles, not names written here.
ACCURACY_REWARD_NAMES = tuple(reward_names(role="accuracy"))
FORMAT_REWARD_NAME = reward_names(role="format")[0]

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
        ("entropy", "entropy", train_tag("entropy"), False, "nats/token"),
        ("length", "completion length", train_tag("completions/mean_length"), False, "tokens"),
        ("clipped", "cut off at the token budget", train_tag("completions/clipped_ratio"), True, ""),
    ]
    format_name = _reward_name(scalars, (FORMAT_REWARD_NAME,))
    if format_name:
        wanted.append(("format", f"format reward ({format_name})", train_tag(f"rewards/{format_name}/mean"), False, ""))
    accuracy_name = _reward_name(scalars, ACCURACY_REWARD_NAMES)
    if accuracy_name:
        wanted.append(
            ("accuracy", f"accuracy reward ({accuracy_name})", train_tag(f"rewards/{accuracy_name}/mean"), False, "")
        )
    wanted.append(("zero_std", "groups with zero reward variance", train_tag("frac_reward_zero_std"), True, ""))
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
    if not has_curve(scalars, train_tag("reward")):
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
            f"Guards against collapse the recipe set (`{recipe_source}`, as the run used it: CLI overrides applied):",
            "",
            "| setting | value | what it guards |",
            "|---|---|---|",
        ]
        parts += [f"| {key} | {value} | {why} |" for key, value, why in result.guards]
    else:
        parts.append(f"No recipe in the run folder ({RESOLVED_RECIPE}, {RECIPE_COPY}): the guards it set are unknown.")
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
