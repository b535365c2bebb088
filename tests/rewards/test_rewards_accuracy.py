"""gsm8k_accuracy and integer_answer: tables of cases named by behaviour, and the GSM8K test split's gold answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rewards
from rewards import _text
from rewards.accuracy import parse_number

GSM8K_TEST = Path(__file__).resolve().parents[2] / "data" / "gsm8k" / "test.jsonl"


@pytest.fixture(autouse=True)
def no_caught_errors():
    _text.caught_errors.clear()
    yield
    assert not _text.caught_errors, f"a scorer raised: {dict(_text.caught_errors)}"


def completion(answer: str) -> str:
    return f"<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\n</think>\n<answer>{answer}</answer>"


GSM8K_CASES = [
    # (behaviour, answer block, gold, expected)
    ("plain number", "18", "18", 1.0),
    ("surrounding whitespace", "\n 18 \n", "18", 1.0),
    ("thousands separator", "1,000", "1000", 1.0),
    ("thousands separator in the gold", "1000", "1,000", 1.0),
    ("dollar sign", "$18", "18", 1.0),
    ("escaped dollar sign", "\\$18", "18", 1.0),
    ("dollars and cents", "$1,000.00", "1000", 1.0),
    ("trailing zeros", "18.00", "18", 1.0),
    ("unit word", "18 dollars", "18", 1.0),
    ("unit in \\text", "18 \\text{ dollars}", "18", 1.0),
    ("percent sign", "18%", "18", 1.0),
    ("trailing period", "18.", "18", 1.0),
    ("unit and trailing period", "18 dollars.", "18", 1.0),
    ("negative", "-5", "-5", 1.0),
    ("unicode minus sign", "\u22125", "-5", 1.0),
    ("negative dollars", "-$5", "-5", 1.0),
    ("dollar then minus", "$-5", "-5", 1.0),
    ("fraction", "3/4", "0.75", 1.0),
    ("latex fraction", "\\frac{3}{4}", "0.75", 1.0),
    ("latex dfrac, negative", "-\\dfrac{3}{4}", "-0.75", 1.0),
    ("decimal gold", "0.5", "1/2", 1.0),
    ("boxed", "\\boxed{18}", "18", 1.0),
    ("boxed inside math delimiters", "$\\boxed{18}$", "18", 1.0),
    ("latex thousands separator", "1{,}000", "1000", 1.0),
    ("label before the number", "The answer is 18", "18", 1.0),
    ("variable label", "x = 18", "18", 1.0),
    ("wrong number", "19", "18", 0.0),
    ("off by a decimal", "18.5", "18", 0.0),
    ("sign matters", "-18", "18", 0.0),
    ("two signs", "-$-18", "-18", 0.0),
    ("bad thousands grouping", "1,00", "100", 0.0),
    ("an expression is not an answer", "9 * 2", "18", 0.0),
    ("two numbers are not an answer", "18 or 19", "18", 0.0),
    ("words only", "eighteen", "18", 0.0),
    ("a magnitude word is not a unit", "18 thousand", "18", 0.0),
    ("k is not a unit", "18k", "18000", 0.0),
    ("unicode digits are not an answer", "\u0661\u0668", "18", 0.0),
    ("fullwidth digits are not an answer", "\uff11\uff18", "18", 0.0),
    ("division by zero", "18/0", "18", 0.0),
    ("empty block", "", "18", 0.0),
    ("gold after ####", "18", "She makes 9 * 2 = $18.\n#### 18", 1.0),
    ("gold with thousands separator after ####", "1450000", "so\n#### 1,450,000", 1.0),
    ("negative gold after ####", "-3", "#### -3", 1.0),
    ("unparseable gold is unscorable", "18", "eighteen", None),
    ("empty gold is unscorable", "18", "", None),
    ("expression gold is unscorable", "18", "9 * 2", None),
]


@pytest.mark.parametrize(
    ("answer", "gold", "expected"), [case[1:] for case in GSM8K_CASES], ids=[case[0] for case in GSM8K_CASES]
)
def test_gsm8k_accuracy(answer, gold, expected):
    reward = rewards.get("gsm8k_accuracy")
    assert reward([completion(answer)], answer=[gold]) == [expected]
    conversational = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": completion(answer)}]]
    assert reward(conversational, answer=[gold]) == [expected]


GSM8K_STRUCTURE_CASES = [
    ("no answer block", "<think>18</think> 18", 0.0),
    ("unclosed answer block", "<think>x</think><answer>18", 0.0),
    ("two answer blocks are no answer, right one last", "<answer>17</answer><answer>18</answer>", 0.0),
    ("two answer blocks are no answer, right one first", "<answer>18</answer><answer>17</answer>", 0.0),
    ("the same answer twice is no answer", "<answer>18</answer><answer>18</answer>", 0.0),
    ("closing tag before opening tag", "</answer>18<answer>", 0.0),
    ("number in the thinking only", "<think>18</think><answer>?</answer>", 0.0),
    ("nested answer tags", "<answer><answer>18</answer></answer>", 0.0),
    ("answer block over 256 characters", "<answer>" + " " * 300 + "x" * 300 + "18</answer>", 0.0),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in GSM8K_STRUCTURE_CASES], ids=[case[0] for case in GSM8K_STRUCTURE_CASES]
)
def test_gsm8k_accuracy_reads_the_one_answer_block(text, expected):
    assert rewards.get("gsm8k_accuracy")([text], answer=["18"]) == [expected]


GOLD_TYPES = [
    ("int gold", 18, 1.0),
    ("float gold", 18.0, 1.0),
    ("fractional float gold", 0.5, 0.0),
    ("None gold", None, None),
    ("bool gold", True, None),
    ("list gold", [18], None),
]


@pytest.mark.parametrize(("gold", "expected"), [case[1:] for case in GOLD_TYPES], ids=[case[0] for case in GOLD_TYPES])
def test_gsm8k_accuracy_gold_types(gold, expected):
    assert rewards.get("gsm8k_accuracy")([completion("18")], answer=[gold]) == [expected]


SPLIT_CASES = [
    ("exact gold string", "72", 2.0),
    ("exact after stripping", " 72\n", 2.0),
    ("numerically equal", "72.00", 1.5),
    ("numerically equal with $", "$72", 1.5),
    ("wrong", "73", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [case[1:] for case in SPLIT_CASES], ids=[case[0] for case in SPLIT_CASES]
)
def test_gsm8k_accuracy_seed000_split(answer, expected):
    reward = rewards.get("gsm8k_accuracy", exact_match=2.0, correct=1.5)
    assert reward([completion(answer)], answer=["72"]) == [expected]


def test_gsm8k_accuracy_options():
    assert rewards.get("gsm8k_accuracy", correct=2)([completion("72")], answer=["72"]) == [2.0]
    tagged = "<reasoning>x</reasoning><result>72</result>"
    assert rewards.get("gsm8k_accuracy", answer_tag="result")([tagged], answer=["72"]) == [1.0]
    assert rewards.get("gsm8k_accuracy")([tagged], answer=["72"]) == [0.0]


MATH_VERIFY_CASES = [
    ("plain numbers still take the fast path", "72", 1.0),
    ("product in latex", "2 \\times 36", 1.0),
    ("sum", "71 + 1", 1.0),
    ("nested fraction", "\\frac{\\frac{144}{2}}{1}", 1.0),
    ("wrong expression", "2 \\times 35", 0.0),
    ("power tower is refused by the guard", "9^{9^{9}}", 0.0),
    ("factorial is refused by the guard", "99999999!", 0.0),
    ("unlisted latex is refused by the guard", "\\sqrt{5184}", 0.0),
    ("letters are refused by the guard", "seventy two", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [case[1:] for case in MATH_VERIFY_CASES], ids=[case[0] for case in MATH_VERIFY_CASES]
)
def test_gsm8k_accuracy_math_verify_option(answer, expected):
    reward = rewards.get("gsm8k_accuracy", math_verify=True)
    assert reward([completion(answer)], answer=["72"]) == [expected]


# Bug: a comma group led by 0 was read as a thousands group ("0,111" scored right for 111).
THOUSANDS_GROUP_CASES = [
    # (behaviour, answer block, gold, expected)
    ("a first group led by 0 is not a thousands group", "0,111", "111", 0.0),
    ("0,500 is not 500", "0,500", "500", 0.0),
    ("0,500 is not 0.5 either", "0,500", "0.5", 0.0),
    ("a negative first group led by 0", "-0,500", "-500", 0.0),
    ("a LaTeX-separated group led by 0", "0{,}500", "500", 0.0),
    ("first group of one digit", "1,280", "1280", 1.0),
    ("first group of three digits", "100,000", "100000", 1.0),
    ("plain zero", "0", "0", 1.0),
]


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [case[1:] for case in THOUSANDS_GROUP_CASES],
    ids=[case[0] for case in THOUSANDS_GROUP_CASES],
)
def test_thousands_separator_needs_a_first_group_not_led_by_zero(answer, gold, expected):
    assert rewards.get("gsm8k_accuracy")([completion(answer)], answer=[gold]) == [expected]
    assert rewards.get("gsm8k_accuracy", math_verify=True)([completion(answer)], answer=[gold]) == [expected]


@pytest.mark.parametrize(("answer", "expected"), [("0,111", 0.0), ("0,500", 0.0), ("1,280", 1.0), ("-1,280", 1.0)])
def test_integer_answer_thousands_group_not_led_by_zero(answer, expected):
    assert rewards.get("integer_answer")([completion(answer)]) == [expected]


# Bug: the math-verify fallback refused an answer wrapped in \( \) or \[ \] (it credited $9+1$ only).
MATH_DELIMITER_CASES = [
    ("inline dollars", "$9+1$", "10", 1.0),
    ("inline parentheses", "\\(9+1\\)", "10", 1.0),
    ("display brackets", "\\[9+1\\]", "10", 1.0),
    ("display dollars", "$$9+1$$", "10", 1.0),
    ("latex product in parentheses delimiters", "\\(2 \\times 5\\)", "10", 1.0),
    ("wrong sum in parentheses delimiters", "\\(9+2\\)", "10", 0.0),
    ("two delimited expressions are not one answer", "\\(9\\) + \\(1\\)", "10", 0.0),
    ("delimiters do not open the guard", "\\(\\sqrt{100}\\)", "10", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [case[1:] for case in MATH_DELIMITER_CASES],
    ids=[case[0] for case in MATH_DELIMITER_CASES],
)
def test_math_verify_fallback_reads_inside_any_math_delimiters(answer, gold, expected):
    assert rewards.get("gsm8k_accuracy", math_verify=True)([completion(answer)], answer=[gold]) == [expected]


# Bug: an answer block inside the think block earned full accuracy when no answer followed </think>.
ANSWER_PLACEMENT_CASES = [
    # (behaviour, completion, expected by default, expected with answer_in_think: true)
    ("answer after the thinking", "<think>9 * 2</think>\n<answer>18</answer>", 1.0, 1.0),
    ("answer without any thinking", "<answer>18</answer>", 1.0, 1.0),
    ("answer after a prefilled think block", "9 * 2 = 18\n</think>\n<answer>18</answer>", 1.0, 1.0),
    ("answer inside the thinking", "<think>9 * 2 <answer>18</answer> done</think>", 0.0, 1.0),
    ("answer inside the thinking, nothing after", "<think>\n<answer>18</answer>\n</think>", 0.0, 1.0),
    ("answer before the thinking", "<answer>18</answer><think>9 * 2</think>", 0.0, 1.0),
    ("answer inside a think block never closed", "<think>9 * 2 <answer>18</answer>", 0.0, 1.0),
    ("answer inside the second think block", "<think>a</think><think>b <answer>18</answer></think>", 0.0, 1.0),
    ("a draft in the thinking and a final answer", "<think><answer>18</answer></think><answer>18</answer>", 0.0, 0.0),
    ("a prefilled think tag in the prose does not open a block", "9 * 2\n</think> <answer>18</answer>", 1.0, 1.0),
]


@pytest.mark.parametrize(
    ("text", "default", "in_think"),
    [case[1:] for case in ANSWER_PLACEMENT_CASES],
    ids=[case[0] for case in ANSWER_PLACEMENT_CASES],
)
def test_only_an_answer_after_the_thinking_counts(text, default, in_think):
    assert rewards.get("gsm8k_accuracy")([text], answer=["18"]) == [default]
    assert rewards.get("gsm8k_accuracy", answer_in_think=True)([text], answer=["18"]) == [in_think]
    assert rewards.get("integer_answer")([text]) == [default]
    assert rewards.get("integer_answer", answer_in_think=True)([text]) == [in_think]
    countdown = text.replace("18", "9 * 2")
    assert rewards.get("countdown_equation")([countdown], nums=[[9, 2]], target=[18]) == [default]
    loose = rewards.get("countdown_equation", answer_in_think=True)
    assert loose([countdown], nums=[[9, 2]], target=[18]) == [in_think]


def test_the_thinking_tag_is_an_option():
    text = "<reasoning>9 * 2 <answer>18</answer></reasoning>"
    assert rewards.get("gsm8k_accuracy")([text], answer=["18"]) == [1.0]  # no <think> block: nothing to be inside
    assert rewards.get("gsm8k_accuracy", think_tag="reasoning")([text], answer=["18"]) == [0.0]
    with pytest.raises(ValueError, match="both 'answer'"):
        rewards.get("gsm8k_accuracy", think_tag="answer")


ASSISTANT_18 = {"role": "assistant", "content": "<answer>18</answer>"}
TEXT_PARTS = [{"type": "text", "text": "<answer>"}, {"type": "text", "text": "18</answer>"}]
COMPLETION_SHAPES = [
    ("string", "<answer>18</answer>", 1.0),
    ("assistant message", [ASSISTANT_18], 1.0),
    ("message without a role", [{"content": "<answer>18</answer>"}], 1.0),
    ("last assistant message counts", [ASSISTANT_18, {"role": "tool"}, {"role": "assistant", "content": "7"}], 0.0),
    ("content parts", [{"role": "assistant", "content": TEXT_PARTS}], 1.0),
    ("a user message is not the model's answer", [{"role": "user", "content": "<answer>18</answer>"}], 0.0),
    ("assistant message without content", [{"role": "assistant"}], 0.0),
    ("empty conversation", [], 0.0),
    ("not text", 18, 0.0),
    ("None", None, 0.0),
]


@pytest.mark.parametrize(
    ("shape", "expected"), [case[1:] for case in COMPLETION_SHAPES], ids=[case[0] for case in COMPLETION_SHAPES]
)
def test_completion_shapes(shape, expected):
    assert rewards.get("gsm8k_accuracy")([shape], answer=["18"]) == [expected]


def test_gsm8k_accuracy_ignores_unknown_kwargs():
    reward = rewards.get("gsm8k_accuracy")
    scores = reward(
        [completion("18")], answer=["18"], prompts=["q"], completion_ids=[[1, 2]], trainer_state=None, question=["q"]
    )
    assert scores == [1.0]


def test_gsm8k_accuracy_without_the_answer_column_says_which_column():
    with pytest.raises(ValueError, match=r"column 'answer'.*\['question'\]"):
        rewards.get("gsm8k_accuracy")([completion("18")], question=["q"])
    with pytest.raises(ValueError, match="one value per completion"):
        rewards.get("gsm8k_accuracy")([completion("18"), completion("1")], answer=["18"])


def test_completions_must_be_a_list():
    with pytest.raises(TypeError, match="wrap a single completion"):
        rewards.get("gsm8k_accuracy")(completion("18"), answer=["18"])


INTEGER_CASES = [
    ("integer", "42", 1.0),
    ("negative integer", "-7", 1.0),
    ("thousands separator", "1,000", 1.0),
    ("whitespace around", "\n 42 \n", 1.0),
    ("decimal", "42.0", 0.0),
    ("fraction", "3/4", 0.0),
    ("words", "forty-two", 0.0),
    ("number with unit", "42 dollars", 0.0),
    ("unicode digits", "\u0664\u0662", 0.0),
    ("empty", "", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [case[1:] for case in INTEGER_CASES], ids=[case[0] for case in INTEGER_CASES]
)
def test_integer_answer(answer, expected):
    assert rewards.get("integer_answer")([completion(answer)]) == [expected]
    assert rewards.get("integer_answer", value=0.5)([completion(answer)]) == [expected * 0.5]


def test_integer_answer_without_answer_block():
    assert rewards.get("integer_answer")(["42"], answer=["42"]) == [0.0]


def gsm8k_golds() -> list[str]:
    if not GSM8K_TEST.is_file():
        pytest.skip(f"{GSM8K_TEST} is absent")
    return [json.loads(line)["answer"].rsplit("####", 1)[1].strip() for line in GSM8K_TEST.read_text().splitlines()]


def test_every_gsm8k_test_gold_scores_one_and_gold_plus_one_scores_zero():
    golds = gsm8k_golds()
    assert len(golds) == 1319
    values = [int(gold.replace(",", "")) for gold in golds]
    forms = {
        "plain": str,
        "thousands": lambda value: f"{value:,}",
        "dollar": lambda value: f"-${-value}" if value < 0 else f"${value}",
        "decimal": lambda value: f"{value}.00",
    }
    reward = rewards.get("gsm8k_accuracy")
    for form_name, form in forms.items():
        right = reward([completion(form(value)) for value in values], answer=golds)
        wrong = reward([completion(form(value + 1)) for value in values], answer=golds)
        missed = [(gold, form(value)) for gold, value, score in zip(golds, values, right, strict=True) if score != 1.0]
        accepted = [
            (gold, form(value + 1)) for gold, value, score in zip(golds, values, wrong, strict=True) if score != 0.0
        ]
        assert not missed, f"{form_name}: gold not scored 1.0: {missed[:5]}"
        assert not accepted, f"{form_name}: gold+1 not scored 0.0: {accepted[:5]}"


@pytest.mark.parametrize("text", ["18", "1,000", "$18", "18.00", "-5", "3/4", "\\frac{3}{4}", "\\boxed{18}", "18."])
def test_parse_number_reads_the_issue_forms(text):
    assert parse_number(text) is not None
