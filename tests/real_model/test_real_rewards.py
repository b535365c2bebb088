"""aha.real_rewards.answer_number: pays for tags around a number, never for tags alone; never raises."""

from __future__ import annotations

import pytest

import rewards
from aha.real_rewards import answer_line_accuracy, answer_number, last_number_right


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("<think>\n13 + 9 = 22\n</think>\n<answer>22</answer>", 1.0),
        ("so it is\n<answer>\n-3\n</answer>\n", 1.0),
        ("<answer>1,000</answer>", 1.0),
        ("<answer>0,500</answer>", 0.5),  # a decimal comma is not an integer: only the opened-on-a-number rung
        ("<answer>\n22\nLeo has 22 books.", 0.5),  # opened on a number, never closed
        ("<answer>22</answer> and more text", 0.75),  # text after the block
        ("<answer>22</answer><answer>23</answer>", 0.5),  # two blocks: no answer, but the first starts on a number
        ("<answer> </answer>", 0.0),  # the prompt's empty tags copied
        ("<answer> the number </answer>", 0.0),  # a placeholder copied
        ("<answer>22 apples</answer>", 0.25 + 0.25 * 7 / 8),
        ("<answer>\nNora has 7 - 1 = 6 books.", 0.28125),  # the tag as a heading over an 8-word line
        ("<answer>\n6 books", 0.25 + 0.25 * 7 / 8),  # shorter heading line, more credit
        ("<answer>\nNora has some books.\n7", 0.0),
        ("The answer is 22.", 0.0),
        ("", 0.0),
    ],
)
def test_scores(text, score):
    assert answer_number([text]) == [score]


def test_think_close_option_needs_the_think_block_closed_first():
    assert answer_number(["13 + 9 = 22\n</think>\n<answer>22</answer>"], think_close=True) == [1.0]
    assert answer_number(["13 + 9 = 22\n<answer>22</answer>"], think_close=True) == [0.75]
    assert answer_number(["<answer>22</answer>\n</think>"], think_close=True) == [0.75]


def test_answer_line_accuracy_reads_the_first_line_after_the_tag():
    texts = ["<answer>\nNora has 7 - 1 = 6 books.\nMore 9", "<answer>5</answer>", "no tag 6", "<answer>\nsix"]
    assert answer_line_accuracy(texts, answer=["6", "6", "6", "6"]) == [1.0, 0.0, 0.0, 0.0]
    assert answer_line_accuracy(["<answer>6"], answer=["not a number"]) == [None]
    assert answer_line_accuracy([None, "<answer>" + "9" * 5000], answer=["6", "6"]) == [0.0, 0.0]


def test_conversational_completions_and_hostile_input():
    conversation = [[{"role": "assistant", "content": "<answer>7</answer>"}]]
    assert answer_number(conversation) == [1.0]
    assert answer_number([None, 3, {"x": 1}, "<answer>" * 10_000 + "9"]) == [0.0, 0.0, 0.0, 0.0]
    assert answer_number(None) == []


def test_recipes_name_it_by_dotted_path():
    reward = rewards.get("aha.real_rewards:answer_number")
    assert reward(["<answer>5</answer>"], answer=["5"]) == [1.0]


@pytest.mark.parametrize(
    ("text", "right"),
    [
        ("13 + 9 = 22", True),  # the computation, no tags
        ("<answer>22</answer>", True),
        ("22 apples, or maybe 21", False),  # the last number decides
        ("The sum is 1,022. Oops, 22", True),
        ("twenty-two", False),
        ("", False),
    ],
)
def test_last_number_right(text, right):
    assert last_number_right(text, "22") is right
    assert last_number_right(text, "not a number") is False
