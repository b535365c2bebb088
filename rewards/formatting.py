"""Format rewards: one reasoning block then one answer block (`think_format`, role format), per-tag credit
(`tag_count`, shaping), and explicit step structure (`reasoning_steps`, shaping).

All scanning is `str.count`/`str.find` or a regex without nested repetition: linear in the completion's length.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rewards._registry import register
from rewards._text import check_tag_name, tag_pair


@dataclass(frozen=True)
class ThinkFormatOptions:
    """think_tag/answer_tag: tag names (`reasoning` for `<reasoning>/<answer>` prompts). strict: the layout must be
    exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>` or, with the answer inline,
    `<think>\\n...\\n</think>\\n<answer>...</answer>`, one optional final newline, no other whitespace around the
    answer. prefill: the text the prompt already holds at the start of the assistant turn (e.g. "<think>\\n"); the
    completion is scored as prefill + completion."""

    think_tag: str = "think"
    answer_tag: str = "answer"
    strict: bool = False
    prefill: str = ""

    def __post_init__(self) -> None:
        check_tag_name("think_tag", self.think_tag)
        check_tag_name("answer_tag", self.answer_tag)
        if self.think_tag == self.answer_tag:
            raise ValueError(f"think_tag and answer_tag are both {self.think_tag!r}: give them different names")

    @functools.cached_property
    def layout_prefill(self) -> str:
        """The prefill as the layout sees it: its words before the think tag ("Let me solve this step by step.\\n
        <think>") are the prompt's, not stray text of the model's, so the layout is judged from the think tag on."""
        think_open = tag_pair(self.think_tag)[0]
        return self.prefill[self.prefill.find(think_open) :] if think_open in self.prefill else self.prefill


def _blank(text: str) -> bool:
    return not text.strip()


def _one_think_one_answer(text: str, options: ThinkFormatOptions) -> bool:
    think_open, think_close = tag_pair(options.think_tag)
    answer_open, answer_close = tag_pair(options.answer_tag)
    tags = (think_open, think_close, answer_open, answer_close)
    # Exactly one of each tag: a second think block, a nested block or a stray tag in the prose all fail here.
    if any(text.count(tag) != 1 for tag in tags):
        return False
    i_think_open, i_think_close, i_answer_open, i_answer_close = (text.find(tag) for tag in tags)
    if not i_think_open < i_think_close < i_answer_open < i_answer_close:
        return False
    think_start = i_think_open + len(think_open)
    answer_start = i_answer_open + len(answer_open)
    answer_end = i_answer_close + len(answer_close)
    thinking = text[think_start:i_think_close]
    answer = text[answer_start:i_answer_close]
    if options.strict:
        # the answer on its own lines (open-r1's layout) or inline (`<answer>42</answer>`), nothing in between
        value = answer[1:-1] if len(answer) >= 2 and answer[0] == answer[-1] == "\n" else answer
        return (
            i_think_open == 0
            and thinking.startswith("\n")
            and thinking.endswith("\n")
            and not _blank(thinking)
            and text[i_think_close + len(think_close) : i_answer_open] == "\n"
            and value != ""
            and value == value.strip()
            and text[answer_end:] in ("", "\n")
        )
    return (
        _blank(text[:i_think_open])
        and not _blank(thinking)
        and _blank(text[i_think_close + len(think_close) : i_answer_open])
        and not _blank(answer)
        and _blank(text[answer_end:])
    )


@register("think_format", options=ThinkFormatOptions, role="format")
def think_format(text: str, options: ThinkFormatOptions) -> float:
    """1.0 when the completion is one `<think>` block followed by one `<answer>` block (whitespace around and between
    them allowed, both non-blank), else 0.0. Thinking may span lines; two think blocks or any repeated tag score 0.0.

    >>> think_format(["<think>\\n9 * 2 = 18\\n</think>\\n<answer>18</answer>", "<answer>18</answer>"])
    [1.0, 0.0]
    >>> think_format(["<think>a</think><think>b</think><answer>18</answer>"])  # a repeated tag
    [0.0]
    >>> rewards.get("think_format", strict=True)(["<think>\\n9 * 2\\n</think>\\n<answer>18</answer>\\n"])
    [1.0]
    >>> rewards.get("think_format", strict=True)(["<think>9 * 2</think> <answer>18</answer>"])  # not the layout
    [0.0]
    """
    return 1.0 if _one_think_one_answer(options.layout_prefill + text, options) else 0.0


@dataclass(frozen=True)
class TagCountOptions:
    """per_tag: credit for each of the four tags present exactly once. trailing_penalty: subtracted per character of
    non-whitespace-trimmed text after the closing answer tag; the total never goes below 0. Tags and prefill as for
    think_format."""

    think_tag: str = "think"
    answer_tag: str = "answer"
    prefill: str = ""
    per_tag: float = 0.25
    trailing_penalty: float = 0.0

    def __post_init__(self) -> None:
        check_tag_name("think_tag", self.think_tag)
        check_tag_name("answer_tag", self.answer_tag)
        if self.think_tag == self.answer_tag:
            raise ValueError(f"think_tag and answer_tag are both {self.think_tag!r}: give them different names")
        if self.per_tag <= 0:
            raise ValueError(f"per_tag must be > 0 (credit per tag), got {self.per_tag}")
        if self.trailing_penalty < 0:
            raise ValueError(
                f"trailing_penalty must be >= 0 (subtracted per trailing character), got {self.trailing_penalty}"
            )


def _tag_credit(text: str, options: TagCountOptions) -> float:
    think_open, think_close = tag_pair(options.think_tag)
    answer_open, answer_close = tag_pair(options.answer_tag)
    present_once = sum(text.count(tag) == 1 for tag in (think_open, think_close, answer_open, answer_close))
    credit = options.per_tag * present_once
    end = text.rfind(answer_close)
    if options.trailing_penalty and end >= 0:
        trailing = len(text[end + len(answer_close) :].strip())
        credit -= options.trailing_penalty * trailing
    return max(credit, 0.0)


@register("tag_count", options=TagCountOptions, role="shaping")
def tag_count(text: str, options: TagCountOptions) -> float:
    """0.25 for each of `<think>`, `</think>`, `<answer>`, `</answer>` present exactly once (0.0 to 1.0).

    >>> tag_count(["<think>9 * 2</think><answer>18</answer>", "<think>9 * 2</think> 18", "18"])
    [1.0, 0.5, 0.0]
    >>> rewards.get("tag_count", trailing_penalty=0.1)(["<think>a</think><answer>18</answer> ok"])  # 2 characters
    [0.8]
    """
    return _tag_credit(options.prefill + text, options)


@dataclass(frozen=True)
class ReasoningStepsOptions:
    """min_steps: the number of step markers that earns full credit; fewer earn min(1, markers / min_steps)."""

    min_steps: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= 100:
            raise ValueError(f"min_steps must be between 1 and 100, got {self.min_steps}")


# A step marker: "Step 2:" / "2." / "2)" / "- " / "* " at a line start, or "First," "Next," "Finally," ... anywhere.
# `[ \t]*` (not `\s*`) after `^` keeps the scan linear on long runs of blank lines.
_STEP_MARKER = re.compile(
    r"^[ \t]*(?:step[ \t]*[0-9]{1,3}[ \t]*[:.)]|[0-9]{1,3}[.)][ \t]|[-*•][ \t])"
    r"|\b(?:first|second|third|next|then|finally),",
    re.IGNORECASE | re.MULTILINE,
)


def _step_credit(text: str, min_steps: int) -> float:
    markers = 0
    for _ in _STEP_MARKER.finditer(text):
        markers += 1
        if markers >= min_steps:  # credit saturates: stop scanning
            return 1.0
    return markers / min_steps


@register("reasoning_steps", options=ReasoningStepsOptions, role="shaping")
def reasoning_steps(text: str, options: ReasoningStepsOptions) -> float:
    """min(1, markers / 3) where markers counts explicit steps ("Step 1:", "1.", "- ", "First,", "Finally," ...).

    >>> reasoning_steps(["Step 1: 16 - 3 = 13.\\nStep 2: 13 - 4 = 9.\\nStep 3: 9 * 2 = 18.", "First, 9 * 2 = 18."])
    [1.0, 0.3333333333333333]
    >>> reasoning_steps(["9 * 2 = 18"])
    [0.0]
    """
    return _step_credit(text, options.min_steps)
