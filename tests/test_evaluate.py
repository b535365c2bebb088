"""`aha eval`: the metrics match hand counts on fixed completions; prompts come from the training code; models of
every kind load; the command writes eval.json and samples.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from aha import cli, evaluate
from aha.evaluate import EvalError, plan
from aha.evaluation.generation import resolve_model
from aha.evaluation.scoring import (
    Generated,
    answer_key,
    build_scorer,
    k_values,
    majority,
    pass_at_k,
    score_problems,
    summarize,
)
from aha.recipe import load
from tests.helpers import GSM8K_TEST, write_recipe

SMALL_ARITH = {"n_train": 40, "n_test": 12, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1}
SMALL_COUNTDOWN = {"n_train": 20, "n_test": 6, "seed": 0, "min_numbers": 3, "max_numbers": 3, "max_number": 9,
                   "max_target": 30}  # fmt: skip


@pytest.fixture(scope="module")
def arith_recipe(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("arith")
    path = write_recipe(folder, "tiny/grpo-arith.yaml", model_name_or_path=str(tiny_model),
                        output_dir=str(folder / "run"), dataset_generator=SMALL_ARITH)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def countdown_recipe(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("countdown")
    return write_recipe(
        folder, "tiny/grpo-arith.yaml", model_name_or_path=str(tiny_model), output_dir=str(folder / "run"),
        dataset_name="synthetic:countdown", dataset_task="countdown", dataset_generator=SMALL_COUNTDOWN,
        user_template="Using the numbers {nums}, make {target}.", reward_funcs=["countdown_equation", "think_format"],
    )  # fmt: skip


def done(text: str, tokens: int = 5) -> Generated:
    return Generated(text=text, token_ids=list(range(tokens)), truncated=False)


def conversation(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Solve it."}, {"role": "user", "content": question}]


# --- pure metrics -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (8, 0, 1, 0.0),
        (8, 8, 1, 1.0),
        (8, 2, 1, 0.25),  # pass@1 is the share of correct samples
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2)
        (4, 3, 2, 1.0),  # fewer wrong samples than k: some pick is right
        (8, 1, 8, 1.0),
    ],
)
def test_pass_at_k_is_the_unbiased_estimate(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_k_beyond_the_samples():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize(("samples", "ks"), [(0, []), (1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_pass_at_k_is_reported_for_powers_of_two_and_k(samples, ks):
    assert k_values(samples) == ks


@pytest.mark.parametrize(
    ("task", "text", "row", "key"),
    [
        ("gsm8k", "<answer>18</answer>", {}, "=18"),
        ("gsm8k", "<answer>$18.00</answer>", {}, "=18"),  # the same value votes together
        ("gsm8k", "<answer>1,000</answer>", {}, "=1000"),
        ("gsm8k", "<answer> banana </answer>", {}, "text:banana"),
        ("gsm8k", "18", {}, None),  # no answer block: no vote
        ("gsm8k", "<answer>1</answer><answer>2</answer>", {}, None),
        ("countdown", "<answer>3 * 5 - 2</answer>", {"nums": [3, 5, 2]}, "=13"),
        ("countdown", "<answer>5*3 - 2</answer>", {"nums": [2, 3, 5]}, "=13"),
        ("countdown", "<answer>3 * 5</answer>", {"nums": [3, 5, 2]}, "text:3 * 5"),  # a number unused
    ],
)
def test_answer_keys(task, text, row, key):
    assert answer_key(task, text, row) == key


def test_hand_count_gsm8k(arith_recipe):
    """Four problems, a greedy and four sampled completions each, counted by hand (one gold does not parse)."""
    scorer = build_scorer(load(str(arith_recipe), require_model=False))
    think = "<think>\n{}\n</think>\n<answer>{}</answer>"
    rows = [
        {"prompt": conversation("q0"), "answer": "7", "solution": ""},
        {"prompt": conversation("q1"), "answer": "12", "solution": ""},
        {"prompt": conversation("q2"), "answer": "3", "solution": ""},
        {"prompt": conversation("q3"), "answer": "n/a", "solution": ""},
    ]
    greedy = [
        done(think.format("3 + 4 = 7", 7), tokens=10),  # correct, formatted
        done(think.format("x", 11), tokens=20),  # wrong, formatted
        done("<answer>3</answer>", tokens=30),  # correct, not formatted
        done("<answer>3</answer>"),  # unscorable gold
    ]
    sampled = [
        [done("<answer>7</answer>"), done("<answer>7.00</answer>"), done("<answer>8</answer>"), done("none")],
        # a 2-2 tie between 12 and 13: 12 was given first, so the majority is right
        [done("<answer>12</answer>"), done("<answer>13</answer>"), done("<answer>13</answer>"),
         done(think.format("w", 12))],
        [done("Wait <answer>5</answer>"), done("<answer>6</answer>"), done("<answer>5</answer>"),
         done("<answer>3</answer>")],
        [done("<answer>3</answer>")] * 4,
    ]  # fmt: skip
    problems = score_problems(scorer, rows, greedy, sampled)
    metrics = summarize(problems, samples=4)
    assert metrics["n"] == 4 and metrics["n_scored"] == 3 and metrics["n_unscorable"] == 1
    expected = {
        "greedy_pass@1": 2 / 3,
        "format_greedy": 2 / 3,
        "mean_tokens_greedy": 20.0,
        "pass@1": (2 / 4 + 2 / 4 + 1 / 4) / 3,
        "pass@2": (5 / 6 + 5 / 6 + 1 / 2) / 3,
        "pass@4": 1.0,
        "maj@4": 2 / 3,
        "format_sampled": 1 / 12,
        "reflection_rate": 1 / 12,
        "truncated_sampled": 0.0,
        # recipe weights: gsm8k_accuracy 1.0 + think_format 0.1; 5 correct samples, one of them formatted
        "reward": (5 + 0.1) / 12,
        "rewards/gsm8k_accuracy": 5 / 12,
        "rewards/think_format": 1 / 12,
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.startswith(("pass@", "maj@", "greedy_pass@")))
    # per-problem stderr of greedy hits [1, 0, 1]: sample std sqrt(1/3), over sqrt(3)
    assert metrics["greedy_pass@1_stderr"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert majority(problems[1].samples).answer == "=12"


def test_hand_count_countdown(countdown_recipe):
    scorer = build_scorer(load(str(countdown_recipe), require_model=False))
    row = {"prompt": conversation("Using the numbers [3, 5, 2], make 13."), "nums": [3, 5, 2], "target": 13}
    sampled = [[done("<answer>3 * 5 - 2</answer>"), done("<answer>3 + 5 + 2</answer>"),
                done("<answer>5 * 3 - 2</answer>"), done("<answer>3 * 5</answer>")]]  # fmt: skip
    problems = score_problems(scorer, [row], [done("<answer>2 - 5 + 3</answer>")], sampled)
    metrics = summarize(problems, samples=4)
    assert metrics["greedy_pass@1"] == 0.0
    assert metrics["pass@1"] == 0.5
    assert metrics["maj@4"] == 1.0  # 3*5-2 and 5*3-2 vote together for 13
    assert [c.answer for c in problems[0].samples] == ["=13", "=10", "=13", "text:3 * 5"]


def test_greedy_only(arith_recipe):
    scorer = build_scorer(load(str(arith_recipe), require_model=False))
    rows = [{"prompt": conversation("q"), "answer": "4", "solution": ""}]
    metrics = summarize(score_problems(scorer, rows, [done("<answer>4</answer>")], [[]]), samples=0)
    assert metrics["greedy_pass@1"] == 1.0
    assert "pass@1" not in metrics and not any(k.startswith("maj@") for k in metrics)


def test_full_credit_is_correct_whatever_the_recipe_pays(tmp_path, tiny_model):
    """The 1.5B recipe pays 2.0 for an exact answer and 1.5 for a numerically equal one: both are correct."""
    recipe = load("recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml", require_model=False)
    scorer = build_scorer(recipe)
    row = {"prompt": conversation("q"), "answer": "18", "solution": ""}
    scored = scorer.score(row, [done("<answer>\n18\n</answer>"), done("<answer>18.0</answer>")], True)
    assert [c.correct for c in scored] == [1.0, 1.0]
    assert [c.rewards["gsm8k_accuracy"] for c in scored] == [2.0, 1.5]  # the recipe's own scores are kept


def test_labelled_format_rewards_use_the_strict_copy():
    recipe = load("recipes/qwen2.5-3b-instruct/gsm8k-lora.yaml", require_model=False)
    scorer = build_scorer(recipe)
    loose = "<reasoning>x</reasoning> <answer>18</answer>"
    strict = "<reasoning>\nx\n</reasoning>\n<answer>\n18\n</answer>\n"
    assert scorer.format([loose, strict]) == [0.0, 1.0]
    assert set(scorer.rewards) == set(recipe.rewards.reward_funcs)


def test_a_recipe_with_its_own_format_reward_is_judged_by_it():
    """The SmolLM2 recipe has no think block: formatted means answer_number's full credit, not think_format's."""
    recipe = load("recipes/smollm2-135m-instruct/grpo-arith.yaml", require_model=False)
    scorer = build_scorer(recipe)
    texts = ["7 - 4 = 3\n<answer>3</answer>", "<answer>3</answer> and more", "<think>\nx\n</think>\n<answer>3</answer>"]
    assert scorer.format(texts) == [1.0, 0.75, 1.0]


# --- models and prompts -------------------------------------------------------------------------------------------


def test_resolve_model_kinds(tmp_path, tiny_model):
    assert resolve_model(str(tiny_model)).kind == "full"
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model), "r": 4}))
    source = resolve_model(str(adapter))
    assert (source.kind, source.path, source.adapter, source.tokenizer) == ("lora", str(tiny_model), str(adapter),
                                                                            str(tiny_model))  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "without config.json"),
        ("adapter_without_base", "base_model_name_or_path"),
        ("adapter_missing_base", "does not exist"),
    ],
)
def test_bad_model_folders_say_what_is_wrong(tmp_path, setup, message):
    folder = tmp_path / "model"
    if setup != "missing":
        folder.mkdir()
    if setup == "adapter_without_base":
        (folder / "adapter_config.json").write_text("{}")
    if setup == "adapter_missing_base":
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "./no/such/base"}))
    with pytest.raises(EvalError, match=message):
        resolve_model(str(folder))


def args(*argv: str):
    return evaluate.parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--baseline", "--model", "x", "--task", "arith"), "drop --model"),
        (("--task", "arith"), "say what to evaluate"),
        (("--model", "{tmp}"), "not a run folder with its recipe"),
        (("--baseline",), "pass --recipe RECIPE or --task"),
        (("--model", "{tiny}", "--task", "countdown", "--recipe", "recipes/tiny/grpo-arith.yaml"), "countdown recipe"),
        (("--model", "{tiny}", "--task", "arith", "--samples", "-1"), "--samples must be >= 0"),
        (("--model", "{tiny}", "--task", "arith", "--n", "0"), "--n must be >= 1"),
        (("--model", "{tiny}", "--task", "arith", "--temperature", "0"), "--temperature must be > 0"),
    ],
)
def test_bad_requests_are_refused_with_the_fix(tmp_path, tiny_model, argv, message):
    argv = tuple(a.format(tmp=tmp_path, tiny=tiny_model) for a in argv)
    with pytest.raises(EvalError, match=message):
        plan(args(*argv))


def test_baseline_goes_into_the_recipe_output_dir(arith_recipe, tiny_model):
    planned = plan(args("--baseline", "--recipe", str(arith_recipe)))
    recipe = load(str(arith_recipe), require_model=False)
    assert planned.source.path == str(tiny_model)
    assert planned.eval_file == Path(recipe.training.output_dir) / "eval-baseline.json"
    assert planned.samples_file.name == "samples-baseline.jsonl"


def test_a_run_folder_brings_its_recipe(tmp_path, arith_recipe, tiny_model):
    run = tmp_path / "run"
    run.mkdir()
    for item in Path(tiny_model).iterdir():
        (run / item.name).write_bytes(item.read_bytes())
    (run / "summary.json").write_text(json.dumps({"recipe": str(arith_recipe)}))
    planned = plan(args("--model", str(run)))
    assert planned.recipe.path == str(arith_recipe)
    assert planned.eval_file == run / "eval.json"
    recipe = yaml.safe_load(Path(arith_recipe).read_text())
    assert planned.sampling.max_new_tokens == recipe["max_completion_length"]
    assert planned.sampling.temperature == recipe["temperature"]
    assert planned.task == "arith"
    # --task picks the held-out set; the prompt stays the one the run was trained with
    with_task = plan(args("--model", str(run), "--task", "arith"))
    assert with_task.recipe.path == str(arith_recipe)


def test_gsm8k_task_is_the_full_test_set_formatted_by_the_training_code(tiny_model):
    from aha.data import grpo_dataset

    planned = plan(args("--model", str(tiny_model), "--task", "gsm8k"))
    assert planned.recipe.dataset.dataset_test_path == str(GSM8K_TEST)
    tokenizer = evaluate.load_eval_tokenizer(planned.recipe, planned.source)
    rows = evaluate.held_out_rows(planned, tokenizer)
    assert len(rows) == 1319
    first = json.loads(GSM8K_TEST.read_text().splitlines()[0])
    assert rows[0]["prompt"][-1]["content"].endswith(first["question"])
    assert rows[0]["answer"] == "18"
    recipe = planned.recipe
    expected = grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, "test")[0]
    assert rows[0]["prompt"] == expected["prompt"]


def test_countdown_task_is_a_generated_held_out_set_with_the_recipe_prefill(tiny_model):
    planned = plan(args("--model", str(tiny_model), "--task", "countdown", "--n", "3"))
    assert planned.recipe.dataset.dataset_name == "synthetic:countdown"
    tokenizer = evaluate.load_eval_tokenizer(planned.recipe, planned.source)
    rows = evaluate.held_out_rows(planned, tokenizer)
    assert len(rows) == 3
    assert all(isinstance(r["prompt"], str) and r["prompt"].endswith("<think>") for r in rows)  # prefill rendered
    assert all(3 <= len(r["nums"]) <= 4 and 1 <= r["target"] <= 100 for r in rows)


def test_shared_prompt_cache_gives_the_same_tokens(tiny_model):
    """Sampling reuses one prompt pass for all samples; greedy through that path must equal plain greedy."""
    from transformers import AutoTokenizer

    source = resolve_model(str(tiny_model))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    generator = evaluate.TransformersGenerator(source, tokenizer, "float32")
    prompts = [conversation("Tom has 3 apples. He buys 4 more."), conversation("Ann has 9 cards.")]
    prompt_ids = [evaluate.prompt_token_ids(tokenizer, p) for p in prompts]
    common = {"max_new_tokens": 12, "sampling": None, "batch_size": 64, "desc": "test"}
    once = generator.generate(prompt_ids, samples=1, **common)
    three = generator.generate(prompt_ids, samples=3, **common)
    for single, repeated in zip(once, three, strict=True):
        assert [g.token_ids for g in repeated] == [single[0].token_ids] * 3


# --- the command ----------------------------------------------------------------------------------------------------


def test_eval_on_the_tiny_model_writes_its_files(tmp_path, arith_recipe, tiny_model, capsys):
    out = tmp_path / "out"
    code = evaluate.main(["--model", str(tiny_model), "--recipe", str(arith_recipe), "--n", "6", "--samples", "2",
                          "--max-new-tokens", "12", "--output", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["n"] == 6 and result["model_kind"] == "full" and result["task"] == "arith"
    assert result["settings"]["samples"] == 2 and result["settings"]["max_new_tokens"] == 12
    for key in ("greedy_pass@1", "pass@1", "pass@2", "maj@2", "format_greedy", "format_sampled"):
        assert 0.0 <= result["metrics"][key] <= 1.0, key
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    assert all(len(line["samples"]) == 2 and line["greedy"]["tokens"] <= 12 for line in lines)
    assert lines[0]["prompt"][-1]["role"] == "user"
    printed = capsys.readouterr().out
    assert "greedy pass@1" in printed and "maj@2" in printed and str(out / "eval.json") in printed


def test_a_lora_adapter_evaluates_like_its_merged_model(tmp_path, arith_recipe, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    adapted = get_peft_model(base, config)  # random B: the adapter changes the outputs
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    adapted.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    adapted.merge_and_unload().save_pretrained(merged)
    tokenizer.save_pretrained(merged)

    texts = {}
    for name in ("adapter", "merged"):
        folder = tmp_path / name
        common = ["--recipe", str(arith_recipe), "--n", "4", "--samples", "0", "--max-new-tokens", "10"]
        assert evaluate.main(["--model", str(folder), *common, "--output", str(tmp_path / f"eval-{name}")]) == 0
        result = json.loads((tmp_path / f"eval-{name}" / "eval.json").read_text())
        assert result["model_kind"] == ("lora" if name == "adapter" else "full")
        lines = (tmp_path / f"eval-{name}" / "samples.jsonl").read_text().splitlines()
        texts[name] = [json.loads(line)["greedy"]["text"] for line in lines]
    assert texts["adapter"] == texts["merged"]


def test_bad_input_exits_2_with_the_rule(capsys):
    assert cli.main(["eval", "--task", "arith"]) == 2
    assert "aha eval: say what to evaluate" in capsys.readouterr().err
