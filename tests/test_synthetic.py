"""aha.synthetic: seeded, offline task generators (arithmetic word problems in GSM8K format, Countdown)."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import pytest

from aha.synthetic import arith_splits, countdown_splits, solve_countdown, worked_completion

WORKED_LINE = re.compile(r"^\w+ has (\d+) ([-+*]) (\d+) = (\d+) [\w ]+\.$")
ARITH = dict(n_train=400, n_test=300, seed=3, max_number=15, min_ops=1, max_ops=3, operators="+-*")
COUNTDOWN = dict(n_train=400, n_test=300, seed=3, min_numbers=3, max_numbers=4, max_number=25, max_target=60)


def skeleton(row: dict) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(start, ((op, operand), ...)) recovered from the worked answer, checking each line's arithmetic."""
    reasoning, final = worked_completion(row["answer"])
    steps = []
    start = value = None
    for line in reasoning.splitlines():
        match = WORKED_LINE.match(line)
        assert match, f"worked line not in the expected form: {line!r}"
        before, op, n, after = int(match[1]), match[2], int(match[3]), int(match[4])
        assert value is None or before == value, "a step must start from the previous result"
        assert after == {"+": before + n, "-": before - n, "*": before * n}[op]
        assert after >= 0
        if start is None:
            start = before
        value = after
        steps.append((op, n))
    assert str(value) == final
    return start, tuple(steps)


def test_arith_rows_have_gsm8k_shape_and_correct_worked_steps():
    train, test = arith_splits(**ARITH)
    assert (len(train), len(test)) == (400, 300)
    for row in train + test:
        assert set(row) == {"question", "answer"}
        assert re.search(r"\n#### \d+$", row["answer"])
        assert row["question"].endswith("?")
        start, steps = skeleton(row)
        assert 1 <= start <= 15 and 1 <= len(steps) <= 3


def test_arith_splits_share_no_skeleton_and_no_question():
    train, test = arith_splits(**ARITH)
    assert not {skeleton(r) for r in train} & {skeleton(r) for r in test}
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert len({r["question"] for r in train + test}) == len(train) + len(test)


@pytest.mark.parametrize(
    ("change", "same"),
    [({}, True), ({"seed": 4}, False)],
    ids=["same-seed-same-rows", "other-seed-other-rows"],
)
def test_arith_is_deterministic_for_a_seed(change, same):
    assert (arith_splits(**ARITH) == arith_splits(**{**ARITH, **change})) is same


def test_arith_respects_operators_and_op_counts():
    train, test = arith_splits(n_train=300, n_test=100, seed=0, max_number=9, min_ops=2, max_ops=2, operators="+")
    for row in train + test:
        _, steps = skeleton(row)
        assert [op for op, _ in steps] == ["+", "+"]


def test_arith_one_op_small_numbers_still_fills_300_held_out_rows():
    # about 345 distinct one-step skeletons up to 15: test rows reuse held-out skeletons in other wording
    train, test = arith_splits(n_train=2000, n_test=300, seed=0, max_number=15, min_ops=1, max_ops=1)
    assert not {skeleton(r) for r in train} & {skeleton(r) for r in test}
    assert len({skeleton(r) for r in test}) > 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_ops": 2, "max_ops": 1}, "min_ops <= max_ops"),
        ({"operators": "+/"}, "operators"),
        ({"max_number": 0}, "max_number"),
        ({"test_share": 1.0}, "test_share"),
        ({"max_number": 1, "min_ops": 1, "max_ops": 1, "operators": "+", "n_train": 50}, "too few distinct"),
    ],
    ids=["ops-range-inverted", "unknown-operator", "no-numbers", "all-test", "space-too-small"],
)
def test_arith_rejects_bad_settings_naming_the_rule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        arith_splits(**{**ARITH, **kwargs})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Tom has 3 + 4 = 7 apples.\n#### 7", ("Tom has 3 + 4 = 7 apples.", "7")),
        ("She pays 2*6 = <<2*6=12>>12 dollars.\n#### 12", ("She pays 2*6 = 12 dollars.", "12")),
        ("Total 1000 + 500 = <<1000+500=1500>>1500.\n#### 1,500", ("Total 1000 + 500 = 1500.", "1500")),
        ("#### 5", ("", "5")),
    ],
    ids=["plain", "calculator-annotation-removed", "thousands-separator-removed", "no-reasoning"],
)
def test_worked_completion_splits_reasoning_and_final_number(answer, expected):
    assert worked_completion(answer) == expected


@pytest.mark.parametrize("answer", ["Tom has 7 apples.", "Tom has 7 apples.\n####  "], ids=["no-marker", "empty"])
def test_worked_completion_rejects_answers_without_a_final_number(answer):
    with pytest.raises(ValueError, match="####"):
        worked_completion(answer)


def test_countdown_rows_are_solvable_with_every_number_once():
    train, test = countdown_splits(**COUNTDOWN)
    assert (len(train), len(test)) == (400, 300)
    for row in (train + test)[::7]:
        assert set(row) == {"nums", "target"}
        assert 3 <= len(row["nums"]) <= 4 and all(1 <= n <= 25 for n in row["nums"])
        assert 1 <= row["target"] <= 60
        expression = solve_countdown(row["nums"], row["target"])
        assert expression is not None
        assert sorted(map(int, re.findall(r"\d+", expression))) == sorted(row["nums"])
        # exact evaluation: integer literals become Fractions so division is exact
        assert eval(re.sub(r"(\d+)", r"Fraction(\1)", expression), {"Fraction": Fraction}) == row["target"]


def test_countdown_splits_are_disjoint_distinct_and_deterministic():
    train, test = countdown_splits(**COUNTDOWN)
    key = lambda row: (tuple(sorted(row["nums"])), row["target"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in test}
    assert len({key(r) for r in train + test}) == len(train) + len(test)
    assert countdown_splits(**COUNTDOWN) == (train, test)
    assert countdown_splits(**{**COUNTDOWN, "seed": 4}) != (train, test)


def test_countdown_generates_10k_rows_quickly():
    started = time.perf_counter()
    countdown_splits(n_train=9000, n_test=1000, seed=0, min_numbers=3, max_numbers=4, max_number=99, max_target=100)
    # about 1.1 s here on a loaded 2-core machine; the bound leaves room for contention
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    ("nums", "target", "solvable"),
    [([3, 5], 15, True), ([1, 3, 4, 6], 24, True), ([1, 1], 5, False), ([6, 4, 3], 2, True)],
    ids=["product", "only-through-a-fraction", "unreachable", "three-numbers"],
)
def test_solve_countdown_finds_exact_expressions(nums, target, solvable):
    assert (solve_countdown(nums, target) is not None) is solvable


def test_plain_wording_asks_the_bare_expression_with_worked_lines():
    train, test = arith_splits(n_train=400, n_test=100, seed=0, max_number=20, min_ops=1, max_ops=2, wording="plain")
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        match = re.fullmatch(r"What is (\d+(?: [-+] \d+)+)\?", row["question"])
        assert match, row["question"]
        tokens = match.group(1).split()
        value = int(tokens[0])
        for op, n in zip(tokens[1::2], tokens[2::2], strict=True):
            value = value + int(n) if op == "+" else value - int(n)
        assert row["answer"].endswith(f"\n#### {value}") and value >= 0


def test_unknown_wording_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="wording must be one of story, plain"):
        arith_splits(**{**ARITH, "wording": "poem"})
