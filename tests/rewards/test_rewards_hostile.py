"""Hostile input: every reward returns one finite score or None per completion, never raises, never hangs.

Property tests (hypothesis) feed arbitrary text and tag soup; an explicit table of adversarial completions of up to
8 KB checks the 50 ms per completion bound; 1 MB completions must come back too.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import _text

BUDGET_SECONDS = 0.050  # per completion of up to 8 KB (issue 3)
EIGHT_KB = 8 * 1024

# (reward name, options, (lowest, highest) score)
REWARDS = [
    ("think_format", {}, (0.0, 1.0)),
    ("think_format", {"strict": True, "prefill": "<think>\n"}, (0.0, 1.0)),
    ("think_format", {"think_tag": "reasoning"}, (0.0, 1.0)),
    ("tag_count", {}, (0.0, 1.0)),
    ("tag_count", {"trailing_penalty": 0.01}, (0.0, 1.0)),
    ("gsm8k_accuracy", {}, (0.0, 1.0)),
    ("gsm8k_accuracy", {"exact_match": 2.0, "correct": 1.5}, (0.0, 2.0)),
    ("gsm8k_accuracy", {"math_verify": True}, (0.0, 1.0)),
    ("integer_answer", {}, (0.0, 1.0)),
    ("countdown_equation", {"well_formed": 0.1}, (0.0, 1.0)),
    ("reasoning_steps", {}, (0.0, 1.0)),
    ("soft_overlong", {"max_length": 64, "buffer": 16}, (-1.0, 0.0)),
]
REWARD_IDS = [f"{name}{options or ''}" for name, options, _ in REWARDS]

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "<reasoning>", "</reasoning>", "<think", "answer>", "\n", " ",
    "1", "72", "-", "1,000", "$", "\\$", ".", "00", "/", "0", "\\boxed{", "\\frac{", "}", "{", "{,}", "%", "*", "**",
    "(", ")", "=", "9**9**9", "__import__('os')", "(1/0)", "\u0661\u0662", "\uff17\uff12", "\u2212", "Step 1:",
    "First,", "dollars", "\\text{", "^", "!", "\\sqrt{", "x", "\x00", "\ud7ff", "\U0001f600",
]  # fmt: skip
tag_soup = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=80).map("".join)
hostile_text = st.one_of(st.text(max_size=400), tag_soup)
completion = st.one_of(
    hostile_text,
    hostile_text.map(lambda text: [{"role": "assistant", "content": text}]),
    st.just([]),
    st.just([{"role": "assistant"}]),
    st.just([{"role": "user", "content": "<answer>72</answer>"}, {"role": "assistant", "content": None}]),
)
gold = st.one_of(st.sampled_from(["72", "#### 1,000", "-3", "0.5", "3/4"]), st.text(max_size=20), st.integers())
nums = st.one_of(st.lists(st.integers(0, 100), min_size=1, max_size=6), st.text(max_size=5), st.none())
target = st.one_of(st.integers(-1000, 1000), st.text(max_size=5), st.floats(allow_nan=True))
token_ids = st.lists(st.integers(0, 10), max_size=100)
row = st.tuples(completion, gold, nums, target, token_ids)


def check_scores(scores, count, bounds):
    assert isinstance(scores, list) and len(scores) == count
    lowest, highest = bounds
    for score in scores:
        assert score is None or (isinstance(score, float) and math.isfinite(score) and lowest <= score <= highest)


@pytest.mark.parametrize(("name", "options", "bounds"), REWARDS, ids=REWARD_IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=4))
def test_arbitrary_input_gives_one_bounded_score_or_none_per_completion(name, options, bounds, rows):
    _text.caught_errors.clear()
    reward = rewards.get(name, **options)
    completions, golds, num_rows, targets, ids = (list(column) for column in zip(*rows, strict=True))
    scores = reward(completions, answer=golds, nums=num_rows, target=targets, completion_ids=ids, prompts=completions)
    check_scores(scores, len(rows), bounds)
    assert not _text.caught_errors, "a scorer raised and was caught: the code must not rely on the safety net"


ANSWER_REWARDS = [("gsm8k_accuracy", {}), ("gsm8k_accuracy", {"math_verify": True}), ("integer_answer", {})]


@pytest.mark.parametrize(("name", "options"), ANSWER_REWARDS, ids=[f"{n}{o or ''}" for n, o in ANSWER_REWARDS])
@settings(max_examples=150, deadline=None)
@given(text=hostile_text)
def test_text_without_a_closed_answer_block_scores_zero(name, options, text):
    text = text.replace("</answer>", "")
    assert rewards.get(name, **options)([text], answer=["72"]) == [0.0]


@settings(max_examples=200, deadline=None)
@given(text=tag_soup)
def test_think_format_implies_tag_count_full(text):
    if rewards.get("think_format")([text]) == [1.0]:
        assert rewards.get("tag_count")([text]) == [1.0]


ADVERSARIAL = {
    "empty": "",
    "8 KB of opening think tags": "<think>" * (EIGHT_KB // 7),
    "8 KB of answer tag pairs": "<answer>72</answer>" * (EIGHT_KB // 19),
    "nested answer tags": "<answer>" * 480 + "72" + "</answer>" * 480,
    "8 KB answer block of digits": "<answer>" + "9" * (EIGHT_KB - 20) + "</answer>",
    "8 KB answer block of unicode digits": "<answer>" + "\u0667" * (EIGHT_KB // 2 - 20) + "</answer>",
    "power tower": "<think>x</think><answer>9**9**9</answer>",
    "latex power tower": "<think>x</think><answer>9^{9^{9^{9}}}</answer>",
    "factorial": "<answer>99999999!</answer>",
    "import": "<answer>__import__('os').system('true')</answer>",
    "division by zero": "<answer>(1/0)</answer>",
    "deep parentheses": "<answer>" + "(" * 4000 + "1" + ")" * 4000 + "</answer>",
    "long sum": "<answer>" + "+".join(["1"] * 4000) + "</answer>",
    "8 KB of blank lines": "\n" * EIGHT_KB,
    "8 KB of step markers": "Step 1:\n" * (EIGHT_KB // 8),
    "8 KB of open braces": "<answer>" + "\\frac{" * (EIGHT_KB // 6 - 4) + "</answer>",
    "8 KB of thousands groups": "<answer>1" + ",000" * (EIGHT_KB // 4 - 6) + "</answer>",
    "8 KB of label words": "<answer>" + "a " * (EIGHT_KB // 2 - 16) + "is 72</answer>",
    "8 KB of dollar signs": "<answer>" + "$" * (EIGHT_KB - 20) + "</answer>",
}
ANSWER_JUDGES = {"gsm8k_accuracy", "integer_answer", "countdown_equation"}


def test_adversarial_completions_are_at_most_8_kb():
    assert {case: len(text.encode()) for case, text in ADVERSARIAL.items() if len(text.encode()) > EIGHT_KB} == {}


@pytest.mark.parametrize(("name", "options", "bounds"), REWARDS, ids=REWARD_IDS)
def test_adversarial_completions_score_within_50_ms(name, options, bounds):
    reward = rewards.get(name, **options)
    columns = {"answer": ["72"], "nums": [[1, 2, 3]], "target": [6], "completion_ids": [[1] * 10]}
    reward(["<think>warm</think><answer>2 \\times 36</answer>"], **columns)  # first-call imports are not per-call
    slow = {}
    for case, text in ADVERSARIAL.items():
        seconds = []
        for _ in range(5):  # the machine is shared: judge the median of five calls
            start = time.perf_counter()
            scores = reward([text], **columns)
            seconds.append(time.perf_counter() - start)
        check_scores(scores, 1, bounds)
        if name in ANSWER_JUDGES and case not in {"8 KB answer block of digits"}:
            assert scores == [0.0], case
        if statistics.median(seconds) > BUDGET_SECONDS:
            slow[case] = statistics.median(seconds)
    assert not slow, f"over {BUDGET_SECONDS * 1000:.0f} ms: {slow}"


ONE_MB = 1024 * 1024
HUGE = {
    "1 MB of text": "a" * ONE_MB,
    "1 MB answer block": "<answer>" + "7" * ONE_MB + "</answer>",
    "1 MB of tags": "<think></think><answer>" * (ONE_MB // 23),
    "1 MB of newlines then an answer": "\n" * ONE_MB + "<answer>72</answer>",
}


@pytest.mark.parametrize(("name", "options", "bounds"), REWARDS, ids=REWARD_IDS)
def test_one_megabyte_completions_return(name, options, bounds):
    reward = rewards.get(name, **options)
    columns = {"answer": ["72"] * len(HUGE), "nums": [[7]] * len(HUGE), "target": [7] * len(HUGE)}
    start = time.perf_counter()
    scores = reward(list(HUGE.values()), completion_ids=[[1]] * len(HUGE), **columns)
    assert time.perf_counter() - start < 2.0
    check_scores(scores, len(HUGE), bounds)
