"""`make demo-real`: GRPO on a real pretrained model on this CPU, measured before and after.

    python -m aha.real_demo                       # seed 0 -> runs/smollm2-grpo/report.md      (make demo-real)
    python -m aha.real_demo --seed 1              # another seed -> runs/smollm2-grpo-seed1/
    python -m aha.real_demo --eval-n 64 --eval-samples 4

  0. model       `aha model smollm2-135m` (converts the pinned GGUF once; a no-op afterwards)
  1. base eval   `aha eval --baseline --recipe <recipe>` into the run folder (kept when newer than the model)
  2. GRPO        `aha launch <recipe>` (max_train_minutes in the recipe caps it; a finished run is kept)
  3. eval        `aha eval --model <run>` on the same held-out problems, same settings
  4. report      `aha report <run>` (curves, before/after, samples from start, middle and end), plus
                 `real-demo.json`: the figures the README table shows, including the strict format rate
                 (answer block holding a number), the base model's last-number accuracy, entropy and the share of
                 groups whose rewards did not differ, and how many completions copy the prompt's text.

Evaluations run in bfloat16 (this CPU's fast path, AMX): the same for the base and the trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aha.demo import _aha, has_model, is_fresh
from aha.recipe import RecipeError, read_yaml

RECIPE = "recipes/smollm2-135m-instruct/grpo-arith.yaml"
MODEL = "smollm2-135m"
SUMMARY = "real-demo.json"
BASELINE_SAMPLES = "samples-baseline.jsonl"
TRAINED_SAMPLES = "samples.jsonl"
EVAL_DTYPE = "bfloat16"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# the reward whose full credit is the strict format (the recipe's reward name as TRL logs it)
STRICT_REWARD = "aha.real_rewards:answer_number"
# a completion "copies the prompt" when it repeats this many consecutive words of the user or system message
COPY_WORDS = 8


def _prompt_text(line: dict[str, Any]) -> str:
    prompt = line.get("prompt", "")
    if isinstance(prompt, list):
        return " ".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def copies_prompt(completion: str, prompt: str, words: int = COPY_WORDS) -> bool:
    """True when `completion` repeats `words` consecutive words of `prompt` (format examples copied verbatim)."""
    prompt_words = prompt.split()
    shingles = {" ".join(prompt_words[i : i + words]) for i in range(len(prompt_words) - words + 1)}
    completion_words = completion.split()
    return any(" ".join(completion_words[i : i + words]) in shingles for i in range(len(completion_words) - words + 1))


def sample_stats(samples_file: Path) -> dict[str, dict[str, float | int | None]]:
    """Figures eval.json does not hold, for the greedy and the sampled completions of a samples.jsonl: last-number
    accuracy (the number a reader would take as the answer, tags or not), strict format (answer_number's full
    credit: `</think>` then one answer block holding just a number), and prompt copies."""
    counts = {kind: {"n": 0, "last": 0, "strict": 0, "copies": 0} for kind in ("greedy", "sampled")}
    for raw in samples_file.read_text().splitlines():
        line = json.loads(raw)
        gold = str((line.get("gold") or {}).get("answer", "")).strip()
        prompt = _prompt_text(line)
        greedy = [line["greedy"]] if isinstance(line.get("greedy"), dict) else []
        for kind, completions in (("greedy", greedy), ("sampled", line.get("samples") or [])):
            for completion in completions:
                text = str(completion.get("text", ""))
                numbers = NUMBER.findall(text)
                count = counts[kind]
                count["n"] += 1
                count["last"] += bool(numbers) and numbers[-1] == gold
                count["strict"] += (completion.get("rewards") or {}).get(STRICT_REWARD) == 1.0
                count["copies"] += copies_prompt(text, prompt)
    return {
        kind: {
            "completions": c["n"],
            "last_number_accuracy": round(c["last"] / c["n"], 4) if c["n"] else None,
            "strict_format": round(c["strict"] / c["n"], 4) if c["n"] else None,
            "prompt_copies": round(c["copies"] / c["n"], 4) if c["n"] else None,
        }
        for kind, c in counts.items()
    }


def training_stats(run: Path) -> dict[str, Any]:
    """Entropy and zero-spread groups at the start and end of training, from TensorBoard's scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stats: dict[str, Any] = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tags = accumulator.Tags().get("scalars", [])
        for name in ("entropy", "frac_reward_zero_std", "reward", "completions/mean_length", "step_time"):
            tag = next((t for t in tags if t.endswith(f"train/{name}")), None)
            if tag is None:
                continue
            values = [event.value for event in accumulator.Scalars(tag)]
            head, tail = values[: max(1, len(values) // 10)], values[-max(1, len(values) // 10) :]
            stats[name] = {
                "first_10pct": round(sum(head) / len(head), 4),
                "last_10pct": round(sum(tail) / len(tail), 4),
                "steps": len(values),
            }
        break
    return stats


def summarize(run: Path) -> dict[str, Any]:
    def metrics(name: str) -> dict[str, Any]:
        path = run / name
        return json.loads(path.read_text()).get("metrics", {}) if path.is_file() else {}

    summary: dict[str, Any] = {"run": str(run)}
    for label, eval_file, samples in (
        ("base", "eval-baseline.json", BASELINE_SAMPLES),
        ("trained", "eval.json", TRAINED_SAMPLES),
    ):
        summary[label] = {
            **{k: metrics(eval_file).get(k) for k in ("greedy_pass@1", "pass@1", "format_greedy", "format_sampled")},
            **(sample_stats(run / samples) if (run / samples).is_file() else {}),
        }
    summary["training"] = training_stats(run)
    run_summary = run / "summary.json"
    if run_summary.is_file():
        train = json.loads(run_summary.read_text()).get("train_summary", {})
        summary["train_minutes"] = round(float(train.get("train_runtime", 0.0)) / 60, 2)
    return summary


def train(recipe: str, launch_args: list[str], threads: int) -> None:
    """`aha launch`, or with `threads` one `aha train` process held to that many torch threads: on a machine whose
    cores other jobs share, two threads that wait on each other ran 10x slower than one (docs/real-model.md)."""
    if not threads:
        _aha("launch", recipe, *launch_args)
        return
    command = [sys.executable, "-m", "aha.cli", "train", recipe, *launch_args]
    print(f"\ndemo-real: $ OMP_NUM_THREADS={threads} aha train {recipe} {' '.join(launch_args)}", flush=True)
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aha.real_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=RECIPE, help="GRPO recipe (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed; not 0: run folder <output_dir>-seed<N>")
    p.add_argument("--eval-n", type=int, default=100, help="held-out problems to evaluate (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per problem (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads, train and eval (default: the launcher's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = read_yaml(args.recipe)
    except RecipeError as err:
        print(f"demo-real: {err}", file=sys.stderr)
        return 2
    run = Path(doc["output_dir"])
    model = Path(str(doc["model_name_or_path"]))
    launch_args = []
    if args.seed:
        run = run.with_name(f"{run.name}-seed{args.seed}")
        launch_args = ["--seed", str(args.seed), "--output_dir", str(run)]
    eval_args = ["--n", str(args.eval_n), "--samples", str(args.eval_samples), "--dtype", EVAL_DTYPE]
    eval_args += ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    try:
        _aha("model", MODEL)
        if not is_fresh(run / "eval-baseline.json", model):
            _aha("eval", "--baseline", "--recipe", args.recipe, "--output", str(run), *eval_args)
        if not has_model(run):
            train(args.recipe, launch_args, args.threads)
        if not is_fresh(run / "eval.json", run):
            _aha("eval", "--model", str(run), "--recipe", args.recipe, *eval_args)
        _aha("report", str(run))
    except SystemExit as stop:  # a stage failed; its own output said why
        return int(stop.code or 1)
    summary = summarize(run)
    summary["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    (run / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"\ndemo-real: done in {summary['wall_minutes']} min; report -> {run / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
