"""`aha export`: a LoRA run merged into a full model that generates exactly what the adapter model generates."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import ClassVar

import pytest

from aha import cli, export

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPE = "recipes/tiny/grpo-arith.yaml"
QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 12 minus 5?"]
TOKEN_SENTINEL = "hf_export_test_token_must_never_be_printed"


def png_bytes() -> bytes:
    """A valid 1x1 grey PNG (what a report plot is, as far as export cares)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")  # one row: filter byte 0, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model) -> Path:
    """A run folder as a LoRA GRPO run leaves it: adapter with non-zero B weights (so merging changes the weights),
    tokenizer, summary.json naming the recipe, before/after eval files and a plot."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("lora-run") / "tiny-lora"
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    # init_lora_weights=False: B is random instead of zero, as after training
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGET_MODULES, init_lora_weights=False)
    model = get_peft_model(base, config)
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(run)
    summary = {
        "recipe": RECIPE,
        "model": str(tiny_model),
        "dataset": "synthetic:arith",
        "processes": 1,
        "global_step": 3,
        "max_steps": 3,
        "wall_time_s": 1.5,
        "final_metrics": {"loss": 0.0123, "reward": 0.625, "step": 3},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    for name, accuracy in (("eval-baseline.json", 0.25), ("eval.json", 0.5)):
        result = {"dataset": "synthetic:arith", "split": "test", "n": 4, "metrics": {"greedy_pass@1": accuracy}}
        (run / name).write_text(json.dumps(result))
    (run / "report").mkdir()
    (run / "report" / "reward.png").write_bytes(png_bytes())
    return run


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("exported") / "merged"
    assert export.main([str(lora_run), "--output", str(output)]) == 0
    return output


def greedy(model, tokenizer, max_new_tokens: int = 16) -> list[list[int]]:
    import torch

    outputs = []
    for question in QUESTIONS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        outputs.append(out[0, ids.shape[1] :].tolist())
    return outputs


def test_merged_model_generates_what_the_adapter_model_generates(lora_run, exported, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    adapter_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), lora_run
    ).eval()
    merged = AutoModelForCausalLM.from_pretrained(exported).eval()

    merged_output = greedy(merged, tokenizer)
    assert merged_output == greedy(adapter_model, tokenizer)
    assert all(len(ids) > 0 for ids in merged_output)
    # the adapter changes the model: the test would pass vacuously if merging were a no-op
    ids = tokenizer(QUESTIONS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits, adapter_logits, merged_logits = (m(ids).logits for m in (base, adapter_model, merged))
    assert (adapter_logits - base_logits).abs().max() > 1e-2
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)


def test_export_folder_is_a_plain_model_with_tokenizer_template_and_card(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["dtype"] == "float32"  # the tiny recipe's training dtype
    assert not (exported / "adapter_config.json").exists()
    assert (exported / "model.safetensors").is_file()
    assert (exported / "tokenizer.json").is_file()
    template = exported / "chat_template.jinja"
    assert template.is_file() and "<|im_start|>" in template.read_text()
    assert (exported / "recipe.yaml").read_text() == Path(RECIPE).read_text()
    assert (exported / "plots" / "reward.png").read_bytes().startswith(b"\x89PNG")

    card = (exported / "README.md").read_text()
    assert card.startswith("---\nbase_model: ")
    assert "lora-merged" in card
    assert RECIPE in card
    assert "| reward | 0.625 |" in card  # final metrics from summary.json
    # before/after from the eval files, formatted by aha.evaluate (0.25 or 25.0%)
    row = next(line for line in card.splitlines() if line.startswith("| greedy pass@1 |"))
    before, after = (cell.strip() for cell in row.strip("|").split("|")[1:3])  # then the change
    assert "25" in before and "50" in after
    assert "![reward](plots/reward.png)" in card
    assert "system prompt" in card


def test_dtype_flag_overrides_the_training_dtype(lora_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    output = tmp_path / "bf16"
    assert export.main([str(lora_run), "--output", str(output), "--dtype", "bfloat16"]) == 0
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(output, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_push_is_not_taken_without_the_flag(lora_run, tmp_path, monkeypatch):
    def no_push(*args, **kwargs):
        raise AssertionError("push_to_hub called without --push-to-hub")

    monkeypatch.setattr(export, "push_to_hub", no_push)
    assert export.main([str(lora_run), "--output", str(tmp_path / "out")]) == 0


class FakeHfApi:
    calls: ClassVar[list[tuple[str, dict]]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_uploads_the_folder_and_never_prints_the_token(lora_run, tmp_path, monkeypatch, capsys, caplog):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", TOKEN_SENTINEL)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    output = tmp_path / "out"
    assert export.main([str(lora_run), "--output", str(output), "--push-to-hub", "me/tiny", "--private"]) == 0
    assert FakeHfApi.calls[0] == (
        "create_repo",
        {"repo_id": "me/tiny", "private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert FakeHfApi.calls[1][1]["folder_path"] == str(output)
    assert FakeHfApi.calls[1][1]["repo_id"] == "me/tiny"
    printed = capsys.readouterr()
    assert "pushed -> https://huggingface.co/me/tiny" in printed.out
    assert TOKEN_SENTINEL not in printed.out + printed.err + caplog.text


BAD_EXPORTS = [
    ("missing run folder", "missing", None, ["does not exist"]),
    ("folder without a model", "empty", None, ["neither a LoRA adapter", "not finished"]),
    ("run with only checkpoints", "checkpoints-only", None, ["checkpoint-2"]),
    ("non-empty output", "run", "occupied", ["--overwrite"]),
]


@pytest.mark.parametrize(("kind", "output", "words"), [c[1:] for c in BAD_EXPORTS], ids=[c[0] for c in BAD_EXPORTS])
def test_bad_export_exits_2_saying_why(lora_run, tmp_path, capsys, kind, output, words):
    run = {"missing": tmp_path / "nothing", "run": lora_run}.get(kind, tmp_path / kind)
    if kind == "empty":
        run.mkdir()
    if kind == "checkpoints-only":
        (run / "checkpoint-1").mkdir(parents=True)
        (run / "checkpoint-2").mkdir()
    argv = [str(run)]
    if output:
        (tmp_path / output).mkdir()
        (tmp_path / output / "keep.txt").write_text("x")
        argv += ["--output", str(tmp_path / output)]
    assert cli.main(["export", *argv]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
