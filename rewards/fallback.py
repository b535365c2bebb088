"""The optional math-verify fallback of `gsm8k_accuracy` (`math_verify: true`): an answer outside the number grammar
goes to math-verify when a guard lets it.

math-verify runs without its signal-based timeout (that timeout raises outside the main thread), so the guard is
what bounds its time: short ASCII, whitelisted LaTeX, no powers or factorials, a few numbers. On this 2-core machine
math-verify's LaTeX parser took 1 to 300 ms per guarded answer. The guard also keeps the grammar's refusals: no
decimal comma ("0,5"), no magnitude word ("\\text{thousand}"), and no list of candidates ("18 19", "18, 19",
"$18$ $19$", "18 = 19"), which math-verify would otherwise read as one of its numbers.

Accepted with the option (gold 10): `9+1`, `$9+1$`, `\\(9+1\\)`, `\\[9+1\\]`, `$$9+1$$`, `2 \\times 5`,
`\\frac{20}{2}`, `1,000 \\div 100`. Refused: `9+2` (wrong), `\\(9\\) + \\(1\\)` (two delimited parts),
`\\sqrt{100}`, `10^{1}`, `10!` (outside the guard), `9 10`, `9, 10`, `10 = 10` (candidates, not one expression).
"""

from __future__ import annotations

import functools
import itertools
import re
from fractions import Fraction
from typing import Any

from rewards.written_numbers import MAGNITUDE_WORDS, TEXT_COMMANDS

# Guard for the fallback: sympy only ever sees short arithmetic over a few numbers.
MAX_FALLBACK_CHARS = 64
MAX_FALLBACK_NUMBERS = 4
MAX_FALLBACK_BRACE_DEPTH = 3

# LaTeX commands math-verify may see; anything else (\sum, \binom, \sqrt, ^, !) can make sympy compute for minutes.
_FALLBACK_COMMANDS = re.compile(r"\\(?:[dtc]?frac|boxed|left|right|cdot|times|div|[$%,; ])")
_FALLBACK_UNIT = re.compile(rf"\\(?:{TEXT_COMMANDS})[ ]*\{{([A-Za-z ]{{0,40}})\}}")
_FALLBACK_CHARS = re.compile(r"[0-9 +\-*/.,$%(){}]*")
_DIGIT_RUN = re.compile(r"[0-9]+")
# A well-formed thousands number inside an expression ("1,000 \\times 2"): its commas are dropped before math-verify
# sees it. Any other comma between digits ("0,5", "2,8") is a decimal comma, which math-verify would read as a point.
_THOUSANDS_IN_EXPRESSION = re.compile(r"(?<![0-9.,])[1-9][0-9]{0,2}(?:,[0-9]{3})+(?![0-9,])")
_DECIMAL_COMMA = re.compile(r"[0-9],[0-9]")
# Between two numbers of one expression: an operator (or a fraction's "}{"), and no list separator.
_OPERATOR_COMMANDS = re.compile(r"\\(?:times|cdot|div)(?![A-Za-z])")
_OTHER_COMMANDS = re.compile(r"\\(?:[A-Za-z]+|.)")
_NUMBER_TOKEN = re.compile(r"[0-9]*\.?[0-9]+")
_JOINED = re.compile(r"[^,;=$]*(?:[-+*/]|\}[ ]*\{)[^,;=$]*")


def _one_expression(answer: str) -> bool:
    """Whether every two neighbouring numbers of `answer` are joined by an operator: "2 \\times 9", "71 + 1" and
    "\\frac{1}{3}" are one expression; "18 19", "18, 19", "$18$ $19$" and "$18$19" are a list of candidates."""
    text = _THOUSANDS_IN_EXPRESSION.sub("0", answer)
    text = _OTHER_COMMANDS.sub(" ", _OPERATOR_COMMANDS.sub("*", _FALLBACK_UNIT.sub(" ", text)))
    tokens = list(_NUMBER_TOKEN.finditer(text))
    return all(_JOINED.fullmatch(text[a.end() : b.start()]) for a, b in itertools.pairwise(tokens))


@functools.cache
def _math_verify() -> tuple[Any, Any]:
    """math-verify's (parse, verify), imported on first use (about 0.6 s) and with its no-timeout warning silenced:
    running without the signal timeout is deliberate here (see the module docstring)."""
    import math_verify
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify.parse, math_verify.verify


def fallback_allowed(answer: str) -> bool:
    """Whether math-verify may see `answer`: short ASCII arithmetic with a few numbers, whitelisted LaTeX, no powers,
    factorials, decimal commas, "=", letters outside unit text or magnitude words in it, and numbers joined by an
    operator (never listed side by side: math-verify would pick one of "18 19", "18, 19" or "$18$ $19$")."""
    if len(answer) > MAX_FALLBACK_CHARS or not answer.isascii() or "**" in answer:
        return False
    if _DECIMAL_COMMA.search(_THOUSANDS_IN_EXPRESSION.sub("0", answer)):
        return False  # "0,5" is not 0.5 here, as in the number grammar
    for unit in _FALLBACK_UNIT.findall(answer):
        if not MAGNITUDE_WORDS.isdisjoint(unit.lower().split()):
            return False  # "\\frac{1}{3} \\text{thousand}" is not a third
    bare = _FALLBACK_COMMANDS.sub(" ", _FALLBACK_UNIT.sub(" ", answer))
    if not _FALLBACK_CHARS.fullmatch(bare) or len(_DIGIT_RUN.findall(bare)) > MAX_FALLBACK_NUMBERS:
        return False
    if not _one_expression(answer):
        return False
    depth = 0
    for char in answer:
        depth += (char == "{") - (char == "}")
        if depth > MAX_FALLBACK_BRACE_DEPTH or depth < 0:
            return False
    return depth == 0


@functools.lru_cache(maxsize=4096)
def _parsed_gold(value: Fraction) -> Any:
    parse, _ = _math_verify()
    latex = str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return parse(f"${latex}$", parsing_timeout=None)


# Math delimiters around a whole answer: math-verify reads each of them, so the fallback looks inside them.
_MATH_DELIMITERS = (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$"))


def math_body(answer: str) -> str:
    """`answer` without one pair of math delimiters around all of it: `\\(9+1\\)`, `\\[9+1\\]`, `$$9+1$$`, `$9+1$` all
    give "9+1"; `\\(9\\) + \\(1\\)` is not wrapped as a whole and stays as it is (and the guard refuses it)."""
    answer = answer.strip()
    for opening, closing in _MATH_DELIMITERS:
        if len(answer) > len(opening) + len(closing) and answer.startswith(opening) and answer.endswith(closing):
            return answer[len(opening) : -len(closing)].strip()
    return answer


def math_verify_equal(answer: str, gold: Fraction) -> bool:
    """math-verify's verdict on `answer` (already through `math_body` and `fallback_allowed`) against `gold`."""
    parse, verify = _math_verify()
    if "\\" in answer and "$" not in answer.replace("\\$", ""):
        answer = f"${answer}$"  # math-verify reads LaTeX only between math delimiters
    parsed = parse(answer, parsing_timeout=None)
    return bool(parsed) and bool(verify(_parsed_gold(gold), parsed, timeout_seconds=None))
