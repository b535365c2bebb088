"""Length shaping: DAPO's soft overlong penalty (Yu et al. 2025, eq. 13), from completion lengths in tokens.

TRL's GRPOTrainer passes `completion_ids` (one list of token ids per completion, padding removed) to every reward
function; without it the length is unknown and every completion scores None.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Any

from rewards._registry import register


@dataclass(frozen=True)
class SoftOverlongOptions:
    """max_length: the completion budget in tokens (GRPOConfig.max_completion_length). buffer: the last `buffer`
    tokens before max_length, over which the penalty ramps linearly from 0 to -1 (DAPO: 4096 of 20480)."""

    max_length: int
    buffer: int

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 token, got {self.max_length}")
        if not 1 <= self.buffer <= self.max_length:
            raise ValueError(
                f"buffer must be between 1 and max_length ({self.max_length}) tokens, got {self.buffer}; DAPO used "
                "a fifth of max_length"
            )


def overlong_penalty(length: int, options: SoftOverlongOptions) -> float:
    """0.0 up to max_length - buffer tokens, then linearly down to -1.0 at max_length, -1.0 beyond."""
    free = options.max_length - options.buffer
    if length <= free:
        return 0.0
    if length <= options.max_length:
        return (free - length) / options.buffer
    return -1.0


@register(
    "soft_overlong",
    options=SoftOverlongOptions,
    role="shaping",
    columns={"completion_ids": "one token-id list per completion, as TRL passes it"},
    missing_columns="none",
)
def soft_overlong(text: str, completion_ids: Any, options: SoftOverlongOptions) -> float | None:
    """DAPO's soft overlong penalty of a completion from its token count: 0.0 up to max_length - buffer tokens, then
    down to -1.0 at max_length. No plain form: max_length and buffer are required options. None without the
    `completion_ids` TRL passes.

    >>> overlong = rewards.get("soft_overlong", max_length=8, buffer=4)
    >>> overlong(["a", "b", "c"], completion_ids=[[1] * 4, [1] * 6, [1] * 9])
    [0.0, -0.5, -1.0]
    >>> overlong(["a"])
    [None]
    """
    if isinstance(completion_ids, str | bytes) or not isinstance(completion_ids, Sized):
        return None
    return overlong_penalty(len(completion_ids), options)
