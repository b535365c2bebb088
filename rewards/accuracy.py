"""Answer rewards for GSM8K-style problems: `gsm8k_accuracy` (the number in the answer block against the gold answer)
and `integer_answer` (the answer block holds an integer).

Numbers compare exactly, as fractions, after reading how people and models write them: "1,000", "1 000", "$18",
"18$", "18.00", "18 dollars", "-5", "3/4", "\\frac{3}{4}", "\\frac34", "\\boxed{18}", "$18$", "**18**", "#### 18",
"18\\%", "$28$ %", "The answer is 18", a trailing period. `rewards.written_numbers` lists every accepted and refused
spelling with examples. This grammar is the fast path: microseconds per answer, no dependency.

Which answer counts: the one `<answer>` block after the thinking (`rewards._text.final_answer`). An answer block
inside the `<think>` block, before it, or in a think block never closed scores 0.0 unless `answer_in_think: true`;
two answer blocks (a draft in the thinking and a final one included) are no answer.

An answer outside the grammar scores 0.0 by default: an arithmetic expression is not an answer (crediting "12 + 7"
would teach a model to leave the arithmetic to the verifier). With `math_verify: true` such answers go to math-verify
behind a guard (`rewards.fallback`), which credits equivalent expressions and LaTeX the grammar does not read, and
gives up the fast path's speed bound (1 to 300 ms per guarded answer on this 2-core machine).
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rewards._registry import register
from rewards._text import AnswerPlacement, check_answer_tags
from rewards.fallback import fallback_allowed, math_body, math_verify_equal
from rewards.written_numbers import MAX_ANSWER_CHARS, parse_number


def gold_text(gold: Any) -> str | None:
    """The gold answer as text: a GSM8K solution's part after its last "####", a number as written, else None."""
    if isinstance(gold, bool) or gold is None:
        return None
    if isinstance(gold, numbers.Integral):  # int, numpy integers
        return str(int(gold))
    if isinstance(gold, numbers.Real):  # float, numpy floats: the shortest text that reads back as the same float
        return repr(float(gold)) if math.isfinite(gold) else None
    if isinstance(gold, str):
        return gold.rsplit("####", 1)[-1].strip()
    return None


@functools.lru_cache(maxsize=65536)
def _gold_value_of_text(text: str) -> Fraction | None:
    return parse_number(text)


def gold_value(gold: Any) -> Fraction | None:
    """The gold answer's value (a plain number, possibly "####"-prefixed GSM8K solution text), or None."""
    text = gold_text(gold)
    if text is None or len(text) > MAX_ANSWER_CHARS:
        return None
    return _gold_value_of_text(text)


# --- gsm8k_accuracy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gsm8kAccuracyOptions(AnswerPlacement):
    """correct: the score of a numerically correct answer. exact_match: when set, the score of an answer block that is
    exactly the gold string (stripped); seed-000 style is exact_match 2.0 with correct 1.5. math_verify: judge answers
    outside the number grammar with math-verify (credits expressions such as "2 \\times 500"; slower, see the module
    docstring). answer_tag: the answer block's tag name. think_tag: the thinking block's tag name; only an answer
    after the thinking counts. answer_in_think: count the one answer block even inside (or before) the thinking."""

    correct: float = 1.0
    exact_match: float | None = None
    math_verify: bool = False
    answer_tag: str = "answer"
    think_tag: str = "think"
    answer_in_think: bool = False

    def __post_init__(self) -> None:
        check_answer_tags(self.answer_tag, self.think_tag)
        if self.correct <= 0:
            raise ValueError(f"correct must be > 0 (a wrong answer scores 0.0), got {self.correct}")
        if self.exact_match is not None and self.exact_match <= 0:
            raise ValueError(f"exact_match must be > 0 or null (off), got {self.exact_match}")


def gsm8k_answer_value(block: str, row: Mapping[str, Any]) -> Fraction | None:
    """The number an answer block stands for (what majority votes count), or None when it is not one number."""
    return parse_number(block.strip())


@register(
    "gsm8k_accuracy",
    options=Gsm8kAccuracyOptions,
    role="accuracy",
    task="gsm8k",
    columns={"answer": "the gold answer, e.g. '72' or a GSM8K '#### 72' solution"},
    full_credit={"correct": 1.0, "exact_match": None},
    answer_value=gsm8k_answer_value,
)
def gsm8k_accuracy(text: str, gold: Any, options: Gsm8kAccuracyOptions) -> float | None:
    """1.0 when the number in the one `<answer>` block after the thinking equals the gold `answer` column, 0.0 when it
    differs or is missing (or there are several answer blocks, or several numbers in one), None when the gold does
    not parse as a number. Spellings read as numbers: see rewards.written_numbers.

    >>> gsm8k_accuracy(["<think>\\n9 * 2 = 18\\n</think>\\n<answer>$18</answer>"], answer=["She makes $18.\\n#### 18"])
    [1.0]
    >>> gsm8k_accuracy(["<answer>**1,000**</answer>", "<answer>1 000 dollars</answer>"], answer=["1000", "1000"])
    [1.0, 1.0]
    >>> gsm8k_accuracy(["<answer>18 or 19</answer>", "<answer>9 * 2</answer>"], answer=["18", "18"])
    [0.0, 0.0]
    >>> gsm8k_accuracy(["<think><answer>18</answer></think>"], answer=["18"])  # an answer inside the thinking
    [0.0]
    >>> gsm8k_accuracy(["<answer>18</answer>"], answer=["eighteen"])  # the gold is no number: unscorable
    [None]
    >>> rewards.get("gsm8k_accuracy", math_verify=True)(["<answer>\\\\(2 \\\\times 9\\\\)</answer>"], answer=["18"])
    [1.0]
    """
    expected = gold_value(gold)
    if expected is None:
        return None
    block = options.final_answer(text)
    if block is None:
        return 0.0
    answer = block.strip()
    if len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    if options.exact_match is not None and answer == gold_text(gold):
        return options.exact_match
    value = parse_number(answer)
    if value is not None:
        return options.correct if value == expected else 0.0
    if options.math_verify:
        body = math_body(answer)
        if fallback_allowed(body) and math_verify_equal(body, expected):
            return options.correct
    return 0.0


# --- integer_answer ---------------------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[-+\u2212]?(?:[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]+)")


@dataclass(frozen=True)
class IntegerAnswerOptions(AnswerPlacement):
    """value: the score when the answer block holds an integer. answer_tag, think_tag, answer_in_think: as for
    gsm8k_accuracy."""

    value: float = 1.0
    answer_tag: str = "answer"
    think_tag: str = "think"
    answer_in_think: bool = False

    def __post_init__(self) -> None:
        check_answer_tags(self.answer_tag, self.think_tag)
        if self.value <= 0:
            raise ValueError(f"value must be > 0, got {self.value}")


@register("integer_answer", options=IntegerAnswerOptions, role="shaping")
def integer_answer(text: str, options: IntegerAnswerOptions) -> float:
    """1.0 when the one `<answer>` block after the thinking holds an integer ("42", "-7", "1,000"), else 0.0.

    >>> integer_answer(["<answer>1,000</answer>", "<answer>-7</answer>", "<answer>42.0</answer>"])
    [1.0, 1.0, 0.0]
    >>> integer_answer(["<answer>0,5</answer>", "<answer>42 dollars</answer>"])
    [0.0, 0.0]
    """
    block = options.final_answer(text)
    if block is None:
        return 0.0
    answer = block.strip()
    return options.value if len(answer) <= MAX_ANSWER_CHARS and _INTEGER.fullmatch(answer) else 0.0
