"""`aha report`: plots, before/after table, samples and model card from a run folder (here one written by hand with
TensorBoard's own writer, in the tags TRL logs; tests/e2e/test_eval_report.py does it on a real run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from aha import report
from aha.report import read_scalars, run_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 40


def write_events(folder: Path, steps: range, values: dict[str, callable]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step in steps:
        for tag, value in values.items():
            writer.add_scalar(tag, value(step), step)
    writer.close()


TRL_SCALARS = {
    "train/reward": lambda s: 0.2 + 0.01 * s,
    "train/reward_std": lambda s: 0.1,
    "train/rewards/gsm8k_accuracy/mean": lambda s: 0.01 * s,
    "train/rewards/gsm8k_accuracy/std": lambda s: 0.05,
    "train/rewards/think_format/mean": lambda s: 0.9,
    "train/rewards/think_format/std": lambda s: 0.02,
    "train/completions/mean_length": lambda s: 30 + s / 4,
    "train/completions/min_length": lambda s: 12,
    "train/completions/max_length": lambda s: 44,
    "train/completions/mean_terminated_length": lambda s: 28 + s / 5,
    "train/completions/clipped_ratio": lambda s: 0.1,
    "train/loss": lambda s: 0.01 * (-1) ** s,
    "train/grad_norm": lambda s: 1.0 / (1 + s),
    "train/kl": lambda s: 0.0,  # beta 0: TRL logs nothing useful here; the report leaves it out
    "train/entropy": lambda s: 0.5 - s / 200,
    "train/frac_reward_zero_std": lambda s: 0.5 - s / 100,
    "train/clip_ratio/region_mean": lambda s: 0.0,
    "train/learning_rate": lambda s: 5e-5,
    "train/aha/reflection_rate": lambda s: s / 100,
    "train/aha/reflections_per_completion": lambda s: s / 50,
    "train/aha/completion_length": lambda s: 30 + s / 4,
    "train/aha/phrase/wait": lambda s: s / 200,
    "train/aha/phrase/however": lambda s: 0.0,
}


def eval_result(model: str, greedy: float, samples: int = 4, **settings) -> dict:
    return {
        "model": model, "model_kind": "full", "task": "arith", "dataset": "synthetic:arith", "split": "test", "n": 50,
        "settings": {"backend": "transformers", "samples": samples, "temperature": 1.0, "max_new_tokens": 44,
                     **settings},
        "wall_time_s": 3.2,
        "metrics": {"n": 50, "n_scored": 50, "n_unscorable": 0, "greedy_pass@1": greedy, "greedy_pass@1_stderr": 0.05,
                    "pass@1": greedy / 2, f"pass@{samples}": min(1.0, greedy * 2), f"maj@{samples}": greedy,
                    "format_greedy": 1.0, "mean_tokens_greedy": 31.5},
    }  # fmt: skip


def write_completions(folder: Path, steps: list[int]) -> None:
    import pandas as pd

    folder.mkdir(parents=True)
    for step in steps:
        rows = {
            "step": [step] * 3,
            "prompt": [[{"role": "system", "content": "Solve."}, {"role": "user", "content": f"question {step}"}]] * 3,
            "completion": [[{"role": "assistant", "content": f"<answer>{step + i}</answer> ```code```"}]
                           for i in range(3)],
            "gsm8k_accuracy": [0.0, 0.0, 1.0],
            "think_format": [1.0, 1.0, 1.0],
            "advantage": [-0.3, -0.3, 0.6],
        }  # fmt: skip
        pd.DataFrame(rows).to_parquet(folder / f"completions_{step:05d}.parquet")


def make_run(run: Path, events: bool = True) -> Path:
    if events:
        write_events(run / "tensorboard", range(1, 31), TRL_SCALARS)
        # a resumed run: a second event file that logs steps 25-40 again; its values win
        write_events(run / "tensorboard", range(25, STEPS + 1), {**TRL_SCALARS, "train/reward": lambda s: 0.9})
        write_completions(run / "completions", [1, 10, 20, 30, 40])
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(json.dumps({
        "recipe": "recipes/tiny/grpo-arith.yaml", "trainer": "grpo", "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "dataset": "synthetic:arith", "global_step": STEPS, "max_steps": STEPS, "wall_time_s": 180.0, "processes": 1,
        "tensorboard_dir": str(run / "tensorboard"), "resumed_from": str(run / "checkpoint-25"),
    }))  # fmt: skip
    (run / "recipe.yaml").write_text("model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct\nlearning_rate: 5.0e-5\n")
    (run / "eval-baseline.json").write_text(json.dumps(eval_result("Qwen/Qwen2.5-0.5B-Instruct", 0.2)))
    (run / "eval.json").write_text(json.dumps(eval_result(str(run), 0.45)))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with its report written once (drawing is the slow part)."""
    run = make_run(tmp_path_factory.mktemp("runs") / "tiny-grpo-arith")
    report.write_report(run)
    return run


@pytest.fixture
def bare_run(tmp_path) -> Path:
    """A run folder without TensorBoard events or completions: fast to report on."""
    return make_run(tmp_path / "bare", events=False)


def is_png(path: Path) -> bool:
    import matplotlib.image

    image = matplotlib.image.imread(path)
    return path.read_bytes()[:8] == PNG_MAGIC and image.ndim == 3 and min(image.shape[:2]) > 200


def test_report_renders_valid_pngs_and_links_them(run_dir):
    names = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert names == ["aha.png", "completions.png", "eval.png", "rewards.png", "training.png"]
    assert all(is_png(run_dir / "plots" / name) for name in names)
    text = (run_dir / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(Path(link).name for link in links) == names
    assert all((run_dir / link).is_file() for link in links)


def test_before_after_table(run_dir):
    text = (run_dir / "report.md").read_text()
    assert "| metric | base model | trained | change |" in text
    assert "| greedy pass@1 | 20.0% ± 5.0 | 45.0% ± 5.0 | +25.0 pts |" in text
    assert "| maj@4 | 20.0% | 45.0% | +25.0 pts |" in text
    assert "| tokens (greedy) | 31.5 | 31.5 | +0.000 |" in text
    assert "Not comparable" not in text


def test_evaluations_that_measured_different_things_are_flagged(bare_run):
    (bare_run / "eval.json").write_text(json.dumps(eval_result(str(bare_run), 0.45, samples=8, temperature=0.7)))
    report.write_report(bare_run)
    text = (bare_run / "report.md").read_text()
    assert "**Not comparable as is:** samples: 4 vs 8" in text
    assert "**Not comparable as is:** temperature: 1.0 vs 0.7" in text


def test_without_evaluations_the_report_says_how_to_make_them(bare_run):
    (bare_run / "eval.json").unlink()
    (bare_run / "eval-baseline.json").unlink()
    report.write_report(bare_run)
    text = (bare_run / "report.md").read_text()
    assert "No evaluation yet" in text and "aha eval --baseline --recipe" in text
    assert "No TensorBoard events" in text and "No completions were logged" in text
    assert not (bare_run / "plots" / "eval.png").exists()


def test_a_resumed_run_merges_its_event_files_and_the_later_one_wins(run_dir):
    scalars = read_scalars(report.event_files(run_dir, {}))
    reward = dict(scalars["train/reward"])
    assert sorted(reward) == list(range(1, STEPS + 1))
    assert reward[24] == pytest.approx(0.44) and reward[25] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("kl", "has_kl_panel"),
    [(lambda s: 0.0, False), (lambda s: 0.01 * s, True)],
)
def test_kl_is_plotted_only_when_it_was_measured(tmp_path, kl, has_kl_panel):
    write_events(tmp_path / "tb", range(1, 5), {**TRL_SCALARS, "train/kl": kl})
    plots = {plot.name: plot for plot in run_plots(read_scalars(report.event_files(tmp_path, {})))}
    titles = [panel.title for panel in plots["training"].panels]
    assert ("KL to the reference model" in titles) == has_kl_panel
    assert "ratio clipped (PPO clip)" not in titles  # all zero
    assert [panel.title for panel in plots["rewards"].panels] == ["reward (weighted sum)", "gsm8k_accuracy",
                                                                  "think_format"]  # fmt: skip
    phrases = [curve.label for curve in plots["aha"].panels[-1].curves]
    assert phrases == ["wait"]  # "however" never occurred


def test_an_sft_run_gets_the_plots_it_has(tmp_path):
    write_events(tmp_path / "tensorboard", range(1, 5), {"train/loss": lambda s: 2.0 / s,
                                                         "train/mean_token_accuracy": lambda s: 0.1 * s})  # fmt: skip
    plots = run_plots(read_scalars(report.event_files(tmp_path, {})))
    assert [plot.name for plot in plots] == ["training"]
    assert [panel.title for panel in plots[0].panels] == ["loss", "token accuracy"]


def test_samples_from_the_start_middle_and_end(run_dir):
    text = (run_dir / "report.md").read_text()
    assert "### Start (step 1)" in text and "### Middle (step 20)" in text and "### End (step 40)" in text
    # the first completion, then the first whose scores differ from it
    assert "<answer>40</answer>" in text and "<answer>42</answer>" in text and "<answer>41</answer>" not in text
    assert "**Prompt:** question 40" in text
    assert "````text\n<answer>40</answer> ```code```\n````" in text  # a fence longer than the backticks inside


def test_samples_fall_back_to_the_aha_hook_file(bare_run):
    run_dir = bare_run
    rows = [{"step": s, "prompt": f"q{s}", "completion": f"wait <answer>{s}</answer>", "tokens": 5, "reflections": 1,
             "rewards": {"gsm8k_accuracy": 1.0}} for s in (0, 10, 20)]  # fmt: skip
    (run_dir / "aha-samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken")
    source, samples = report.completion_samples(run_dir)
    assert source == "aha-samples.jsonl"
    assert sorted(samples) == [0, 10, 20]
    assert samples[10][0].scores == {"gsm8k_accuracy": 1.0, "reflections": 1}


def test_model_card(run_dir):
    card = (run_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "datasets" not in front  # a generated dataset is not a hub dataset
    assert "| greedy pass@1 |" in card and "| learning_rate | `5e-05` |" in card
    assert "![Rewards](plots/rewards.png)" in card
    assert "```yaml\nmodel_name_or_path: Qwen/Qwen2.5-0.5B-Instruct" in card


def test_no_model_card_leaves_readme_alone(bare_run):
    (bare_run / "README.md").write_text("mine")
    assert report.main([str(bare_run), "--no-model-card"]) == 0
    assert (bare_run / "README.md").read_text() == "mine"


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_not_a_run_folder_exits_2(tmp_path, capsys, setup):
    folder = tmp_path / "run"
    if setup == "empty":
        folder.mkdir()
    assert report.main([str(folder)]) == 2
    assert "aha report:" in capsys.readouterr().err
