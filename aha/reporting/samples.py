"""Sample completions from the start, middle and end of training (TRL's completion tables or aha-samples.jsonl)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.run_folder import (
    AHA_SAMPLES_FILE,
    COMPLETIONS_SUBDIR,
)

# Sample completions shown per point of training (start, middle, end), and characters kept of each.
SAMPLES_PER_POINT = 2
MAX_COMPLETION_CHARS = 1200
MAX_PROMPT_CHARS = 300


@dataclass
class Sample:
    step: int
    prompt: str | None
    completion: str
    scores: dict[str, float | None]


def text_of(value: Any) -> str:
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
    tables = sorted((run_dir / COMPLETIONS_SUBDIR).glob("completions_*.parquet"))
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
                    prompt=text_of(record["prompt"]),
                    completion=text_of(record["completion"]),
                    scores={c: _number(record[c]) for c in score_columns},
                )
                for record in frame.to_dict("records")
            ]
            picked[step] = _pick(rows)
        return f"{COMPLETIONS_SUBDIR}/*.parquet", picked
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


def fence(text: str) -> str:
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


def clip(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def samples_markdown(source: str | None, samples: dict[int, list[Sample]]) -> str:
    if not samples:
        return (
            "No completions were logged. Set `log_completions: true` in the recipe (TRL writes "
            f"`{COMPLETIONS_SUBDIR}/*.parquet`), or train with the aha-signals hook (it writes `{AHA_SAMPLES_FILE}`)."
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
            parts.append(f"\n**Prompt:** {clip(sample.prompt, MAX_PROMPT_CHARS)}  \n**Scores:** {scores}\n")
            parts.append(fence(clip(sample.completion, MAX_COMPLETION_CHARS)))
    return "\n".join(parts)


def _score(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
