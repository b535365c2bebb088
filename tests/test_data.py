"""Data: every source ends as prompts plus the gold columns the rewards read."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from aha.data import format_prompt, grpo_dataset, gsm8k_gold, gsm8k_solution, load_rows, sft_dataset
from aha.recipe import DatasetArguments, PromptArguments, RecipeError
from tests.helpers import GSM8K_TEST

PROMPT = PromptArguments(system_prompt="Think, then answer.", user_template="{question}")
COUNTDOWN_PROMPT = PromptArguments(system_prompt=None, user_template="Using the numbers {nums}, make {target}.")


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("Step.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("a\n#### -5", "-5"),
        ("x #### 3 #### 18", "18"),
        ("no marker 42", "no marker 42"),
    ],
)
def test_gsm8k_gold_is_the_text_after_the_last_marker(answer, gold):
    assert gsm8k_gold(answer) == gold


def test_gsm8k_solution_drops_calculator_annotations():
    assert gsm8k_solution("She sold 48/2 = <<48/2=24>>24 clips.\n#### 24") == "She sold 48/2 = 24 clips."


def test_gsm8k_copy_is_the_upstream_file_its_source_note_names():
    recorded = re.search(r"\| ([0-9a-f]{64}) \|", (GSM8K_TEST.parent / "SOURCE.md").read_text()).group(1)
    assert hashlib.sha256(GSM8K_TEST.read_bytes()).hexdigest() == recorded


def test_local_gsm8k_file_becomes_conversations_with_gold():
    args = DatasetArguments(dataset_name=str(GSM8K_TEST), dataset_task="gsm8k", dataset_max_rows=50)
    table = grpo_dataset(args, PROMPT, tokenizer=None, split="train")
    assert len(table) == 50
    assert set(table.column_names) == {"prompt", "answer", "solution"}
    first = table[0]
    assert first["answer"] == "18"  # Janet's ducks
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["prompt"][1]["content"].startswith("Janet")
    assert all("," not in row["answer"] and "####" not in row["answer"] for row in table)


def test_jsonl_with_a_column_mapping(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i}+1?", "result": str(i + 1)}) + "\n" for i in range(5)))
    args = DatasetArguments(
        dataset_name=str(path), dataset_task="gsm8k", dataset_columns={"question": "problem", "answer": "result"}
    )
    table = grpo_dataset(args, PROMPT, tokenizer=None, split="train")
    assert table[3]["answer"] == "4"
    assert table[3]["prompt"][-1]["content"] == "What is 3+1?"


def test_missing_columns_name_the_mapping_key(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "result": "2"}) + "\n")
    args = DatasetArguments(dataset_name=str(path), dataset_task="gsm8k")
    with pytest.raises(RecipeError, match="dataset_columns"):
        load_rows(args, "train")


def test_generated_countdown_rows_have_nums_and_target():
    args = DatasetArguments(
        dataset_name="synthetic:countdown",
        dataset_task="countdown",
        dataset_test_split="test",
        dataset_generator={
            "n_train": 20,
            "n_test": 5,
            "seed": 1,
            "min_numbers": 3,
            "max_numbers": 4,
            "max_number": 50,
            "max_target": 100,
        },
    )
    train = grpo_dataset(args, COUNTDOWN_PROMPT, tokenizer=None, split="train")
    test = grpo_dataset(args, COUNTDOWN_PROMPT, tokenizer=None, split="test")
    assert (len(train), len(test)) == (20, 5)
    row = train[0]
    assert isinstance(row["target"], int) and 3 <= len(row["nums"]) <= 4
    assert row["prompt"] == [{"role": "user", "content": f"Using the numbers {row['nums']}, make {row['target']}."}]


def test_generator_options_that_do_not_fit_name_the_key():
    # refused when the recipe is read (aha check), before any row is generated
    with pytest.raises(RecipeError, match=r"dataset_generator.*'difficulty'.*max_number"):
        DatasetArguments(
            dataset_name="synthetic:arith", dataset_task="gsm8k", dataset_generator={"n_train": 5, "difficulty": 3}
        )


def test_prefill_renders_text_that_ends_in_the_prefill(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompt = PromptArguments(system_prompt="S", user_template="{question}", assistant_prefill="Let me think.\n<think>")
    text = format_prompt({"question": "2+2?"}, prompt, tokenizer)
    assert isinstance(text, str)
    assert text.endswith("<|im_start|>assistant\nLet me think.\n<think>")
    assert "2+2?" in text


def test_sft_pairs_put_the_worked_solution_in_the_completion():
    args = DatasetArguments(
        dataset_name="synthetic:arith",
        dataset_task="gsm8k",
        dataset_generator={"n_train": 4, "n_test": 2, "seed": 0, "max_number": 9, "min_ops": 1, "max_ops": 1},
    )
    prompt = PromptArguments(
        system_prompt=None,
        user_template="{question}",
        completion_template="<think>\n{solution}\n</think>\n<answer>{answer}</answer>",
    )
    table = sft_dataset(args, prompt, "train")
    completion = table[0]["completion"][0]["content"]
    assert completion.startswith("<think>\n") and completion.endswith("</answer>")
    assert "####" not in completion
    assert table[0]["prompt"][-1]["role"] == "user"


def test_user_template_with_an_unknown_column_names_the_key():
    prompt = PromptArguments(system_prompt=None, user_template="{problem}")
    with pytest.raises(RecipeError, match="user_template"):
        format_prompt({"question": "q"}, prompt)
