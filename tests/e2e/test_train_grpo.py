"""A real GRPO run of the default recipe's machinery on the tiny model: learning signal, logs, model, resume."""

from __future__ import annotations

import json
import math

import pytest

from tests.e2e.conftest import run_aha
from tests.helpers import write_recipe

pytestmark = pytest.mark.e2e


def scalar_tags(tensorboard_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in tensorboard_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def short_grpo_recipe(folder, warm_model, **keys):
    """recipes/tiny/grpo-arith.yaml from the warm start, cut to 2 steps of 4 prompts x 4 completions of 32 tokens."""
    short = {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 16, "max_completion_length": 32}
    return write_recipe(
        folder,
        "tiny/grpo-arith.yaml",
        model_name_or_path=str(warm_model),
        output_dir=str(folder / "run"),
        **{**short, **keys},
    )


@pytest.fixture(scope="module")
def grpo_run(warm_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpo")
    recipe = short_grpo_recipe(
        folder,
        warm_model,
        save_steps=1,
        reward_funcs=["gsm8k_accuracy", "think_format", "tag_count"],
        reward_weights=[1.0, 0.1, 0.5],
        learning_rate=1e-3,
    )
    done = run_aha("train", str(recipe))
    return recipe, folder / "run", done


def test_prints_where_model_and_logs_went(grpo_run):
    _, run, done = grpo_run
    assert f"model -> {run}" in done.stdout
    assert "tensorboard -> " in done.stdout


def test_the_console_says_what_a_person_reads(grpo_run):
    _, run, done = grpo_run
    assert "step 1/2 | reward " in done.stdout  # one compact line a step
    assert "{'loss'" not in done.stdout and "'frac_reward_zero_std'" not in done.stdout  # not the whole logs dict
    assert "aha: trained 2 of 2 steps (reached max_steps)" in done.stdout
    assert "aha: reward (mean of up to 10 logged steps) " in done.stdout
    assert f"aha eval --model {run} && aha report {run}" in done.stdout


def test_the_run_folder_holds_the_resolved_recipe(grpo_run):
    from aha.recipe import load
    from aha.run_folder import RunFolder

    recipe, run, _ = grpo_run
    folder = RunFolder(run)
    assert folder.recipe_copy.read_text() == recipe.read_text()
    resolved = load(str(folder.resolved_recipe), require_model=False)
    assert resolved.training.max_steps == 2 and resolved.training.learning_rate == 1e-3
    assert folder.recipe_file() == folder.resolved_recipe


def test_every_step_had_a_learning_signal(grpo_run):
    _, run, _ = grpo_run
    history = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert len(steps) == 2
    # rewards vary inside groups, so advantages and the gradient are nonzero
    assert all(entry["reward_std"] > 0 for entry in steps), steps
    assert all(entry["grad_norm"] > 0 for entry in steps), steps
    assert all(entry["frac_reward_zero_std"] < 1 for entry in steps), steps


def test_reward_scalars_reach_tensorboard(grpo_run):
    _, run, _ = grpo_run
    tags = scalar_tags(run / "tensorboard")
    for tag in (
        "train/reward",
        "train/reward_std",
        "train/rewards/tag_count/mean",
        "train/rewards/gsm8k_accuracy/mean",
        "train/grad_norm",
        "train/entropy",
    ):
        assert tag in tags, sorted(tags)


def test_saved_model_reloads_and_generates(grpo_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run, _ = grpo_run
    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForCausalLM.from_pretrained(run)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 3 apples. He buys 4 more."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    new_tokens = out[0, prompt["input_ids"].shape[1] :]
    assert len(new_tokens) > 0
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_summary_records_the_run(grpo_run):
    recipe, run, _ = grpo_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == str(recipe)
    assert summary["global_step"] == 2
    assert summary["wall_time_s"] > 0
    assert "reward" in summary["final_metrics"]


def test_rerun_resumes_from_the_last_checkpoint(grpo_run):
    recipe, run, _ = grpo_run
    done = run_aha("train", str(recipe), "--max_steps", "3")
    assert "resuming from" in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 3


def test_rerunning_a_finished_run_changes_nothing(grpo_run):
    recipe, run, _ = grpo_run
    before = (run / "summary.json").read_text()
    done = run_aha("train", str(recipe), "--max_steps", "2")
    assert "already finished step" in done.stdout
    assert (run / "summary.json").read_text() == before


def test_a_run_stopped_by_its_time_guard_says_so_and_resumes_to_max_steps(warm_model, tmp_path):
    recipe = short_grpo_recipe(
        tmp_path,
        warm_model,
        max_train_minutes=0.0005,  # 30 ms: every step outlasts it
    )
    first = run_aha("train", str(recipe))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["stopped_by"], summary["global_step"], summary["max_steps"]) == ("max_train_minutes", 1, 2)
    assert "aha: trained 1 of 2 steps (stopped by the time guard max_train_minutes=0.0005" in first.stdout
    assert "Run the same command again to train on to step 2" in first.stdout

    again = run_aha("train", str(recipe))  # the same command
    assert "resuming from" in again.stdout and "checkpoint-1" in again.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["stopped_by"], summary["global_step"]) == ("max_steps", 2)
    assert "aha: trained 2 of 2 steps (reached max_steps)" in again.stdout


def test_bf16_autocast_on_the_cpu_keeps_small_updates_and_saves_float32(warm_model, tmp_path):
    """`bf16: true` over `dtype: float32` on a CPU: matmuls in bf16, the optimizer adds lr-sized steps to fp32 weights.
    At lr 1e-5 a bf16 weight would round most of those steps away (aha/precision.py); here they must arrive."""
    import torch
    from safetensors.torch import load_file

    recipe = short_grpo_recipe(tmp_path, warm_model, learning_rate=1e-5, bf16=True)
    run_aha("train", str(recipe))
    before, after = load_file(warm_model / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert {tensor.dtype for tensor in after.values()} == {torch.float32}
    moved = [name for name, tensor in after.items() if not torch.equal(tensor, before[name])]
    assert len(moved) / len(after) > 0.9, f"only {len(moved)} of {len(after)} tensors moved"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 2
    metrics = summary["final_metrics"]
    assert math.isfinite(metrics["loss"]) and metrics["reward"] > 0 and metrics["reward_std"] > 0, metrics
    assert any(tag.endswith("rewards/gsm8k_accuracy/mean") for tag in scalar_tags(tmp_path / "run" / "tensorboard"))
