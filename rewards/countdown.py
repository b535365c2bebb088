"""Countdown: the answer block is an arithmetic expression that uses every number of `nums` exactly once and
evaluates to `target`.

The expression is never `eval`ed: it must consist of whitelisted characters, parse as a Python expression, and its
syntax tree may hold only integer literals, + - * / and parentheses (no unary minus, no **, no //). Its literals must
be exactly the multiset `nums` before anything is evaluated; evaluation is exact (fractions), division by zero and
intermediate values beyond MAX_MAGNITUDE score 0.0.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral
from typing import Any

from rewards._registry import register
from rewards._text import AnswerPlacement, check_answer_tags

# Longest expression (characters, stripped) that is parsed: six numbers with operators and parentheses fit in 60.
MAX_EXPRESSION_CHARS = 200
# Largest absolute numerator or denominator an intermediate result may reach.
MAX_MAGNITUDE = 10**15
# Most numbers a row of `nums` may hold.
MAX_NUMS = 64

_EXPRESSION_CHARS = re.compile(r"[0-9+\-*/() ]+")
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div)


class _Unscorable(Exception):
    """Evaluation hit a division by zero or a value beyond MAX_MAGNITUDE."""


@dataclass(frozen=True)
class CountdownOptions(AnswerPlacement):
    """correct: the score of an expression that uses every number once and hits the target. well_formed: partial
    credit for one that uses every number once but evaluates to something else (0.0 = none). answer_tag: the answer
    block's tag name. think_tag: the thinking block's tag name; only an answer after the thinking counts.
    answer_in_think: count the one answer block even inside (or before) the thinking."""

    correct: float = 1.0
    well_formed: float = 0.0
    answer_tag: str = "answer"
    think_tag: str = "think"
    answer_in_think: bool = False

    def __post_init__(self) -> None:
        check_answer_tags(self.answer_tag, self.think_tag)
        if self.correct <= 0:
            raise ValueError(f"correct must be > 0, got {self.correct}")
        if not 0 <= self.well_formed < self.correct:
            raise ValueError(
                f"well_formed must be >= 0 and below correct ({self.correct}), got {self.well_formed}: it is partial "
                "credit for a well-formed but wrong expression"
            )


def parse_expression(expression: str) -> tuple[ast.Expression, list[int]] | None:
    """The syntax tree and integer literals of an allowed expression, or None when it is not one."""
    if len(expression) > 4 * MAX_EXPRESSION_CHARS:  # before splitting: a 1 MB block is not worth a pass
        return None
    expression = " ".join(expression.split())  # a line break inside the expression is layout, not syntax
    if not expression or len(expression) > MAX_EXPRESSION_CHARS or not _EXPRESSION_CHARS.fullmatch(expression):
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # e.g. "1 +", "007", too many parentheses
        return None
    literals: list[int] = []
    for node in ast.walk(tree):  # iterative: no recursion limit to hit
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
        elif not isinstance(node, _ALLOWED_NODES):
            return None
    return tree, literals


def _value(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    assert isinstance(node, ast.BinOp)  # parse_expression admitted nothing else
    left, right = _value(node.left), _value(node.right)
    if isinstance(node.op, ast.Add):
        result = left + right
    elif isinstance(node.op, ast.Sub):
        result = left - right
    elif isinstance(node.op, ast.Mult):
        result = left * right
    else:
        if right == 0:
            raise _Unscorable("division by zero")
        result = left / right
    if abs(result.numerator) > MAX_MAGNITUDE or result.denominator > MAX_MAGNITUDE:
        raise _Unscorable("value too large")
    return result


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an allowed expression; None when it is not allowed, divides by zero or grows too large."""
    parsed = parse_expression(expression)
    if parsed is None:
        return None
    try:
        return _value(parsed[0].body)
    except (_Unscorable, RecursionError):
        return None


def _numbers(row: Any) -> list[int] | None:
    """A row of `nums` as a list of ints, or None when it is not one (a list, tuple or array of integers)."""
    if hasattr(row, "tolist"):  # numpy array / torch tensor
        row = row.tolist()
    if isinstance(row, str | bytes) or not isinstance(row, Sequence) or not 0 < len(row) <= MAX_NUMS:
        return None
    if not all(isinstance(number, Integral) and not isinstance(number, bool) for number in row):
        return None
    return [int(number) for number in row]


def _target(value: Any) -> Fraction | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return Fraction(int(value))
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return Fraction(repr(value))
    if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]{1,18}", value.strip()):
        return Fraction(int(value))
    return None


def countdown_answer_value(block: str, row: Mapping[str, Any]) -> Fraction | None:
    """The value of an answer block that uses every number of the row's `nums` once (what majority votes count), or
    None when it is no such expression."""
    parsed = parse_expression(block)
    numbers = _numbers(row.get("nums"))
    if parsed is None or numbers is None or sorted(parsed[1]) != sorted(numbers):
        return None
    return evaluate(block)


@register(
    "countdown_equation",
    options=CountdownOptions,
    role="accuracy",
    task="countdown",
    columns={"nums": "the numbers to use, e.g. [44, 19, 35]", "target": "the value to reach, e.g. 98"},
    full_credit={"correct": 1.0, "well_formed": 0.0},
    answer_value=countdown_answer_value,
)
def countdown_equation(text: str, nums: Any, target: Any, options: CountdownOptions) -> float | None:
    """1.0 when the one `<answer>` block after the thinking is an expression over + - * / and parentheses that uses
    every number of the `nums` column exactly once and equals the `target` column; 0.0 otherwise; None when nums or
    target is malformed.

    >>> nums, target = [[44, 19, 35]], [98]
    >>> countdown_equation(["<think>44 + 19 = 63</think><answer>44 + 19 + 35</answer>"], nums=nums, target=target)
    [1.0]
    >>> countdown_equation(["<answer>(44 + 19) * 35</answer>"], nums=nums, target=target)  # uses every number, 2205
    [0.0]
    >>> countdown_equation(["<answer>44 + 19 + 35 + 0</answer>"], nums=nums, target=target)  # a number not given
    [0.0]
    """
    numbers, goal = _numbers(nums), _target(target)
    if numbers is None or goal is None:
        return None
    block = options.final_answer(text)
    if block is None:
        return 0.0
    parsed = parse_expression(block)
    if parsed is None:
        return 0.0
    tree, literals = parsed
    if sorted(literals) != sorted(numbers):
        return 0.0
    try:
        value = _value(tree.body)
    except (_Unscorable, RecursionError):
        return 0.0
    return options.correct if value == goal else options.well_formed
