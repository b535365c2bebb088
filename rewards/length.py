"""Length shaping: DAPO's soft overlong penalty (Yu et al. 2025, eq. 13), from completion lengths in tokens.

TRL's GRPOTrainer passes `completion_ids` (one list of token ids per completion, padding removed) to every reward
function; without it the length is unknown and every completion scores None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Any

from rewards._text import guarded, texts_of


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


def _penalty(ids: Any, options: SoftOverlongOptions) -> float | None:
    if isinstance(ids, str | bytes) or not isinstance(ids, Sized):
        return None
    return overlong_penalty(len(ids), options)


def score_soft_overlong(
    completions: Any, columns: Mapping[str, Any], options: SoftOverlongOptions, name: str = "soft_overlong"
) -> list[float | None]:
    count = len(texts_of(completions, name))
    completion_ids = columns.get("completion_ids")
    if completion_ids is None:
        return [None] * count
    if isinstance(completion_ids, str | bytes) or not isinstance(completion_ids, Sized) or len(completion_ids) != count:
        raise ValueError(
            f"{name}: completion_ids must hold one token-id list per completion ({count}), got "
            f"{len(completion_ids) if isinstance(completion_ids, Sized) else type(completion_ids).__name__}"
        )
    return guarded(name, lambda ids: _penalty(ids, options), list(completion_ids))
