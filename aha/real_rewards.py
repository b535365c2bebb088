"""Rewards for a pretrained model that has never seen the answer format: `answer_number`, `answer_line_accuracy`.

    reward_funcs: [gsm8k_accuracy, "aha.real_rewards:answer_line_accuracy", "aha.real_rewards:answer_number"]

It pays only for tags around real content (a number), never for tags alone, so copying the prompt's tags earns
nothing. A ladder, because the base model never writes the whole format at first:
  1.0   one `<answer>` block holding just an integer ("22", "-3", "1,000"), nothing but whitespace after it, and,
        with `think_close: true` (a recipe that pre-fills `<think>`), a `</think>` before it;
  0.75  a closed block holding just an integer that misses one of those (think not closed, text after the block,
        a second block);
  0.5   an `<answer>` followed directly by an integer that ends its line (the block not closed);
  0.25-0.47  an `<answer>` whose first non-empty line holds a number among other words (the model uses the tag as a
        heading): 0.25 plus up to 0.25 the shorter the line, so a group of headings still differs and GRPO is pulled
        towards the bare number;
  0.0   everything else, including `<answer> </answer>`, `<answer>the number</answer>` and no tag at all.
Why a ladder: SmolLM2-135M-Instruct, asked for the tags with `<think>` pre-filled, writes `<answer>` in about half of
its samples at T=0.7 but never closes a block around a number (docs/real-model.md): an all-or-nothing reward gives
GRPO no signal to start from. A flat 0.25 for every heading stalled two runs at zero reward spread (docs).

`answer_line_accuracy` is the matching accuracy: 1.0 when the last number on that first line after `<answer>` equals
the gold `answer` column, closed block or not (gsm8k_accuracy pays only for a clean block). It needs the tag: a
reward for the last number anywhere let the model settle on bare sums without tags (docs/real-model.md);
`last_number_right` is that measure, kept for the evaluation's figures.

Model output is untrusted: plain string scans and one anchored regex without nested repetition (linear time); any
completion that is not text scores 0.0; nothing here raises on model output.
"""

from __future__ import annotations

import re
from typing import Any

from rewards import completion_text

OPEN, CLOSE = "<answer>", "</answer>"
# thousands groups only after a non-zero lead digit: "0,500" is a decimal comma, not five hundred
INTEGER = re.compile(r"[-+]?(?:[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]+)")
# an integer at the start of the text after the opening tag, followed by a line end, a tag or the end of the text
LEADING_INTEGER = re.compile(r"\s*[-+]?[0-9][0-9,]{0,15}[ \t]*(?:\n|<|$)")
MAX_ANSWER_CHARS = 32
LINE_CHARS = 200  # how far the first non-empty line after the tag is looked for
THINK_CLOSE = "</think>"
HEADING_WORDS = 8  # a heading line this many words longer than a bare number earns the floor, 0.25
NUMBER = re.compile(r"-?[0-9][0-9,]{0,15}")
LAST_NUMBER_CHARS = 400  # the last number is looked for in the completion's tail (a bounded scan)


def _first_line(after: str) -> str:
    """The first non-empty line after the opening tag (up to a closing tag), within LINE_CHARS characters."""
    head = after[:LINE_CHARS].split(CLOSE, 1)[0]
    return next((line.strip() for line in head.splitlines() if line.strip()), "")


def _score(text: str, think_close: bool) -> float:
    first = text.find(OPEN)
    if first < 0:
        return 0.0
    after = text[first + len(OPEN) :]
    if text.count(OPEN) == 1 and text.count(CLOSE) == 1:
        inside, _, trailing = after.partition(CLOSE)
        value = inside.strip()
        if len(value) <= MAX_ANSWER_CHARS and INTEGER.fullmatch(value):
            thought = not think_close or THINK_CLOSE in text[:first]
            return 1.0 if thought and not trailing.strip() else 0.75
    if LEADING_INTEGER.match(after[: MAX_ANSWER_CHARS + 8]):
        return 0.5
    line = _first_line(after)
    if not any(char.isdigit() for char in line):
        return 0.0
    words = len(line.split())
    return 0.25 + 0.25 * max(0.0, 1.0 - (words - 1) / HEADING_WORDS)


def _gold_integer(gold: Any) -> int | None:
    try:
        return int(str(gold).strip().replace(",", ""))
    except ValueError:
        return None


def last_number_right(text: str, gold: Any) -> bool:
    """The last number in `text` (where a reader looks for the result, tags or not) equals the integer gold."""
    expected, numbers = _gold_integer(gold), NUMBER.findall(text[-LAST_NUMBER_CHARS:])
    return expected is not None and bool(numbers) and int(numbers[-1].replace(",", "")) == expected


def answer_line_accuracy(completions: Any, answer: Any = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the last number on the first non-empty line after `<answer>` equals the gold `answer`, else 0.0;
    None when the gold does not parse as an integer.

    >>> answer_line_accuracy(["<answer>22</answer>", "The final number inside <answer> is 22.", "13 + 9 = 22"], "22")
    [1.0, 1.0, 0.0]
    """
    golds = answer if isinstance(answer, list | tuple) else [answer] * len(completions or [])
    scores: list[float | None] = []
    for completion, gold in zip(completions if isinstance(completions, list | tuple) else [], golds, strict=False):
        expected = _gold_integer(gold)
        if expected is None:
            scores.append(None)
            continue
        try:
            text = completion_text(completion)
            first = text.find(OPEN)
            numbers = NUMBER.findall(_first_line(text[first + len(OPEN) :])) if first >= 0 else []
            scores.append(1.0 if numbers and int(numbers[-1].replace(",", "")) == expected else 0.0)
        except Exception:  # untrusted input: an unreadable completion is a wrong one, never a crashed run
            scores.append(0.0)
    return scores


def answer_number(completions: Any, think_close: bool = False, **kwargs: Any) -> list[float]:
    """The ladder of the module docstring, per completion. Dataset columns in kwargs are ignored."""
    scores = []
    for completion in completions if isinstance(completions, list | tuple) else []:
        try:
            scores.append(_score(completion_text(completion), bool(think_close)))
        except Exception:  # untrusted input: an unreadable completion is a wrong one, never a crashed run
            scores.append(0.0)
    return scores


# its full credit is the recipe's whole format: `aha eval` counts a completion as formatted when it scores 1.0 here
answer_number.role = "format"
