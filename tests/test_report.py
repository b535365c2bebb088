"""`aha report`: plots, before/after table, samples and model card from a run folder (here one written by hand with
TensorBoard's own writer, in the tags TRL logs; tests/e2e/test_eval_report.py does it on a real run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from aha import cli, report
from aha.reporting.comparison import compared_keys
from aha.reporting.plots import run_plots
from aha.reporting.problems import ProblemPair, pick_problems, problem_counts
from aha.reporting.runs import effective_recipe, event_files, override_values, read_scalars
from aha.reporting.samples import completion_samples
from aha.reporting.stability import stability, stability_markdown, window_means

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
                    "format_greedy": 1.0, "format_sampled": 0.9, "mean_tokens_greedy": 31.5},
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
    scalars = read_scalars(event_files(run_dir, {}))
    reward = dict(scalars["train/reward"])
    assert sorted(reward) == list(range(1, STEPS + 1))
    assert reward[24] == pytest.approx(0.44) and reward[25] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("kl", "has_kl_panel"),
    [(lambda s: 0.0, False), (lambda s: 0.01 * s, True)],
)
def test_kl_is_plotted_only_when_it_was_measured(tmp_path, kl, has_kl_panel):
    write_events(tmp_path / "tb", range(1, 5), {**TRL_SCALARS, "train/kl": kl})
    plots = {plot.name: plot for plot in run_plots(read_scalars(event_files(tmp_path, {})))}
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
    plots = run_plots(read_scalars(event_files(tmp_path, {})))
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
    source, samples = completion_samples(run_dir)
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
    assert cli.main(["report", str(folder)]) == 2
    assert "aha report:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Compared runs


def make_compared(folder: Path, *, evaluated: dict | None, summary: dict, recipe: str = "seed: 0\n") -> Path:
    """Another run folder: summary.json, its recipe copy and (unless `evaluated` is None) eval.json."""
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "recipe.yaml").write_text(recipe)
    if evaluated is not None:
        (folder / "eval.json").write_text(json.dumps(evaluated))
    return folder


def test_compared_runs_table_lines_and_comparison_json(bare_run, tmp_path):
    (bare_run / "recipe.yaml").write_text("trainer: grpo\nseed: 0\nlearning_rate: 5.0e-5\n")
    seed1 = make_compared(
        tmp_path / "seeds" / "grpo-seed1",
        evaluated=eval_result("grpo-seed1", 0.5),
        summary={"trainer": "grpo", "global_step": 40, "max_steps": 40, "wall_time_s": 200.0,
                 "train_summary": {"train_runtime": 150.0}, "stopped_by": "max_steps", "overrides": ["--seed", "1"]},
    )  # fmt: skip
    sft = make_compared(
        tmp_path / "sft-same-time",
        evaluated=eval_result("sft-same-time", 0.3, samples=8, temperature=0.7),
        summary={"trainer": "sft", "global_step": 75, "max_steps": 300, "wall_time_s": 190.0,
                 "stopped_by": "max_train_minutes"},
        recipe="trainer: sft\nseed: 3\n",
    )  # fmt: skip
    unevaluated = make_compared(tmp_path / "not-yet", evaluated=None, summary={"trainer": "grpo", "global_step": 5})
    argv = [str(bare_run), "--no-model-card", "--compare", str(seed1), "--compare", str(sft), "--compare",
            str(unevaluated)]  # fmt: skip
    assert report.main(argv) == 0
    text = (bare_run / "report.md").read_text()
    assert text.index("## Before and after") < text.index("## Compared runs") < text.index("## Training curves")
    assert "| metric | base model | this run | grpo-seed1 | sft-same-time | not-yet |" in text
    assert (
        "| greedy pass@1 | 20.0% ± 5.0 | 45.0% ± 5.0 (+25.0) | 50.0% ± 5.0 (+30.0) | 30.0% ± 5.0 (+10.0) | - |" in text
    )
    assert "| sampled pass@1 | 10.0% | 22.5% (+12.5) | 25.0% (+15.0) | 15.0% (+5.0) | - |" in text
    # the largest k any run measured: only the 8-sample evaluation has pass@8, and the base model has none to
    # subtract, so no change is shown
    assert "| pass@8 | - | - | - | 60.0% | - |" in text and "| pass@4 |" not in text.split("## Compared runs")[1]
    assert "| format (sampled) | 90.0% | 90.0% (+0.0) | 90.0% (+0.0) | 90.0% (+0.0) | - |" in text
    # the CLI override wins over the recipe copy's seed; train_runtime wins over the wall time
    assert (
        f"- **grpo-seed1**: `{seed1}`, trainer grpo, seed 1, 40 steps, 2.5 min of training, stopped by max_steps"
        in text
    )
    assert f"- **this run**: `{bare_run}`, trainer grpo, seed 0, 40 steps, 3.0 min of training" in text
    assert "seed 3, 75 steps of 300, 3.2 min of training, stopped by max_train_minutes" in text
    assert f"no eval.json in `{unevaluated}`, make it with `aha eval --model {unevaluated}`" in text
    assert "- **Not comparable as is:** sft-same-time vs base model: samples: 4 vs 8" in text
    assert "- **Not comparable as is:** sft-same-time vs base model: temperature: 1.0 vs 0.7" in text
    assert "grpo-seed1 vs base model" not in text

    saved = json.loads((bare_run / "comparison.json").read_text())
    assert saved["keys"] == ["greedy_pass@1", "pass@1", "pass@8", "format_sampled"]
    columns = {column["label"]: column for column in saved["columns"]}
    assert list(columns) == ["base model", "this run", "grpo-seed1", "sft-same-time", "not-yet"]
    assert {key: columns["grpo-seed1"][key] for key in ("folder", "trainer", "seed", "steps", "train_minutes")} == {
        "folder": str(seed1), "trainer": "grpo", "seed": 1, "steps": 40, "train_minutes": 2.5}  # fmt: skip
    assert columns["grpo-seed1"]["metrics"] == {"greedy_pass@1": 0.5, "pass@1": 0.25, "pass@8": None,
                                                "format_sampled": 0.9}  # fmt: skip
    assert columns["sft-same-time"]["metrics"]["pass@8"] == 0.6
    assert columns["sft-same-time"]["stopped_by"] == "max_train_minutes"
    assert columns["base model"]["folder"] == "Qwen/Qwen2.5-0.5B-Instruct" and columns["base model"]["steps"] == 0
    assert columns["not-yet"]["eval_file"] is None and set(columns["not-yet"]["metrics"].values()) == {None}
    assert any("temperature: 1.0 vs 0.7" in problem for problem in saved["mismatches"])


def test_without_compare_there_is_no_comparison(bare_run):
    report.write_report(bare_run)
    assert "## Compared runs" not in (bare_run / "report.md").read_text()
    assert not (bare_run / "comparison.json").exists()


def test_compare_without_a_baseline_shows_how_to_make_it(bare_run, tmp_path):
    (bare_run / "eval-baseline.json").unlink()
    other = make_compared(tmp_path / "other", evaluated=eval_result("other", 0.5), summary={"trainer": "grpo"})
    report.write_report(bare_run, card=False, compare=[other])
    text = (bare_run / "report.md").read_text()
    assert "| greedy pass@1 | - | 45.0% ± 5.0 | 50.0% ± 5.0 |" in text  # no base value: no change to show
    assert "- **base model**: not evaluated; `aha eval --baseline --recipe recipes/tiny/grpo-arith.yaml`" in text


def test_a_missing_compared_folder_exits_2_naming_it(bare_run, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert cli.main(["report", str(bare_run), "--compare", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--compare" in err
    assert not (bare_run / "comparison.json").exists()


def test_compared_keys_pick_the_largest_pass_at_k():
    results = [{"metrics": {"pass@2": 0.1, "pass@4": 0.2, "pass@1": 0.1}}, {"metrics": {"pass@16": 0.3}}]
    assert compared_keys(results) == ["greedy_pass@1", "pass@1", "pass@16", "format_sampled"]
    assert compared_keys([{"metrics": {"greedy_pass@1": 0.1}}]) == ["greedy_pass@1", "pass@1", "format_sampled"]


def test_override_values_are_typed_and_win_over_the_recipe():
    overrides = ["--seed", "1", "--beta=0.04", "--reward_funcs", "gsm8k_accuracy", "think_format", "--use_vllm"]
    assert override_values(overrides) == {
        "seed": 1, "beta": 0.04, "reward_funcs": ["gsm8k_accuracy", "think_format"], "use_vllm": True}  # fmt: skip
    recipe = effective_recipe("seed: 0\nbeta: 0.0\nlearning_rate: 1.0e-4\n", {"overrides": overrides})
    assert (recipe["seed"], recipe["beta"], recipe["learning_rate"]) == (1, 0.04, 1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Same problems, before and after


def write_samples(path: Path, problems: list[tuple[int, str, str, str, float | None]]) -> None:
    """A samples.jsonl as `aha eval` writes it: (index, question, gold answer, greedy text, greedy correct)."""
    import dataclasses

    from aha.evaluation.scoring import ScoredCompletion, ScoredProblem

    lines = []
    for index, question, gold, text, correct in problems:
        greedy = ScoredCompletion(text=text, tokens=9, truncated=False, correct=correct, formatted=1.0, answer=None,
                                  reflections=0, rewards={"gsm8k_accuracy": correct}, reward=correct)  # fmt: skip
        prompt = [{"role": "system", "content": "Solve."}, {"role": "user", "content": question}]
        problem = ScoredProblem(index=index, prompt=prompt, gold={"answer": gold}, greedy=greedy, samples=[])
        lines.append(json.dumps({**dataclasses.asdict(problem), "pass_rate": None, "majority_answer": None}))
    path.write_text("\n".join(lines) + "\n")


def test_same_problems_before_and_after(bare_run):
    # the base model's file lists the problems in another order, and holds one the trained file lacks: problems are
    # matched by question, not by line
    write_samples(bare_run / "samples-baseline.jsonl", [
        (0, "What is 2+3?", "5", "<answer>6</answer> base", 0.0),
        (1, "What is 1+1?", "2", "<answer>3</answer> base", 0.0),
        (2, "What is 4+4?", "8", "<answer>8</answer> base", 1.0),
        (3, "What is 9-1?", "8", "<answer>8</answer> base", 1.0),
        (4, "What is 7+7?", "14", "<answer>1</answer> base", 0.0),
        (5, "Unparsable gold", "x", "<answer>1</answer> base", None),
        (6, "Only the base model saw this", "1", "<answer>1</answer> base", 1.0),
    ])  # fmt: skip
    write_samples(bare_run / "samples.jsonl", [
        (0, "What is 1+1?", "2", "<answer>0</answer> trained", 0.0),
        (1, "What is 4+4?", "8", "<answer>8</answer> trained", 1.0),
        (2, "What is 2+3?", "5", "<answer>5</answer> trained", 1.0),
        (3, "What is 9-1?", "8", "<answer>7</answer> trained", 0.0),
        (4, "What is 7+7?", "14", "<answer>14</answer> trained", 1.0),
        (5, "Unparsable gold", "x", "<answer>1</answer> trained", None),
    ])  # fmt: skip
    report.write_report(bare_run, card=False)
    text = (bare_run / "report.md").read_text()
    section = text.split("## Same problems, before and after")[1].split("## Training curves")[0]
    assert "5 problems in both samples-baseline.jsonl and samples.jsonl (matched by question)" in section
    assert (
        "**2 fixed** (wrong -> right), **1 broken** (right -> wrong), 1 right both times, 1 wrong both times" in section
    )
    headings = re.findall(r"^### (.+)$", section, flags=re.M)
    assert headings == [
        "Fixed by training: wrong before, right after (problem 2)",
        "Right before and after (problem 1)",
        "Still wrong after training (problem 0)",
    ]
    fixed = section.split("### ")[1]
    assert "**Question:** What is 2+3?  \n**Gold answer:** 5" in fixed
    assert "Base model, greedy (wrong):\n\n```text\n<answer>6</answer> base\n```" in fixed
    assert "Trained, greedy (right):\n\n```text\n<answer>5</answer> trained\n```" in fixed
    assert "What is 1+1?" in section.split("### ")[3] and "<answer>0</answer> trained" in section.split("### ")[3]


def test_same_problems_show_a_broken_one_when_none_stayed_wrong():
    def pair(index: int, before: float, after: float) -> ProblemPair:
        return ProblemPair(index, f"q{index}", {"answer": "1"}, {"correct": before}, {"correct": after})

    picked = pick_problems([pair(0, 1.0, 1.0), pair(1, 1.0, 0.0), pair(2, 1.0, 0.0)])
    assert [(heading, p.index) for heading, p in picked] == [
        ("Right before and after", 0), ("Broken by training: right before, wrong after", 1)]  # fmt: skip
    assert problem_counts([pair(0, 1.0, 1.0), pair(1, 1.0, 0.0), pair(2, 0.0, 1.0)]) == {
        "fixed": 1, "broken": 1, "kept": 1, "still_wrong": 0}  # fmt: skip


def test_same_problems_without_samples_files_say_which_command_writes_them(bare_run):
    (bare_run / "samples.jsonl").write_text("")
    report.write_report(bare_run, card=False)
    text = (bare_run / "report.md").read_text()
    assert "No per-problem completions to compare." in text
    assert "samples-baseline.jsonl` is missing: `aha eval --baseline --recipe recipes/tiny/grpo-arith.yaml`" in text
    assert "samples.jsonl` is missing" not in text.replace("samples-baseline.jsonl` is missing", "")


# ----------------------------------------------------------------------------------------------------------------
# Stability

GUARDED_RECIPE = {
    "learning_rate": 1e-4, "lr_scheduler_type": "constant", "beta": 0.0, "scale_rewards": "none", "loss_type": "dapo",
    "max_completion_length": 48, "temperature": 1.0, "reward_funcs": ["gsm8k_accuracy", "think_format"],
    "reward_weights": [1.0, 0.1], "reward_options": {"think_format": {"strict": True}},
}  # fmt: skip


def test_stability_of_a_healthy_run(run_dir):
    text = (run_dir / "report.md").read_text()
    section = text.split("## Stability")[1].split("## Sample completions")[0]
    assert "| learning_rate | `5e-05` |" in section and "| beta | not set (TRL's default) |" in section
    # 40 logged steps: start = steps 1-4, end = steps 37-40; entropy 0.5 - s/200
    assert "| entropy | 0.488 nats/token | 0.308 nats/token | 1-4; 37-40 |" in section
    assert "| accuracy reward (gsm8k_accuracy) |" in section and "| format reward (think_format) |" in section
    assert "Verdict: **No sign of collapse**" in section


def test_a_collapsing_run_is_flagged_with_its_reasons(tmp_path):
    collapsing = {
        "train/reward": lambda s: 0.5,
        "train/entropy": lambda s: 0.5 if s <= 2 else 0.05,  # to 10% of the start
        "train/rewards/think_format/mean": lambda s: 0.9 if s <= 2 else 0.4,  # down 0.5
        "train/rewards/gsm8k_accuracy/mean": lambda s: 0.3,
        "train/completions/clipped_ratio": lambda s: 0.1 if s <= 2 else 0.8,
        "train/completions/mean_length": lambda s: 20.0 if s <= 2 else 45.0,  # above double
        "train/frac_reward_zero_std": lambda s: 0.9,
    }
    write_events(tmp_path / "tb", range(1, 21), collapsing)  # 20 steps: 2 points at each end
    result = stability(read_scalars(event_files(tmp_path, {})), GUARDED_RECIPE)
    assert [s.role for s in result.signals] == ["entropy", "length", "clipped", "format", "accuracy", "zero_std"]
    assert len(result.reasons) == 4
    text = stability_markdown(result, "recipe.yaml")
    assert "Verdict: **Collapse suspected:** entropy fell to 10% of its start" in text
    assert "format reward (think_format) down 0.50 (0.90 -> 0.40" in text
    assert "80% of completions cut off at the token budget at the end" in text
    assert "mean length 20.0 -> 45.0 tokens (above double its start)" in text
    assert "| reward_funcs × reward_weights | gsm8k_accuracy × 1.0, think_format × 0.1 |" in text
    assert "| reward_options.think_format | think_format: strict |" in text
    assert "| scale_rewards | `none` |" in text


@pytest.mark.parametrize(
    ("tag", "start", "end", "flagged"),
    [
        ("train/entropy", 0.4, 0.11, False),  # 27.5% of the start
        ("train/entropy", 0.4, 0.09, True),
        ("train/rewards/think_format/mean", 0.9, 0.71, False),
        ("train/rewards/think_format/mean", 0.9, 0.65, True),
        ("train/completions/clipped_ratio", 0.0, 0.5, False),
        ("train/completions/clipped_ratio", 0.0, 0.55, True),
        ("train/completions/mean_length", 40.0, 21.0, False),
        ("train/completions/mean_length", 40.0, 19.0, True),
        ("train/completions/mean_length", 40.0, 79.0, False),
        ("train/completions/mean_length", 40.0, 81.0, True),
    ],
)
def test_collapse_thresholds(tag, start, end, flagged):
    steps = range(1, 11)  # 10 points: the first and the last are the windows
    series = [(s, start if s == 1 else (start + end) / 2 if s < 10 else end) for s in steps]
    scalars = {"train/reward": [(s, 0.0) for s in steps], tag: series}
    result = stability(scalars, {})
    assert bool(result.reasons) == flagged
    assert result.guards == []  # no recipe: the guards are unknown, not an error


def test_window_means_take_a_tenth_of_the_steps_and_at_least_one():
    assert window_means([(s, float(s)) for s in range(1, 41)]) == (2.5, 38.5, (1, 4), (37, 40))
    assert window_means([(3, 1.0), (4, 2.0), (5, 3.0)]) == (1.0, 3.0, (3, 3), (5, 5))


def test_stability_skips_missing_scalars_and_non_grpo_runs():
    assert stability({"train/loss": [(1, 2.0)]}, GUARDED_RECIPE) is None  # an SFT run has no train/reward
    result = stability({"train/reward": [(1, 0.1)], "train/entropy": [(1, 0.3)]}, {"learning_rate": 1e-4})
    assert [s.role for s in result.signals] == ["entropy"] and result.reasons == []
    only_reward = stability({"train/reward": [(1, 0.1)]}, {})
    assert "Verdict: not judged" in stability_markdown(only_reward, None)
    assert "guards it set are unknown" in stability_markdown(only_reward, None)
