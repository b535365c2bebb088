"""aha.tiny: the offline tiny Qwen2 model and its tokenizer."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from aha.tiny import PRESETS, TAG_TOKENS, build_tiny_model, default_corpus, main

SYSTEM = "Think inside <think> </think>, then answer inside <answer> </answer>."
USER = "Tom has 12 apples. He buys 7 more. How many apples does Tom have now?"
PREFILL = "Let me solve this step by step.\n<think>"


def build(path: Path, seed: int = 0) -> Path:
    return build_tiny_model(path, seed=seed, corpus=default_corpus(seed), **asdict(PRESETS["small"]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


def test_reloads_as_untied_qwen2_with_vllm_compatible_head_dim(tiny, tokenizer):
    config = AutoConfig.from_pretrained(tiny)
    assert config.model_type == "qwen2"
    assert config.tie_word_embeddings is False
    assert config.hidden_size // config.num_attention_heads >= 32
    assert config.vocab_size == len(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.get_input_embeddings().weight.data_ptr() != model.get_output_embeddings().weight.data_ptr()
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_tokenizer_special_tokens_and_left_padding(tokenizer):
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    batch = tokenizer(["1", "1 2 3"], padding=True)
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0][0] == 0


@pytest.mark.parametrize("number", ["7", "42", "1234567890"])
def test_digits_are_single_tokens(tokenizer, number):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(f"There are {number} coins.")["input_ids"])
    assert [t for t in tokens if t.isdigit()] == list(number)


@pytest.mark.parametrize("tag", TAG_TOKENS)
def test_tags_are_single_tokens_that_survive_skip_special_tokens(tokenizer, tag):
    ids = tokenizer(f"x{tag}5")["input_ids"]
    assert tokenizer.convert_tokens_to_ids(tag) in ids
    assert len(ids) == 3
    # TRL decodes completions with skip_special_tokens=True; the rewards must still see the tags
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"x{tag}5"


def test_tokenization_matches_tokenizer_json(tiny, tokenizer):
    # AutoTokenizer builds Qwen2Tokenizer, which rebuilds the pre-tokenizer; it must agree with the trained one
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    for text in [USER, f"{PREFILL}\n12 + 7 = 19\n</think>\n<answer>19</answer>", "  café\n\n 3.5, 1,000!"]:
        assert tokenizer(text)["input_ids"] == raw.encode(text).ids
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@pytest.mark.parametrize(
    ("messages", "kwargs", "expected_end"),
    [
        ([], {"add_generation_prompt": False}, f"<|im_start|>user\n{USER}<|im_end|>\n"),
        ([], {"add_generation_prompt": True}, "<|im_end|>\n<|im_start|>assistant\n"),
        (
            [{"role": "assistant", "content": PREFILL}],
            {"continue_final_message": True},
            f"<|im_end|>\n<|im_start|>assistant\n{PREFILL}",
        ),
    ],
    ids=["no-generation-prompt", "generation-prompt", "assistant-prefill"],
)
def test_chat_template_is_chatml(tokenizer, messages, kwargs, expected_end):
    conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}, *messages]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert text.endswith(expected_end)


def test_generate_runs_on_a_left_padded_batch(tiny, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in ["1 + 1?", USER]
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=8, do_sample=True)
    assert out.shape[0] == 2 and 1 <= out.shape[1] - batch["input_ids"].shape[1] <= 8


@pytest.mark.parametrize(("seed", "identical"), [(0, True), (1, False)], ids=["same-seed", "other-seed"])
def test_build_is_deterministic_for_a_seed(tiny, tmp_path, seed, identical):
    other = build(tmp_path / "again", seed=seed)
    files = sorted(p.name for p in tiny.iterdir())
    assert files == sorted(p.name for p in other.iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    same_weights = (tiny / "model.safetensors").read_bytes() == (other / "model.safetensors").read_bytes()
    assert same_weights is identical
    if identical:
        assert all((tiny / name).read_bytes() == (other / name).read_bytes() for name in files)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"hidden_size": 96, "num_heads": 2}, "head_dim"),  # head_dim 48
        ({"hidden_size": 64, "num_heads": 3}, "divisible"),
        ({"num_heads": 2, "num_kv_heads": 3}, "divisible"),
    ],
    ids=["head-dim-48-unsupported", "heads-do-not-divide-hidden", "kv-heads-do-not-divide-heads"],
)
def test_rejects_sizes_vllm_cannot_serve(tmp_path, sizes, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_model(tmp_path, seed=0, corpus=["a b c"], **{**asdict(PRESETS["small"]), **sizes})


def test_cli_builds_the_preset_and_prints_where(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "cli"), "--preset", "small", "--seed", "2"]) == 0
    assert (tmp_path / "cli" / "config.json").is_file()
    assert str(tmp_path / "cli") in capsys.readouterr().out
