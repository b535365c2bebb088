"""Shared plumbing for reward functions: completion text, answer blocks, dataset columns, the per-completion guard.

Nothing here imports the `aha` package or any heavy library: `import rewards` must stay fast.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

logger = logging.getLogger("rewards")

# A tag name as it appears in `<name>` and `</name>`.
TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

# Per reward name: how many completions raised inside a scorer and were scored None instead. A reward that raises
# kills a training run hours in; one unscorable completion does not. Tests assert this stays empty.
caught_errors: Counter[str] = Counter()

Row = TypeVar("Row")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, or the content of the last assistant message of a conversation
    (a message without a role counts as the assistant's).

    Content given as a list of parts (`[{"type": "text", "text": ...}]`) is joined. Anything unreadable gives "",
    which every text reward scores as a wrong answer.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence) or not completion:
        return ""
    # the model's own turns only: a user or tool message inside a completion is not the model's text
    own = [m for m in completion if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"]
    if not own:
        return ""
    content = own[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def tag_pair(name: str) -> tuple[str, str]:
    """The opening and closing tag for `name`: ("<answer>", "</answer>")."""
    return f"<{name}>", f"</{name}>"


def _answer_span(text: str, opening: str, closing: str) -> tuple[int, int] | None:
    """(start of the content, index of the closing tag) of the one `opening...closing` block, or None."""
    if text.count(opening) != 1 or text.count(closing) != 1:
        return None
    # rfind: with one of each, the last is the only one, and the answer sits near the end of a completion
    start, end = text.rfind(opening), text.rfind(closing)
    return (start + len(opening), end) if start < end else None


def answer_block(text: str, tag: str = "answer") -> str | None:
    """The content of the one `<tag>...</tag>` block, or None when there is none, it is unclosed, or there are several.

    Several answer blocks are no answer: a completion must commit to one (and cannot list guesses).
    """
    span = _answer_span(text, f"<{tag}>", f"</{tag}>")
    return None if span is None else text[span[0] : span[1]]


def final_answer(text: str, answer_tag: str = "answer", think_tag: str = "think", in_think: bool = False) -> str | None:
    """The content of the answer block that counts: the one `<answer>` block (see `answer_block`), and only where the
    thinking is over: no `</think>` after it and no `<think>` left open before it.

    `<think>a</think><answer>18</answer>` gives "18"; `<answer>18</answer>` (no think block at all) gives "18";
    `<think>...<answer>18</answer>...</think>` gives None, as does `<answer>18</answer><think>...</think>`, and
    `<think>...<answer>18</answer>` with the think block never closed. With `in_think=True` (a reward's
    `answer_in_think: true`) the one answer block counts wherever it stands. A draft answer inside the thinking plus
    a final one after it are two blocks: no answer, as for any completion that lists several.
    """
    tags = (f"<{answer_tag}>", f"</{answer_tag}>", f"<{think_tag}>", f"</{think_tag}>")
    return _final_answer(text, tags, in_think)


class AnswerPlacement:
    """For the options of a reward that reads the final answer (they declare answer_tag, think_tag, answer_in_think):
    the four tags, made once per options value rather than once per completion."""

    answer_tag: str
    think_tag: str
    answer_in_think: bool

    @functools.cached_property
    def tags(self) -> tuple[str, str, str, str]:
        return (f"<{self.answer_tag}>", f"</{self.answer_tag}>", f"<{self.think_tag}>", f"</{self.think_tag}>")

    def final_answer(self, text: str) -> str | None:
        """`final_answer(text)` with these options' tags."""
        return _final_answer(text, self.tags, self.answer_in_think)


def _final_answer(text: str, tags: tuple[str, str, str, str], in_think: bool) -> str | None:
    opening, closing, think_open, think_close = tags
    if text.count(opening) != 1 or text.count(closing) != 1:
        return None
    start, end = text.rfind(opening), text.rfind(closing)  # as in _answer_span (inlined: this runs per completion)
    if end < start:
        return None
    if not in_think:
        last_close = text.rfind(think_close)  # from the end: in a laid-out completion it is just before the answer
        if last_close > start:
            return None  # the thinking ends after the answer opened: the answer is part of (or before) the thinking
        if text.find(think_open, max(last_close, 0), start) >= 0:
            return None  # inside a think block opened after the last close (or never closed)
    return text[start + len(opening) : end]


def check_tag_name(option: str, value: str) -> None:
    if not TAG_NAME.fullmatch(value):
        raise ValueError(
            f"option {option}={value!r} is not a tag name: use letters, digits, '_', '.', '-' (up to 32, starting "
            f"with a letter), without angle brackets, e.g. {option}: think"
        )


def check_answer_tags(answer_tag: str, think_tag: str) -> None:
    check_tag_name("answer_tag", answer_tag)
    check_tag_name("think_tag", think_tag)
    if answer_tag == think_tag:
        raise ValueError(f"think_tag and answer_tag are both {think_tag!r}: give them different names")


def texts_of(completions: Any, reward_name: str) -> list[str]:
    """The text of each completion; a bare string or a non-sequence is a caller error, not a completion."""
    if isinstance(completions, str | bytes) or not isinstance(completions, Sequence):
        raise TypeError(
            f"{reward_name}: completions must be a list (of strings, or of message lists), got "
            f"{type(completions).__name__}; wrap a single completion as [completion]"
        )
    return [completion_text(completion) for completion in completions]


def column(columns: Mapping[str, Any], key: str, count: int, reward_name: str, meaning: str) -> Sequence[Any]:
    """Dataset column `key` (one value per completion, as TRL passes it), checked for presence and length."""
    if key not in columns or columns[key] is None:
        present = sorted(name for name in columns if name not in {"prompts", "completion_ids"})
        raise ValueError(
            f"{reward_name} needs the dataset column {key!r} ({meaning}), one value per completion; the columns "
            f"passed were {present}. Add the column to the dataset or rename yours to {key!r}."
        )
    values = columns[key]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) != count:
        length = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise ValueError(
            f"{reward_name}: column {key!r} ({meaning}) must be a list with one value per completion ({count}), got "
            f"{length}; "
            f"pass it as TRL does, e.g. {key}=[value_for_completion_0, ...]"
        )
    return values


def guarded(reward_name: str, score_one: Callable[..., float | None], *rows: Sequence[Any]) -> list[float | None]:
    """Apply `score_one` to each row; a completion that makes it raise is scored None (and counted), never raised."""
    scores: list[float | None] = []
    for row in zip(*rows, strict=True):
        try:
            scores.append(score_one(*row))
        except Exception as error:  # a reward must not kill the run: see caught_errors
            caught_errors[reward_name] += 1
            if caught_errors[reward_name] <= 3:
                logger.warning("%s could not score a completion (%s: %s); scored None", reward_name, type(error), error)
            scores.append(None)
    return scores
