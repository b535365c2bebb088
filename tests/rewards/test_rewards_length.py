"""soft_overlong: DAPO's soft overlong penalty from the token ids TRL passes as `completion_ids`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import rewards

OVERLONG_CASES = [
    # (behaviour, length in tokens, expected) for max_length 100, buffer 20: free up to 80 tokens
    ("empty completion", 0, 0.0),
    ("well inside the budget", 50, 0.0),
    ("at the end of the free part", 80, 0.0),
    ("one token into the buffer", 81, -0.05),
    ("half way through the buffer", 90, -0.5),
    ("at max_length", 100, -1.0),
    ("beyond max_length", 101, -1.0),
]


@pytest.mark.parametrize(
    ("length", "expected"), [case[1:] for case in OVERLONG_CASES], ids=[case[0] for case in OVERLONG_CASES]
)
def test_soft_overlong(length, expected):
    reward = rewards.get("soft_overlong", max_length=100, buffer=20)
    assert reward(["text"], completion_ids=[list(range(length))]) == [pytest.approx(expected)]
    conversational = [[{"role": "assistant", "content": "text"}]]
    assert reward(conversational, completion_ids=[[7] * length], answer=["x"]) == [pytest.approx(expected)]


def test_soft_overlong_without_completion_ids_is_unscorable():
    reward = rewards.get("soft_overlong", max_length=100, buffer=20)
    assert reward(["a", "b"], prompts=["p", "p"]) == [None, None]


def test_soft_overlong_buffer_equal_to_max_length():
    reward = rewards.get("soft_overlong", max_length=10, buffer=10)
    assert reward(["a", "b", "c"], completion_ids=[[], [1] * 5, [1] * 10]) == [0.0, -0.5, -1.0]


def test_soft_overlong_needs_its_options():
    with pytest.raises(ValueError, match="needs option 'max_length', 'buffer'"):
        rewards.get("soft_overlong")
    with pytest.raises(ValueError, match="buffer must be between 1 and max_length"):
        rewards.get("soft_overlong", max_length=10, buffer=11)
    with pytest.raises(ValueError, match="max_length must be an integer"):
        rewards.get("soft_overlong", max_length=10.5, buffer=2)


def test_soft_overlong_reads_trl_completion_ids():
    """TRL 1.16's GRPOTrainer passes completion_ids to every reward function (grpo_trainer._calculate_rewards).

    Read as text: importing trl takes about 20 s here."""
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        pytest.skip("trl is not installed")
    source = (Path(spec.origin).parent / "trainer" / "grpo_trainer.py").read_text()
    assert "completions=completions, completion_ids=completion_ids_list, **reward_kwargs" in source


def test_soft_overlong_rejects_misaligned_completion_ids():
    reward = rewards.get("soft_overlong", max_length=10, buffer=2)
    with pytest.raises(ValueError, match="one token-id list per completion"):
        reward(["a", "b"], completion_ids=[[1]])
