"""Rewards for the launch tests, named in test recipes by dotted path (`launch_rewards:distinct_characters`, with this
folder on PYTHONPATH). A random tiny model never earns the registered rewards, and all-zero rewards make every GRPO
loss exactly 0: these vary with the sampled text, so the runs train on a non-zero signal."""

from __future__ import annotations

from typing import Any


def _text(completion: Any) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def distinct_characters(completions: list[Any], **kwargs: Any) -> list[float]:
    """Number of distinct characters in the completion, divided by 10."""
    return [len(set(_text(c))) / 10.0 for c in completions]
