"""countdown_equation: tables of cases named by behaviour, and the attacks an eval()-based reward falls to."""

from __future__ import annotations

import pytest

import rewards
from rewards import _text
from rewards.countdown import evaluate

NUMS = [44, 19, 35]
TARGET = 98  # 44 + 19 + 35


@pytest.fixture(autouse=True)
def no_caught_errors():
    _text.caught_errors.clear()
    yield
    assert not _text.caught_errors, f"a scorer raised: {dict(_text.caught_errors)}"


def answer(expression: str) -> str:
    return f"<think>\nTry adding.\n</think>\n<answer>{expression}</answer>"


COUNTDOWN_CASES = [
    # (behaviour, expression, expected without partial credit, expected with well_formed=0.1)
    ("uses every number once and hits the target", "44 + 19 + 35", 1.0, 1.0),
    ("parentheses and any order", "(35 + 19) + 44", 1.0, 1.0),
    ("whitespace inside", " 44+19\n+35 ", 1.0, 1.0),
    ("exact division", "(44 * 19 + 35 * 19) / 19 - 19 * 0", 0.0, 0.0),  # uses numbers twice and a 0
    ("well-formed but wrong value", "44 + 19 - 35", 0.0, 0.1),
    ("a number left out", "44 + 19", 0.0, 0.0),
    ("a number used twice", "44 + 19 + 35 + 35", 0.0, 0.0),
    ("a number not in nums", "44 + 19 + 36 - 1", 0.0, 0.0),
    ("an equation with a right-hand side", "44 + 19 + 35 = 98", 0.0, 0.0),
    ("unary minus is not allowed", "-44 + 19 + 35 + 88", 0.0, 0.0),
    ("power is not allowed", "44 ** 19 ** 35", 0.0, 0.0),
    ("floor division is not allowed", "44 // 19 + 35", 0.0, 0.0),
    ("decimals are not allowed", "44.0 + 19 + 35", 0.0, 0.0),
    ("division by zero", "44 / (35 - 35) + 19", 0.0, 0.0),
    ("division by zero with the right numbers", "44 / (19 - 19) + 35", 0.0, 0.0),
    ("empty answer", "", 0.0, 0.0),
    ("prose", "add them all", 0.0, 0.0),
    ("unbalanced parentheses", "(44 + 19 + 35", 0.0, 0.0),
    ("x for times", "44 x 19 + 35", 0.0, 0.0),
]


@pytest.mark.parametrize(
    ("expression", "expected", "expected_partial"),
    [case[1:] for case in COUNTDOWN_CASES],
    ids=[case[0] for case in COUNTDOWN_CASES],
)
def test_countdown_equation(expression, expected, expected_partial):
    completions = [answer(expression)]
    assert rewards.get("countdown_equation")(completions, nums=[NUMS], target=[TARGET]) == [expected]
    partial = rewards.get("countdown_equation", well_formed=0.1)
    assert partial(completions, nums=[NUMS], target=[TARGET]) == [expected_partial]
    conversational = [[{"role": "assistant", "content": answer(expression)}]]
    assert rewards.get("countdown_equation")(conversational, nums=[NUMS], target=[TARGET]) == [expected]


def test_countdown_fractions_are_exact():
    # (6 / 4) * 2 = 3 exactly; floating point would give the same here, the point is no tolerance is needed
    assert rewards.get("countdown_equation")([answer("6 / 4 * 2")], nums=[[6, 4, 2]], target=[3]) == [1.0]
    # 1/3 * 3 is exactly 1 as a fraction
    assert rewards.get("countdown_equation")([answer("1 / 3 * 3")], nums=[[1, 3, 3]], target=[1]) == [1.0]


ATTACKS = [
    "9**9**9",
    "__import__('os').system('echo pwned')",
    "(1/0)",
    "44 + 19 + 35 if True else 0",
    "[44, 19, 35]",
    "lambda: 44 + 19 + 35",
    "().__class__.__bases__[0].__subclasses__()",
    "exec('x=1')",
    "open('/etc/passwd').read()",
    "0x2c + 19 + 35",
    "1_0 + 88",
    "(" * 150 + "44 + 19 + 35" + ")" * 150,
    "(" * 300 + "44" + ")" * 300,
    "+".join(["1"] * 5000),
    "99999999999999999999 * 99999999999999999999 * 99999999999999999999",
    "44 + 19 + 35\x00",
    "44 + 19 + 35;import os",
    "٤٤ + ١٩ + ٣٥",
]


@pytest.mark.parametrize("expression", ATTACKS, ids=[attack[:30] for attack in ATTACKS])
def test_countdown_attacks_score_zero(expression):
    scores = rewards.get("countdown_equation", well_formed=0.5)([answer(expression)], nums=[NUMS], target=[TARGET])
    assert scores == [0.0]


def test_huge_intermediate_values_score_zero():
    nums = [10**9, 10**9, 10**9, 1]
    expression = "1000000000 * 1000000000 * 1000000000 / 1"
    assert evaluate(expression) is None
    scores = rewards.get("countdown_equation", well_formed=0.5)([answer(expression)], nums=[nums], target=[1])
    assert scores == [0.0]


MALFORMED_ROWS = [
    ("nums not a list", "44, 19, 35", TARGET),
    ("nums empty", [], TARGET),
    ("nums with a float", [44.0, 19, 35], TARGET),
    ("nums with a bool", [True, 19, 35], TARGET),
    ("target missing", NUMS, None),
    ("target is text", NUMS, "ninety-eight"),
]


@pytest.mark.parametrize(
    ("nums", "target"), [case[1:] for case in MALFORMED_ROWS], ids=[case[0] for case in MALFORMED_ROWS]
)
def test_malformed_rows_are_unscorable(nums, target):
    assert rewards.get("countdown_equation")([answer("44 + 19 + 35")], nums=[nums], target=[target]) == [None]


def test_target_as_text_or_tuple_nums():
    scores = rewards.get("countdown_equation")([answer("44 + 19 + 35")], nums=[(44, 19, 35)], target=["98"])
    assert scores == [1.0]


def test_countdown_needs_its_columns():
    with pytest.raises(ValueError, match="column 'nums'"):
        rewards.get("countdown_equation")([answer("1")], target=[1])
    with pytest.raises(ValueError, match="column 'target'"):
        rewards.get("countdown_equation")([answer("1")], nums=[[1]])


def test_countdown_ignores_unknown_kwargs():
    scores = rewards.get("countdown_equation")(
        [answer("44 + 19 + 35")], nums=[NUMS], target=[TARGET], prompts=["p"], answer=["x"], completion_ids=[[1]]
    )
    assert scores == [1.0]
