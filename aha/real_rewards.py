"""A format reward for a pretrained model that has never seen the answer format: `answer_number`.

    reward_funcs: [gsm8k_accuracy, "aha.real_rewards:answer_number"]

It pays only for tags around a real number, never for tags alone, so copying tags from the prompt earns nothing:
  1.0  one `<answer>` block holding just an integer ("22", "-3", "1,000"), nothing but whitespace after it;
  0.5  the first `<answer>` is followed directly (whitespace aside) by an integer that ends the line or meets a tag,
       but the block is not closed, repeated, or text follows it: the step the base model takes first;
  0.0  everything else, including `<answer> </answer>`, `<answer>the number</answer>` and `<answer>22 apples`.
Why the half credit: SmolLM2-135M-Instruct, asked for the tags, opens `<answer>` in about half of its samples but
never closes a block around a number (docs/real-model.md), so an all-or-nothing reward gives GRPO no signal.

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


def _score(text: str) -> float:
    first = text.find(OPEN)
    if first < 0:
        return 0.0
    after = text[first + len(OPEN) :]
    if text.count(OPEN) == 1 and text.count(CLOSE) == 1:
        inside, _, trailing = after.partition(CLOSE)
        value = inside.strip()
        if len(value) <= MAX_ANSWER_CHARS and INTEGER.fullmatch(value) and not trailing.strip():
            return 1.0
    return 0.5 if LEADING_INTEGER.match(after[: MAX_ANSWER_CHARS + 8]) else 0.0


def answer_number(completions: Any, **kwargs: Any) -> list[float]:
    """1.0 for one closed answer block holding an integer at the end, 0.5 for an opened one starting with an integer,
    else 0.0 (module docstring). Dataset columns in kwargs are ignored."""
    scores = []
    for completion in completions if isinstance(completions, list | tuple) else []:
        try:
            scores.append(_score(completion_text(completion)))
        except Exception:  # untrusted input: an unreadable completion is a wrong one, never a crashed run
            scores.append(0.0)
    return scores
