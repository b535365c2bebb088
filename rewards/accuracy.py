"""Answer rewards for GSM8K-style problems: `gsm8k_accuracy` (the number in the answer block against the gold answer)
and `integer_answer` (the answer block holds an integer).

Numbers compare exactly, as fractions, after normalising how people and models write them: "1,000", "$18", "\\$18",
"18.00", "18 dollars", "-5", "3/4", "\\frac{3}{4}", "\\boxed{18}", "$18$", "18\\%", "The answer is 18", a trailing
period. This grammar is the fast path: microseconds per answer, no dependency.

An answer outside the grammar scores 0.0 by default: an arithmetic expression is not an answer (crediting "12 + 7"
would teach a model to leave the arithmetic to the verifier). With `math_verify: true` such answers go to math-verify,
which credits equivalent expressions and LaTeX the grammar does not read. It runs without its signal-based timeout
(that timeout raises outside the main thread), so a guard on the answer (short ASCII, whitelisted LaTeX, no powers or
factorials, a few numbers) is what bounds its time: math-verify's LaTeX parser took 1 to 300 ms per guarded answer
on this 2-core machine, so that option gives up the fast path's speed bound.
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

from rewards._text import check_answer_tags, column, final_answer, guarded, texts_of

# Longest answer block (characters, after stripping whitespace) that is parsed at all; a GSM8K answer is a number.
MAX_ANSWER_CHARS = 256
# Guard for the optional math-verify fallback: sympy only ever sees short arithmetic over a few numbers.
MAX_FALLBACK_CHARS = 64
MAX_FALLBACK_NUMBERS = 4
MAX_FALLBACK_BRACE_DEPTH = 3

# Wrappers peeled off the whole answer before the number grammar applies: (opening, closing).
_WRAPPERS = (
    ("\\boxed{", "}"),
    ("\\textbf{", "}"),
    ("\\mathbf{", "}"),
    ("\\(", "\\)"),
    ("\\[", "\\]"),
    ("$", "$"),
)

# One number as people write it, ASCII digits only (a unicode digit is not an answer). Digit runs are bounded so
# that int() stays cheap; the thousands form ("1,000", LaTeX "1{,}000" or "1\,000") needs groups of exactly three
# after a first group of 1-3 digits that does not start with 0 ("0,500" is not 500: it reads as a decimal comma).
_NUMBER = re.compile(
    r"""
    (?:[A-Za-z][A-Za-z ]{0,40}(?::|=|[ ]is)[ ]*)?           # a label: "The answer is", "x =", "Total:"
    (?P<sign>[-+])?[ ]*
    (?:\\?\$[ ]*(?P<sign_after_currency>[-+])?[ ]*)?   # "$", "\$"; "-$5" and "$-5" both read -5
    (?:
        \\[dt]?frac[ ]*\{[ ]*(?P<frac_sign>-)?[ ]*(?P<frac_num>[0-9]{1,40})[ ]*\}
                      [ ]*\{[ ]*(?P<frac_den>[0-9]{1,40})[ ]*\}
      | (?P<num>[0-9]{1,40})[ ]*/[ ]*(?P<den>[0-9]{1,40})
      | (?P<int>[1-9][0-9]{0,2}(?:(?:,|\{,\}|\\,|\\!)[0-9]{3}){1,13}|[0-9]{1,40})(?:\.(?P<dec>[0-9]{1,40}))?
      | \.(?P<dec_only>[0-9]{1,40})
    )
    [ ]*                                                      # a unit: %, words, \text{words}
    (?:
        \\?%
      | \\(?:text|mbox|mathrm)[ ]*\{[ ]*(?P<latex_unit>[A-Za-z][A-Za-z ]{0,40})\}
      | (?P<unit>[A-Za-z][A-Za-z ]{0,40})
    )?
    [ ]*
    """,
    re.VERBOSE,
)

# Words after a number that change its value rather than name its unit ("m" stays a unit: metres).
_MAGNITUDE_WORDS = frozenset({"hundred", "thousand", "million", "billion", "trillion", "dozen", "k", "bn"})


def _peel(text: str) -> str:
    """`text` without surrounding whitespace, a trailing period and whole-answer wrappers ($..$, \\boxed{..})."""
    text = text.strip()
    for _ in range(4):  # wrappers nest at most a few deep in real answers
        before = text
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        for opening, closing in _WRAPPERS:
            if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
                text = text[len(opening) : -len(closing)].strip()
        if text == before:
            break
    return text


def parse_number(text: str) -> Fraction | None:
    """The value of `text` when it is one number as people write it (see the module docstring), else None."""
    if len(text) > MAX_ANSWER_CHARS + 16:
        return None
    text = _peel(text.replace("\u2212", "-"))  # U+2212 MINUS SIGN, as typeset math writes it
    if not text.isascii():
        return None
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    unit = match["unit"] or match["latex_unit"]
    if unit and not _MAGNITUDE_WORDS.isdisjoint(unit.lower().split()):
        return None  # "18 thousand" is not 18
    signs = [sign for sign in (match["sign"], match["sign_after_currency"], match["frac_sign"]) if sign]
    if len(signs) > 1:
        return None
    negative = signs == ["-"]
    if match["frac_num"] is not None or match["num"] is not None:
        numerator = int(match["frac_num"] or match["num"])
        denominator = int(match["frac_den"] or match["den"])
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
    elif match["dec_only"] is not None:
        value = Fraction(int(match["dec_only"]), 10 ** len(match["dec_only"]))
    else:
        value = Fraction(int(re.sub(r"[^0-9]", "", match["int"])))
        if match["dec"]:
            value += Fraction(int(match["dec"]), 10 ** len(match["dec"]))
    return -value if negative else value


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


# --- math-verify fallback -------------------------------------------------------------------------------------------

# LaTeX commands math-verify may see; anything else (\sum, \binom, \sqrt, ^, !) can make sympy compute for minutes.
_FALLBACK_COMMANDS = re.compile(r"\\(?:[dt]?frac|boxed|left|right|cdot|times|div|[$%,; ])")
_FALLBACK_UNIT = re.compile(r"\\(?:text|mbox|mathrm)[ ]*\{[A-Za-z ]{0,40}\}")
_FALLBACK_CHARS = re.compile(r"[0-9 +\-*/.,$%(){}=]*")
_DIGIT_RUN = re.compile(r"[0-9]+")
# A well-formed thousands number inside an expression ("1,000 \\times 2"): its commas are dropped before math-verify
# sees it. Any other comma between digits ("0,5", "2,8") is a decimal comma, which math-verify would read as a point.
_THOUSANDS_IN_EXPRESSION = re.compile(r"(?<![0-9.,])[1-9][0-9]{0,2}(?:,[0-9]{3})+(?![0-9,])")
_DECIMAL_COMMA = re.compile(r"[0-9],[0-9]")


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
    factorials, decimal commas or letters outside unit text."""
    if len(answer) > MAX_FALLBACK_CHARS or not answer.isascii() or "**" in answer:
        return False
    if _DECIMAL_COMMA.search(_THOUSANDS_IN_EXPRESSION.sub("0", answer)):
        return False  # "0,5" is not 0.5 here, as in the number grammar
    bare = _FALLBACK_COMMANDS.sub(" ", _FALLBACK_UNIT.sub(" ", answer))
    if not _FALLBACK_CHARS.fullmatch(bare) or len(_DIGIT_RUN.findall(bare)) > MAX_FALLBACK_NUMBERS:
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


# --- gsm8k_accuracy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gsm8kAccuracyOptions:
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


def _accuracy(text: str, gold: Any, options: Gsm8kAccuracyOptions) -> float | None:
    expected = gold_value(gold)
    if expected is None:
        return None
    block = final_answer(text, options.answer_tag, options.think_tag, options.answer_in_think)
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


def score_gsm8k_accuracy(
    completions: Any, columns: Mapping[str, Any], options: Gsm8kAccuracyOptions, name: str = "gsm8k_accuracy"
) -> list[float | None]:
    texts = texts_of(completions, name)
    golds = column(columns, "answer", len(texts), name, "the gold answer, e.g. '72' or a GSM8K '#### 72' solution")
    return guarded(name, lambda text, gold: _accuracy(text, gold, options), texts, golds)


_GSM8K_ACCURACY_DEFAULTS = Gsm8kAccuracyOptions()


def gsm8k_accuracy(completions: Any, **kwargs: Any) -> list[float | None]:
    """1.0 when the number in the one `<answer>` block equals the gold `answer` column, 0.0 when it differs or is
    missing (or there are several answer blocks), None when the gold does not parse as a number."""
    return score_gsm8k_accuracy(completions, kwargs, _GSM8K_ACCURACY_DEFAULTS)


# --- integer_answer ---------------------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[-+\u2212]?(?:[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]+)")


@dataclass(frozen=True)
class IntegerAnswerOptions:
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


def _holds_integer(text: str, options: IntegerAnswerOptions) -> float:
    block = final_answer(text, options.answer_tag, options.think_tag, options.answer_in_think)
    if block is None:
        return 0.0
    answer = block.strip()
    return options.value if len(answer) <= MAX_ANSWER_CHARS and _INTEGER.fullmatch(answer) else 0.0


def score_integer_answer(
    completions: Any, columns: Mapping[str, Any], options: IntegerAnswerOptions, name: str = "integer_answer"
) -> list[float | None]:
    texts = texts_of(completions, name)
    return guarded(name, lambda text: _holds_integer(text, options), texts)


_INTEGER_ANSWER_DEFAULTS = IntegerAnswerOptions()


def integer_answer(completions: Any, **kwargs: Any) -> list[float | None]:
    """1.0 when the one `<answer>` block holds an integer ("42", "-7", "1,000"), else 0.0."""
    return score_integer_answer(completions, kwargs, _INTEGER_ANSWER_DEFAULTS)
