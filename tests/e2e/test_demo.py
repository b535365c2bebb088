"""`aha demo --compare`, shortened (a few steps per stage, the small tiny model): the mechanics of the CPU demo.

The learning targets (warm start 20-50%, +15 / +10 points after GRPO) are a benchmark, `make demo`, not a test.
"""

from __future__ import annotations

import json

import pytest

from aha.demo import DemoError, plan
from tests.e2e.conftest import run_aha
from tests.helpers import write_recipe

pytestmark = pytest.mark.e2e

GRPO_STEPS = 4
# one operation on numbers up to 15; 150 warm-up steps give the small model the format (measured: 100% greedy, 85%
# sampled, 21% correct; after 60 steps only 29% greedy format)
WARMUP_STEPS = 150
GENERATOR = {"n_train": 1000, "n_test": 24, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1}
EVAL = ("--eval-n", "24", "--eval-samples", "4")


def demo_recipes(folder, **grpo_keys):
    tiny, warm, runs = folder / "tiny", folder / "warm", folder / "runs"
    warmup = write_recipe(
        folder, "tiny/sft-warmup.yaml", "warmup.yaml", model_name_or_path=str(tiny), output_dir=str(warm),
        max_steps=WARMUP_STEPS, learning_rate=3e-3, warmup_steps=5, dataset_generator=GENERATOR,
    )  # fmt: skip
    grpo = write_recipe(
        folder, "tiny/grpo-arith.yaml", "grpo.yaml", model_name_or_path=str(warm), output_dir=str(runs / "demo"),
        max_steps=GRPO_STEPS, num_generations=4, per_device_train_batch_size=16, max_completion_length=32,
        save_steps=2, learning_rate=1e-3, dataset_generator=GENERATOR, **grpo_keys,
    )  # fmt: skip
    sft = write_recipe(
        folder, "tiny/sft-continue.yaml", "sft.yaml", model_name_or_path=str(warm), output_dir=str(runs / "demo-sft"),
        dataset_generator=GENERATOR,
    )  # fmt: skip
    return ["--warmup", str(warmup), "--grpo", str(grpo), "--sft", str(sft)], runs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    recipes, runs = demo_recipes(folder)
    first = run_aha("demo", "--compare", *recipes, "--tiny-preset", "small", *EVAL, timeout=1200)
    again = run_aha("demo", *recipes, "--tiny-preset", "small", *EVAL)
    return folder, runs, first, again


def scalars(run):
    from aha.reporting.runs import event_files, read_scalars

    return read_scalars(event_files(run, {}))


def test_the_warm_start_emits_the_format(demo):
    _, runs, _, _ = demo
    baseline = json.loads((runs / "demo" / "eval-baseline.json").read_text())
    assert baseline["baseline"] is True and baseline["n"] == 24
    assert baseline["metrics"]["format_greedy"] >= 0.8, baseline["metrics"]
    assert baseline["metrics"]["format_sampled"] >= 0.5, baseline["metrics"]


def test_grpo_steps_have_reward_variance_and_gradient(demo):
    _, runs, _, _ = demo
    logged = scalars(runs / "demo")
    assert len(logged["train/reward_std"]) == GRPO_STEPS
    assert all(value > 0 for _, value in logged["train/reward_std"]), logged["train/reward_std"]
    assert all(value > 0 for _, value in logged["train/grad_norm"]), logged["train/grad_norm"]


def test_evaluations_and_the_report_appear(demo):
    _, runs, first, _ = demo
    run = runs / "demo"
    for name in ("eval.json", "eval-baseline.json", "samples.jsonl", "report.md", "plots/eval.png"):
        assert (run / name).is_file(), name
    assert f"report -> {run / 'report.md'}" in first.stdout
    report = (run / "report.md").read_text()
    assert "## Compared runs" in report and "demo-seed1" in report and "demo-sft" in report


def test_the_comparison_runs_a_second_seed_and_sft_for_the_same_time(demo):
    _, runs, first, _ = demo
    seed_run, sft_run = runs / "demo-seed1", runs / "demo-sft"
    assert json.loads((seed_run / "summary.json").read_text())["global_step"] == GRPO_STEPS
    assert "--seed" in json.loads((seed_run / "summary.json").read_text())["overrides"]
    sft = json.loads((sft_run / "summary.json").read_text())
    # trained by steps: as many as fit in GRPO's training time at the warm start's SFT speed
    grpo = json.loads((runs / "demo" / "summary.json").read_text())
    warm = json.loads((runs.parent / "warm" / "summary.json").read_text())
    speed = warm["global_step"] / warm["train_summary"]["train_runtime"]
    expected = max(1, round(grpo["train_summary"]["train_runtime"] * speed))
    assert (sft["stopped_by"], sft["global_step"], sft["max_steps"]) == ("max_steps", expected, expected)
    assert "continued SFT gets GRPO's" in first.stdout and f": {expected} steps" in first.stdout
    sft_eval = json.loads((sft_run / "eval.json").read_text())
    grpo_eval = json.loads((runs / "demo" / "eval.json").read_text())
    # scored like the GRPO run: same held-out problems, token budget and temperature
    assert sft_eval["settings"]["max_new_tokens"] == grpo_eval["settings"]["max_new_tokens"] == 32
    assert sft_eval["n"] == grpo_eval["n"]
    comparison = json.loads((runs / "demo" / "comparison.json").read_text())
    assert len(comparison["columns"]) == 4  # base model, this run, seed 1, sft


def test_a_rerun_keeps_the_warm_start_and_the_finished_run(demo):
    _, _, _, again = demo
    assert "warm start cached" in again.stdout
    assert "nothing to train" in again.stdout
    assert again.stdout.count("$ aha launch") == 1  # the GRPO stage, which found its run finished
    assert "$ aha eval" not in again.stdout  # both evaluations are newer than their models


def test_recipes_that_do_not_chain_fail_before_anything_runs(tmp_path):
    recipes, _ = demo_recipes(tmp_path)
    grpo = tmp_path / "grpo.yaml"
    write_recipe(tmp_path, "tiny/grpo-arith.yaml", "grpo.yaml", model_name_or_path=str(tmp_path / "elsewhere"))
    with pytest.raises(DemoError, match="model_name_or_path"):
        plan(recipes[1], str(grpo), recipes[5])
    done = run_aha_failing("demo", *recipes)
    assert done.returncode == 2 and "model_name_or_path" in done.stderr


def run_aha_failing(*args):
    import subprocess
    import sys

    from tests.helpers import REPO

    return subprocess.run([sys.executable, "-m", "aha.cli", *args], cwd=REPO, capture_output=True, text=True)
