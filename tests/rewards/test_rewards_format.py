"""think_format, tag_count and reasoning_steps: tables of cases named by behaviour."""

from __future__ import annotations

import pytest

import rewards
from rewards import _text

ONE_OF_EACH = "<think>\nI add 3 and 4.\nThat is 7.\n</think>\n<answer>\n7\n</answer>"


@pytest.fixture(autouse=True)
def no_caught_errors():
    _text.caught_errors.clear()
    yield
    assert not _text.caught_errors, f"a scorer raised: {dict(_text.caught_errors)}"


THINK_FORMAT_CASES = [
    # (behaviour, options, completion, expected)
    ("one think then one answer", {}, "<think>add</think><answer>7</answer>", 1.0),
    ("multi-line thinking matches", {}, ONE_OF_EACH, 1.0),
    ("whitespace around and between blocks", {}, "  \n<think>a</think>\n\n <answer>7</answer>\n", 1.0),
    ("two think blocks do not match", {}, "<think>a</think><think>b</think><answer>7</answer>", 0.0),
    ("two answer blocks do not match", {}, "<think>a</think><answer>6</answer><answer>7</answer>", 0.0),
    ("nested think block", {}, "<think>a<think>b</think></think><answer>7</answer>", 0.0),
    ("answer before think", {}, "<answer>7</answer><think>a</think>", 0.0),
    ("text before the think block", {}, "Sure! <think>a</think><answer>7</answer>", 0.0),
    ("text between the blocks", {}, "<think>a</think> so <answer>7</answer>", 0.0),
    ("text after the answer block", {}, "<think>a</think><answer>7</answer> done", 0.0),
    ("empty thinking", {}, "<think> </think><answer>7</answer>", 0.0),
    ("empty answer", {}, "<think>a</think><answer>\n</answer>", 0.0),
    ("unclosed answer (truncated)", {}, "<think>a</think><answer>7", 0.0),
    ("no tags", {}, "The answer is 7.", 0.0),
    ("empty completion", {}, "", 0.0),
    ("stray answer tag inside thinking", {}, "<think>use <answer></think><answer>7</answer>", 0.0),
    ("tag names are case-sensitive", {}, "<THINK>a</THINK><ANSWER>7</ANSWER>", 0.0),
    ("reasoning tag option", {"think_tag": "reasoning"}, "<reasoning>a\nb</reasoning>\n<answer>7</answer>", 1.0),
    ("reasoning tag option rejects think", {"think_tag": "reasoning"}, "<think>a</think><answer>7</answer>", 0.0),
    ("prefilled <think> is scored with the prefill", {"prefill": "<think>\n"}, "a\n</think>\n<answer>7</answer>", 1.0),
    ("without the prefill option the same text fails", {}, "a\n</think>\n<answer>7</answer>", 0.0),
    ("prefill plus a repeated <think> fails", {"prefill": "<think>"}, "<think>a</think><answer>7</answer>", 0.0),
    ("strict: newline-exact layout", {"strict": True}, ONE_OF_EACH, 1.0),
    ("strict: one final newline allowed", {"strict": True}, ONE_OF_EACH + "\n", 1.0),
    ("strict: two final newlines rejected", {"strict": True}, ONE_OF_EACH + "\n\n", 0.0),
    ("strict: no newlines rejected", {"strict": True}, "<think>a</think><answer>7</answer>", 0.0),
    ("strict: inline answer accepted", {"strict": True}, "<think>\na\n</think>\n<answer>7</answer>", 1.0),
    ("strict: spaces around the answer rejected", {"strict": True}, "<think>\na\n</think>\n<answer> 7 </answer>", 0.0),
    (
        "strict: answer newline on one side rejected",
        {"strict": True},
        "<think>\na\n</think>\n<answer>\n7</answer>",
        0.0,
    ),
    ("strict: blank answer rejected", {"strict": True}, "<think>\na\n</think>\n<answer>\n\n</answer>", 0.0),
    ("strict: the sft template's layout", {"strict": True}, "<think>\n3 + 4 = 7\n</think>\n<answer>7</answer>", 1.0),
    (
        "strict: blank line between blocks rejected",
        {"strict": True},
        ONE_OF_EACH.replace("</think>\n", "</think>\n\n"),
        0.0,
    ),
    ("strict: leading space rejected", {"strict": True}, " " + ONE_OF_EACH, 0.0),
    ("strict with prefill", {"strict": True, "prefill": "<think>\n"}, ONE_OF_EACH.removeprefix("<think>\n"), 1.0),
]


@pytest.mark.parametrize(
    ("options", "completion", "expected"),
    [case[1:] for case in THINK_FORMAT_CASES],
    ids=[case[0] for case in THINK_FORMAT_CASES],
)
def test_think_format(options, completion, expected):
    reward = rewards.get("think_format", **options)
    assert reward([completion]) == [expected]
    assert reward([[{"role": "assistant", "content": completion}]]) == [expected], "conversational form"


TAG_COUNT_CASES = [
    ("all four tags once", {}, "<think>a</think><answer>7</answer>", 1.0),
    ("three of four tags", {}, "<think>a</think><answer>7", 0.75),
    ("a repeated tag earns nothing", {}, "<think>a</think><think>b</think><answer>7</answer>", 0.5),
    ("no tags", {}, "7", 0.0),
    ("per_tag option", {"per_tag": 0.125}, "<think>a</think><answer>7</answer>", 0.5),
    ("reasoning tags", {"think_tag": "reasoning"}, "<reasoning>a</reasoning><answer>7</answer>", 1.0),
    ("prefill counts", {"prefill": "<think>"}, "a</think><answer>7</answer>", 1.0),
    (
        "trailing text penalised per character",
        {"trailing_penalty": 0.01},
        "<think>a</think><answer>7</answer> 12345",
        0.95,
    ),
    ("trailing whitespace is free", {"trailing_penalty": 0.01}, "<think>a</think><answer>7</answer>\n\n", 1.0),
    ("penalty never below zero", {"trailing_penalty": 0.5}, "<think>a</think><answer>7</answer>" + "x" * 100, 0.0),
]


@pytest.mark.parametrize(
    ("options", "completion", "expected"),
    [case[1:] for case in TAG_COUNT_CASES],
    ids=[case[0] for case in TAG_COUNT_CASES],
)
def test_tag_count(options, completion, expected):
    reward = rewards.get("tag_count", **options)
    assert reward([completion]) == pytest.approx([expected])
    assert reward([[{"role": "assistant", "content": completion}]]) == pytest.approx([expected])


REASONING_STEPS_CASES = [
    ("three numbered steps", {}, "Step 1: add.\nStep 2: carry.\nStep 3: done.", 1.0),
    ("numbered list", {}, "1. add\n2. carry\n3. done", 1.0),
    ("bullets", {}, "- add\n- carry", 2 / 3),
    ("transition words", {}, "First, add. Then, carry. Finally, stop.", 1.0),
    ("one marker", {}, "First, I add 3 and 4 to get 7.", 1 / 3),
    ("no structure", {}, "I add 3 and 4 to get 7.", 0.0),
    ("a number inside a line is not a step", {}, "The total is 12. So we stop.", 0.0),
    ("min_steps option", {"min_steps": 1}, "Step 1: add.", 1.0),
    ("blank-line runs are not steps", {}, "\n" * 5000, 0.0),
]


@pytest.mark.parametrize(
    ("options", "completion", "expected"),
    [case[1:] for case in REASONING_STEPS_CASES],
    ids=[case[0] for case in REASONING_STEPS_CASES],
)
def test_reasoning_steps(options, completion, expected):
    assert rewards.get("reasoning_steps", **options)([completion]) == pytest.approx([expected])


@pytest.mark.parametrize("name", ["think_format", "tag_count", "reasoning_steps"])
def test_format_rewards_ignore_unknown_kwargs(name):
    reward = rewards.get(name)
    plain = reward([ONE_OF_EACH])
    assert reward([ONE_OF_EACH], prompts=["q"], answer=["7"], trainer_state=None, log_metric=print) == plain


def test_think_format_implies_every_tag_once():
    completions = [case[2] for case in THINK_FORMAT_CASES if not case[1]]
    for completion, format_score, tags in zip(
        completions, rewards.get("think_format")(completions), rewards.get("tag_count")(completions), strict=True
    ):
        if format_score == 1.0:
            assert tags == 1.0, completion
