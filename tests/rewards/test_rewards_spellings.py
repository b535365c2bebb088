"""gsm8k_accuracy on the spellings models and other graders use: each table holds right spellings and near misses,
and both paths (the number grammar alone, and with the math-verify fallback) must give the same verdict."""

from __future__ import annotations

import pytest

import rewards
from rewards import _text


@pytest.fixture(autouse=True)
def no_caught_errors():
    _text.caught_errors.clear()
    yield
    assert not _text.caught_errors, f"a scorer raised: {dict(_text.caught_errors)}"


def scores(answer: str, gold: str) -> tuple[float | None, float | None]:
    """(grammar only, with math_verify: true) for `answer` in a laid-out completion."""
    text = f"<think>\n9 * 2 = 18\n</think>\n<answer>{answer}</answer>"
    grammar = rewards.get("gsm8k_accuracy")([text], answer=[gold])[0]
    with_math_verify = rewards.get("gsm8k_accuracy", math_verify=True)([text], answer=[gold])[0]
    return grammar, with_math_verify


def table(cases):
    return pytest.mark.parametrize(
        ("answer", "gold", "expected"), [case[1:] for case in cases], ids=[case[0] for case in cases]
    )


MARKDOWN_EMPHASIS = [
    ("bold", "**18**", "18", 1.0),
    ("italic", "*18*", "18", 1.0),
    ("underscore bold", "__18__", "18", 1.0),
    ("bold after a label", "The answer is **18**", "18", 1.0),
    ("bold dollars", "**$1,000**", "1000", 1.0),
    ("bold wrong number", "**19**", "18", 0.0),
    ("two bold candidates", "**18** or **19**", "18", 0.0),
    ("two italic candidates", "*18* *19*", "18", 0.0),
    ("unbalanced bold", "**18", "18", 0.0),
    ("bold around part of the number", "**1**8", "18", 0.0),
]


@table(MARKDOWN_EMPHASIS)
def test_markdown_emphasis(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


GSM8K_MARKER = [
    ("marker and number", "#### 72", "72", 1.0),
    ("marker and thousands", "#### 1,000", "1000", 1.0),
    ("marker without a space", "####72", "72", 1.0),
    ("marker and wrong number", "#### 73", "72", 0.0),
    ("two markers are two candidates", "#### 72 #### 73", "72", 0.0),
    ("a markdown heading is not the marker", "### 72", "72", 0.0),
]


@table(GSM8K_MARKER)
def test_gsm8k_marker_inside_the_answer(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


SPACED_THOUSANDS = [
    ("space", "1 000", "1000", 1.0),
    ("thin space", "1\u2009000", "1000", 1.0),
    ("narrow no-break space", "1\u202f000", "1000", 1.0),
    ("no-break space", "1\u00a0000", "1000", 1.0),
    ("LaTeX control space", "1\\ 000", "1000", 1.0),
    ("several groups", "12 345 678", "12345678", 1.0),
    ("a group of two", "1 00", "100", 0.0),
    ("a group of four", "1 0000", "10000", 0.0),
    ("mixed separators", "1 000,000", "1000000", 0.0),
    ("a first group led by 0", "0 500", "500", 0.0),
    ("two separate numbers", "18 19", "18", 0.0),
    ("two numbers, the second right", "18 19", "19", 0.0),
    ("two spaces are not a separator", "1  000", "1000", 0.0),
]


@table(SPACED_THOUSANDS)
def test_thousands_separated_by_a_space(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


CURRENCY_AFTER = [
    ("dollar after cents", "1,000.99$", "1000.99", 1.0),
    ("dollar after", "18$", "18", 1.0),
    ("dollar after a space", "18 $", "18", 1.0),
    ("dollar before, as before", "$1,000.99", "1000.99", 1.0),
    ("dollar after a wrong number", "19$", "18", 0.0),
    ("a dollar between two numbers", "$18$19", "18", 0.0),
]


@table(CURRENCY_AFTER)
def test_currency_sign_after_the_number(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


FRACTIONS = [
    ("brace-less", "\\frac13", "1/3", 1.0),
    ("brace-less numerator", "\\frac3{3}", "1", 1.0),
    ("brace-less denominator", "\\frac{1}3", "1/3", 1.0),
    ("continued-fraction command", "\\cfrac{1}{3}", "1/3", 1.0),
    ("display fraction", "\\dfrac{1}{3}", "1/3", 1.0),
    ("text fraction, brace-less", "\\tfrac13", "1/3", 1.0),
    ("left and right parentheses", "\\left( \\frac{1}{3} \\right)", "1/3", 1.0),
    ("plain parentheses", "(1/3)", "1/3", 1.0),
    ("brace-less is one digit each", "\\frac123", "1/3", 0.0),
    ("brace-less, not 12/3 either", "\\frac123", "4", 0.0),
    ("wrong brace-less fraction", "\\frac14", "1/3", 0.0),
    ("two fractions", "\\frac13 \\frac13", "1/3", 0.0),
]


@table(FRACTIONS)
def test_brace_less_and_display_fractions(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


LATEX_UNITS = [
    ("textbf unit", "\\frac{1}{3} \\textbf{meters}", "1/3", 1.0),
    ("mathrm unit", "\\frac{1}{3} \\mathrm{meters}", "1/3", 1.0),
    ("textit unit", "18 \\textit{cm}", "18", 1.0),
    ("mathbf unit", "18 \\mathbf{kg}", "18", 1.0),
    ("text unit, as before", "18 \\text{ dollars}", "18", 1.0),
    ("a magnitude word is not a unit", "\\frac{1}{3} \\textbf{thousand}", "1/3", 0.0),
    ("a number after the unit", "18 \\textbf{meters} 19", "18", 0.0),
    ("a unit around two numbers", "18 \\text{ or } 19", "19", 0.0),
]


@table(LATEX_UNITS)
def test_units_in_latex_text_commands(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


UNIT_OUTSIDE_DELIMITERS = [
    ("percent sign", "$28$ %", "28", 1.0),
    ("percent word", "$28$ percent", "28", 1.0),
    ("boxed, then pct", "$\\boxed{28}$ pct", "28", 1.0),
    ("escaped percent after parentheses delimiters", "\\(28\\)\\%", "28", 1.0),
    ("escaped percent after dollars", "$28$\\%", "28", 1.0),
    ("a unit word after dollars", "$1,000$ dollars", "1000", 1.0),
    ("two percentages", "$28$ % $29$ %", "28", 0.0),
    ("a magnitude word after the delimiters", "$28$ thousand", "28", 0.0),
    ("two delimited candidates", "$28$ or $29$", "28", 0.0),
    ("ten times too large", "$280$ %", "28", 0.0),
]


@table(UNIT_OUTSIDE_DELIMITERS)
def test_percent_or_unit_outside_the_math_delimiters(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


STILL_WRONG = [
    ("a digit too many", "28", "280", 0.0),
    ("a digit too few", "280", "28", 0.0),
    ("a European decimal is not a thousands number", "2,8", "28", 0.0),
    ("a European decimal is not a decimal", "2,8", "2.8", 0.0),
    ("0,5 is not one half", "0,5", "0.5", 0.0),
    ("two numbers", "18 19", "18", 0.0),
    ("two numbers with a comma", "18, 19", "19", 0.0),
    ("two numbers with a comma and spaces", "18 , 19", "19", 0.0),
    ("two numbers with a semicolon", "18; 19", "18", 0.0),
    ("two numbers on two lines", "18\n19", "19", 0.0),
    ("two delimited numbers", "$18$ $19$", "19", 0.0),
    ("two boxed numbers", "\\boxed{18} \\boxed{19}", "19", 0.0),
    ("an equation of two numbers", "18 = 19", "19", 0.0),
    ("the same number twice", "18 and 18", "18", 0.0),
    ("a set of candidates", "\\{18, 19\\}", "18", 0.0),
    ("a list of candidates", "[18, 19]", "18", 0.0),
    ("a free sentence", "I think it is 18 but maybe 19", "18", 0.0),
    ("words", "eighteen", "18", 0.0),
]


@table(STILL_WRONG)
def test_what_must_stay_wrong(answer, gold, expected):
    assert scores(answer, gold) == (expected, expected)


CANDIDATE_LISTS = [
    # every accepted spelling, used to list a wrong and the right candidate: never credited
    "**17** **18**",
    "#### 17\n#### 18",
    "17 18",
    "17$ 18$",
    "\\frac{17}{1} \\frac{18}{1}",
    "17 \\textbf{m} 18 \\textbf{m}",
    "$17$ % $18$ %",
    "(17) (18)",
    "17 or 18",
    "\\boxed{17}, \\boxed{18}",
    "*17* or *18*",
]


@pytest.mark.parametrize("answer", CANDIDATE_LISTS)
def test_a_list_of_candidates_scores_zero_on_both_paths(answer):
    assert scores(answer, "18") == (0.0, 0.0)
