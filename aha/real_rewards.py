"""A format reward for a pretrained model that has never seen the answer format: `answer_number`.

    reward_funcs: [gsm8k_accuracy, "aha.real_rewards:answer_number"]

It pays only for tags around real content (a number), never for tags alone, so copying the prompt's tags earns
nothing. A ladder, because the base model never writes the whole format at first:
  1.0   one `<answer>` block holding just an integer ("22", "-3", "1,000"), nothing but whitespace after it, and,
        with `think_close: true` (a recipe that pre-fills `<think>`), a `</think>` before it;
  0.5   a closed block holding just an integer that misses one of those (think not closed, text after the block,
        a second block), or an `<answer>` followed directly by an integer that ends the line (block not closed);
  0.25  an `<answer>` whose first non-empty line holds a number (the model uses the tag as a heading);
  0.0   everything else, including `<answer> </answer>`, `<answer>the number</answer>` and no tag at all.
Why a ladder: SmolLM2-135M-Instruct, asked for the tags with `<think>` pre-filled, writes `<answer>` in about half of
its samples at T=0.7 but never closes a block around a number (docs/real-model.md): an all-or-nothing reward gives
GRPO no signal to start from.

Model output is untrusted: plain string scans and one anchored regex without nested repetition (linear time); any
completion that is not text scores 0.0; nothing here raises on model output.
"""

from __future__ import annotations

import re
from typing import Any

from rewards._text import completion_text

OPEN, CLOSE = "<answer>", "</answer>"
INTEGER = re.compile(r"[-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)")
# an integer at the start of the text after the opening tag, followed by a line end, a tag or the end of the text
LEADING_INTEGER = re.compile(r"\s*[-+]?[0-9][0-9,]{0,15}[ \t]*(?:\n|<|$)")
MAX_ANSWER_CHARS = 32
LINE_CHARS = 200  # how far the first non-empty line after the tag is looked for
THINK_CLOSE = "</think>"


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
            return 1.0 if thought and not trailing.strip() else 0.5
    if LEADING_INTEGER.match(after[: MAX_ANSWER_CHARS + 8]):
        return 0.5
    heading = next((line for line in after[:LINE_CHARS].splitlines() if line.strip()), "")
    return 0.25 if any(char.isdigit() for char in heading) else 0.0


def answer_number(completions: Any, think_close: bool = False, **kwargs: Any) -> list[float]:
    """The ladder of the module docstring, per completion. Dataset columns in kwargs are ignored."""
    scores = []
    for completion in completions if isinstance(completions, list | tuple) else []:
        try:
            scores.append(_score(completion_text(completion), bool(think_close)))
        except Exception:  # untrusted input: an unreadable completion is a wrong one, never a crashed run
            scores.append(0.0)
    return scores
