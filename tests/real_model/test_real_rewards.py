"""aha.real_rewards.answer_number: pays for tags around a number, never for tags alone; never raises."""

from __future__ import annotations

import pytest

import rewards
from aha.real_rewards import answer_number


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("<think>\n13 + 9 = 22\n</think>\n<answer>22</answer>", 1.0),
        ("so it is\n<answer>\n-3\n</answer>\n", 1.0),
        ("<answer>1,000</answer>", 1.0),
        ("<answer>\n22\nLeo has 22 books.", 0.5),  # opened on a number, never closed
        ("<answer>22</answer> and more text", 0.5),  # text after the block
        ("<answer>22</answer><answer>23</answer>", 0.5),  # two blocks: no answer, but the first holds a number
        ("<answer> </answer>", 0.0),  # the prompt's empty tags copied
        ("<answer> the number </answer>", 0.0),  # a placeholder copied
        ("<answer>22 apples</answer>", 0.25),
        ("<answer>\nNora has 7 - 1 = 6 books.", 0.25),  # the tag as a heading over a line with numbers
        ("<answer>\nNora has some books.\n7", 0.0),
        ("The answer is 22.", 0.0),
        ("", 0.0),
    ],
)
def test_scores(text, score):
    assert answer_number([text]) == [score]


def test_think_close_option_needs_the_think_block_closed_first():
    assert answer_number(["13 + 9 = 22\n</think>\n<answer>22</answer>"], think_close=True) == [1.0]
    assert answer_number(["13 + 9 = 22\n<answer>22</answer>"], think_close=True) == [0.5]
    assert answer_number(["<answer>22</answer>\n</think>"], think_close=True) == [0.5]


def test_conversational_completions_and_hostile_input():
    conversation = [[{"role": "assistant", "content": "<answer>7</answer>"}]]
    assert answer_number(conversation) == [1.0]
    assert answer_number([None, 3, {"x": 1}, "<answer>" * 10_000 + "9"]) == [0.0, 0.0, 0.0, 0.0]
    assert answer_number(None) == []


def test_recipes_name_it_by_dotted_path():
    reward = rewards.get("aha.real_rewards:answer_number")
    assert reward(["<answer>5</answer>"], answer=["5"]) == [1.0]
