"""Same problems, before and after: the base model's and this run's greedy completions of the same questions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.reporting.samples import MAX_COMPLETION_CHARS, MAX_PROMPT_CHARS, clip, fence, text_of
from aha.run_folder import (
    BASELINE_EVAL_FILE,
    BASELINE_SAMPLES_FILE,
    EVAL_FILE,
    SAMPLES_FILE,
)

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
    return f"question:{text_of(prompt)}" if prompt else f"index:{row.get('index')}"


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
        question = text_of(row["prompt"]) if row.get("prompt") else ""
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
            f"\n**Question:** {clip(pair.question, MAX_PROMPT_CHARS)}  \n**Gold answer:** {_gold_text(pair.gold)}\n",
            f"Base model, greedy ({_verdict(pair.right_before)}):\n",
            fence(clip(pair.before.get("text", ""), MAX_COMPLETION_CHARS)),
            f"\nTrained, greedy ({_verdict(pair.right_after)}):\n",
            fence(clip(pair.after.get("text", ""), MAX_COMPLETION_CHARS)),
        ]
    return "\n".join(parts)
