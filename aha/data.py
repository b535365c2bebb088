"""Rows in, prompts out: GSM8K-style and Countdown tasks from the hub, local files or offline generators.

Every task ends in the same shape, whatever its source:
- `prompt`: the conversation (system + user), or, when the recipe pre-fills the assistant turn, the rendered text
  ending in the prefill (TRL tokenizes a string prompt as is, so the model continues the prefill);
- the gold columns the rewards read: `answer` (gsm8k; the number after '####' without thousands separators) or
  `nums` and `target` (countdown);
- for gsm8k, `solution`: the worked steps, calculator annotations removed (the supervised warm-up's target).
Training, evaluation and the chat demo all format prompts through `format_prompt`: one source of truth.
"""

from __future__ import annotations

import os
import re
from typing import Any

from aha.recipe import SYNTHETIC_PREFIX, DatasetArguments, PromptArguments, RecipeError

GOLD_COLUMNS = {"gsm8k": ("question", "answer"), "countdown": ("nums", "target")}
CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def gsm8k_gold(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after '####', thousands separators removed ('1,000' -> '1000')."""
    final = answer.rsplit("####", 1)[-1]
    return final.strip().replace(",", "")


def gsm8k_solution(answer: str) -> str:
    """The worked steps of a GSM8K solution, without the '#### N' line and the '<<48/2=24>>' annotations."""
    steps = answer.rsplit("####", 1)[0] if "####" in answer else ""
    return CALCULATOR_ANNOTATION.sub("", steps).strip()


# --------------------------------------------------------------------------------------------------------------------
# Loading raw rows


def _synthetic_rows(args: DatasetArguments, split: str) -> list[dict[str, Any]]:
    from aha import synthetic

    task = args.dataset_name[len(SYNTHETIC_PREFIX) :]
    options = dict(args.dataset_generator or {})
    make = {"arith": synthetic.arith_splits, "countdown": synthetic.countdown_splits}[task]
    try:
        train, test = make(**options)
    except TypeError as err:
        raise RecipeError(
            "dataset_generator", f"options {sorted(options)} do not fit {args.dataset_name}: {err}"
        ) from err
    if split == "train":
        return train
    if split == "test":
        return test
    raise RecipeError("dataset_train_split", f"{args.dataset_name} has splits train and test, not {split!r}.")


def _load_local(path: str, split: str):
    import datasets

    path = os.path.expanduser(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_dict.json")):
            return datasets.load_from_disk(path)[split]
        if os.path.exists(os.path.join(path, "dataset_info.json")):
            return datasets.load_from_disk(path)
        return datasets.load_dataset(path, split=split)
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}[os.path.splitext(path)[1]]
    # a single file is one split, whatever its name
    return datasets.load_dataset(builder, data_files={"data": path}, split="data")


def load_rows(args: DatasetArguments, split: str):
    """The split `split` of the recipe's dataset as a `datasets.Dataset` with our column names."""
    import datasets

    if args.dataset_name.startswith(SYNTHETIC_PREFIX):
        table = datasets.Dataset.from_list(_synthetic_rows(args, split))
    elif split == args.dataset_test_split and args.dataset_test_path:
        table = _load_local(args.dataset_test_path, split)
    elif os.path.exists(os.path.expanduser(args.dataset_name)):
        table = _load_local(args.dataset_name, split)
    else:
        table = datasets.load_dataset(args.dataset_name, args.dataset_config, split=split)
    if args.dataset_columns:
        missing = [source for source in args.dataset_columns.values() if source not in table.column_names]
        if missing:
            raise RecipeError(
                "dataset_columns", f"source columns {missing} are not in the dataset; it has {table.column_names}."
            )
        table = table.rename_columns({src: ours for ours, src in args.dataset_columns.items() if src != ours})
    needed = GOLD_COLUMNS[args.dataset_task]
    absent = [column for column in needed if column not in table.column_names]
    if absent:
        raise RecipeError(
            "dataset_columns",
            f"the {args.dataset_task} task needs columns {list(needed)}; {absent} missing from {table.column_names}. "
            f"Map them, e.g. dataset_columns: {{{absent[0]}: <source column>}}.",
        )
    return table


# --------------------------------------------------------------------------------------------------------------------
# Formatting


def messages(row: dict[str, Any], prompt: PromptArguments) -> list[dict[str, str]]:
    """System + user messages for one row (the user message is `user_template` over the row's columns)."""
    try:
        user = prompt.user_template.format(**row)
    except (KeyError, IndexError) as err:
        raise RecipeError(
            "user_template", f"refers to {err} which is not a column; columns are {sorted(row)}."
        ) from err
    conversation = [{"role": "system", "content": prompt.system_prompt}] if prompt.system_prompt else []
    return [*conversation, {"role": "user", "content": user}]


def format_prompt(row: dict[str, Any], prompt: PromptArguments, tokenizer=None) -> list[dict[str, str]] | str:
    """The prompt TRL generates from: a conversation, or, with an assistant prefill, the rendered text that ends
    in the prefill (needs the tokenizer's chat template)."""
    conversation = messages(row, prompt)
    if not prompt.assistant_prefill:
        return conversation
    if tokenizer is None:
        raise ValueError("format_prompt needs the tokenizer to render an assistant prefill")
    return tokenizer.apply_chat_template(
        [*conversation, {"role": "assistant", "content": prompt.assistant_prefill}],
        tokenize=False,
        continue_final_message=True,
    )


def _normalise_gold(row: dict[str, Any], task: str) -> dict[str, Any]:
    if task == "gsm8k":
        answer = str(row["answer"])
        return {"answer": gsm8k_gold(answer), "solution": gsm8k_solution(answer)}
    return {"nums": [int(n) for n in row["nums"]], "target": int(row["target"])}


def grpo_dataset(args: DatasetArguments, prompt: PromptArguments, tokenizer, split: str):
    """Prompts plus gold columns for GRPOTrainer (and for evaluation: same function, held-out split)."""
    table = load_rows(args, split)
    if split == args.dataset_train_split and args.dataset_max_rows:
        table = table.select(range(min(args.dataset_max_rows, len(table))))

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        gold = _normalise_gold(row, args.dataset_task)
        return {"prompt": format_prompt({**row, **gold}, prompt, tokenizer), **gold}

    keep = ["prompt", *(("answer", "solution") if args.dataset_task == "gsm8k" else ("nums", "target"))]
    table = table.map(to_example)
    return table.remove_columns([c for c in table.column_names if c not in keep])


def sft_dataset(args: DatasetArguments, prompt: PromptArguments, split: str):
    """Conversational prompt/completion pairs for SFTTrainer: the loss falls on the completion only."""
    if not prompt.completion_template:
        raise RecipeError(
            "completion_template",
            "an sft recipe needs the target completion, e.g. "
            "'<think>\\n{solution}\\n</think>\\n<answer>{answer}</answer>'.",
        )
    table = load_rows(args, split)
    if split == args.dataset_train_split and args.dataset_max_rows:
        table = table.select(range(min(args.dataset_max_rows, len(table))))

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        filled = {**row, **_normalise_gold(row, args.dataset_task)}
        try:
            completion = prompt.completion_template.format(**filled)
        except KeyError as err:
            raise RecipeError("completion_template", f"refers to {err}, not a column of {sorted(filled)}.") from err
        return {"prompt": messages(filled, prompt), "completion": [{"role": "assistant", "content": completion}]}

    table = table.map(to_example)
    return table.remove_columns([c for c in table.column_names if c not in ("prompt", "completion")])
