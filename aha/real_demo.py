"""`make demo-real`: GRPO on a real pretrained model on this CPU, measured before and after.

    python -m aha.real_demo                       # seeds 0 and 1 side by side, one core each (make demo-real)
    python -m aha.real_demo --seeds 0             # one seed -> runs/smollm2-grpo/report.md (seed N: -seed<N>/)
    python -m aha.real_demo --eval-n 64 --eval-samples 4

Per seed:
  0. model       `aha model smollm2-135m` (converts the pinned GGUF once; a no-op afterwards)
  1. base eval   `aha eval --baseline --recipe <recipe>` into the run folder (kept when newer than the model)
  2. GRPO        `aha launch <recipe>` (max_train_minutes in the recipe caps it; a finished run is kept)
  3. eval        `aha eval --model <run>` on the same held-out problems, same settings
  4. report      `aha report <run>` (curves, before/after, samples from start, middle and end), plus
                 `real-demo.json`: the figures the README table shows, including the strict format rate
                 (answer block holding a number), the base model's last-number accuracy, entropy and the share of
                 groups whose rewards did not differ, and how many completions copy the prompt's text.

Evaluations run in bfloat16 (this CPU's fast path, AMX): the same for the base and the trained model. With several
seeds each runs in its own process (output in its run folder's demo.log), and the end prints the README's table.
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

from aha.demo import _aha, _usable_cores, has_model, is_fresh
from aha.real_rewards import last_number_right
from aha.recipe import RecipeError, read_yaml
from aha.run_folder import RunFolder, write_json_atomic

RECIPE = "recipes/smollm2-135m-instruct/grpo-arith.yaml"
MODEL = "smollm2-135m"
SEEDS = (0, 1)
WHO = "demo-real"  # how this demo names itself on the console
PROGRESS_SECONDS = 60  # how often the side-by-side seeds report where they are
STEP_LINE = re.compile(r"step \d+/\d+")  # the trainer's one console line per step
EVAL_DTYPE = "bfloat16"
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
                count = counts[kind]
                count["n"] += 1
                count["last"] += last_number_right(text, gold)
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
    folder = RunFolder(run)

    def metrics(baseline: bool) -> dict[str, Any]:
        path = folder.eval_file(baseline)
        return json.loads(path.read_text()).get("metrics", {}) if path.is_file() else {}

    summary: dict[str, Any] = {"run": str(run)}
    for label, baseline in (("base", True), ("trained", False)):
        samples = folder.samples_file(baseline)
        summary[label] = {
            **{k: metrics(baseline).get(k) for k in ("greedy_pass@1", "pass@1", "format_greedy", "format_sampled")},
            **(sample_stats(samples) if samples.is_file() else {}),
        }
    summary["training"] = training_stats(run)
    train = folder.summary().get("train_summary", {}) if folder.summary_file.is_file() else {}
    if train:
        summary["train_minutes"] = round(float(train.get("train_runtime", 0.0)) / 60, 2)
    run_summary = folder.summary() if folder.summary_file.is_file() else {}
    summary["steps"] = run_summary.get("global_step")
    summary["stopped_by"] = run_summary.get("stopped_by")
    return summary


def train(recipe: str, launch_args: list[str], threads: int) -> None:
    """`aha launch`, or with `threads` one `aha train` process held to that many torch threads: on a machine whose
    cores other jobs share, two threads that wait on each other ran 10x slower than one (docs/real-model.md)."""
    if not threads:
        _aha("launch", recipe, *launch_args, who=WHO)
        return
    command = [sys.executable, "-m", "aha.cli", "train", recipe, *launch_args]
    print(f"\ndemo-real: $ OMP_NUM_THREADS={threads} aha train {recipe} {' '.join(launch_args)}", flush=True)
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aha.real_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=RECIPE, help="GRPO recipe (default: %(default)s)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=list(SEEDS),
        help="training seeds, run side by side, one process each (default: %(default)s); seed 0 writes "
        "<output_dir>, seed N <output_dir>-seed<N>",
    )  # fmt: skip
    p.add_argument("--eval-n", type=int, default=100, help="held-out problems to evaluate (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per problem (default: %(default)s)")
    p.add_argument(
        "--threads", type=int, default=0,
        help="torch threads per process, train and eval (default: the cores shared out among the seeds)",
    )  # fmt: skip
    return p


def run_folder(doc: dict[str, Any], seed: int) -> Path:
    run = Path(doc["output_dir"])
    return run.with_name(f"{run.name}-seed{seed}") if seed else run


def run_seed(args: argparse.Namespace, doc: dict[str, Any], seed: int) -> int:
    """The stages for one seed, in this process; each skips work already done (a rerun continues)."""
    run, model = run_folder(doc, seed), Path(str(doc["model_name_or_path"]))
    launch_args = ["--seed", str(seed), "--output_dir", str(run)] if seed else []
    eval_args = ["--n", str(args.eval_n), "--samples", str(args.eval_samples), "--dtype", EVAL_DTYPE]
    eval_args += ["--threads", str(args.threads)] if args.threads else []
    folder, start = RunFolder(run), time.perf_counter()
    try:
        _aha("model", MODEL, who=WHO)
        if not is_fresh(folder.eval_file(baseline=True), model):
            _aha("eval", "--baseline", "--recipe", args.recipe, "--output", str(run), *eval_args, who=WHO)
        if not has_model(run):
            train(args.recipe, launch_args, args.threads)
        if not is_fresh(folder.eval_file(), run):
            _aha("eval", "--model", str(run), "--recipe", args.recipe, *eval_args, who=WHO)
        _aha("report", str(run), who=WHO)
    except SystemExit as stop:  # a stage failed; its own output said why
        return int(stop.code or 1)
    summary = {**summarize(run), "seed": seed, "wall_minutes": round((time.perf_counter() - start) / 60, 1)}
    write_json_atomic(folder.real_demo_file, summary)
    print(f"\ndemo-real: seed {seed} done in {summary['wall_minutes']} min; report -> {folder.report_file}", flush=True)
    return 0


def _last_step_line(log: Path) -> str:
    """The newest per-step console line of a log (the trainer prints one per step), for progress while waiting."""
    try:
        lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return "starting"
    return next((line.strip() for line in reversed(lines) if STEP_LINE.search(line)), "evaluating or starting")


def run_seeds_side_by_side(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    """One `python -m aha.real_demo --seeds N` process per seed, at once; each one's output goes to its run
    folder's demo.log (progress bars would interleave), and a line per seed per minute says where it is."""
    threads = args.threads or max(1, _usable_cores() // len(args.seeds))
    try:
        # once, before the seeds start: two conversions at once would race for one folder
        _aha("model", MODEL, who=WHO)
    except SystemExit as stop:
        return int(stop.code or 1)
    children = []
    for seed in args.seeds:
        folder = RunFolder(run_folder(doc, seed))
        folder.path.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "aha.real_demo", "--recipe", args.recipe, "--seeds", str(seed)]
        command += ["--eval-n", str(args.eval_n), "--eval-samples", str(args.eval_samples), "--threads", str(threads)]
        print(f"demo-real: seed {seed}, {threads} thread(s) -> {folder.path} (log: {folder.demo_log})", flush=True)
        with open(folder.demo_log, "a") as log:
            children.append((seed, folder, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
    while any(child.poll() is None for _, _, child in children):
        time.sleep(PROGRESS_SECONDS)
        for seed, folder, child in children:
            state = "finished" if child.poll() is not None else _last_step_line(folder.demo_log)
            print(f"demo-real: seed {seed}: {state}", flush=True)
    failed = [(seed, folder) for seed, folder, child in children if child.returncode != 0]
    for seed, folder in failed:
        print(f"demo-real: seed {seed} failed; its output: {folder.demo_log}", file=sys.stderr)
    print(seeds_table([json.loads(f.real_demo_file.read_text()) for _, f, _ in children if f.real_demo_file.is_file()]))
    return 1 if failed else 0


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def seeds_table(summaries: list[dict[str, Any]]) -> str:
    """The README's table for the seeds' real-demo.json files: base model, then each seed after training."""
    if not summaries:
        return ""
    columns = [("base", summaries[0]["base"])] + [(f"seed {s['seed']}", s["trained"]) for s in summaries]
    rows = [
        ("strict format, sampled", lambda m: _percent(m.get("sampled", {}).get("strict_format"))),
        ("strict format, greedy", lambda m: _percent(m.get("greedy", {}).get("strict_format"))),
        ("accuracy (format and right), greedy pass@1", lambda m: _percent(m.get("greedy_pass@1"))),
        ("accuracy, sampled pass@1", lambda m: _percent(m.get("pass@1"))),
        ("last number right, sampled", lambda m: _percent(m.get("sampled", {}).get("last_number_accuracy"))),
        ("completions copying the prompt, sampled", lambda m: _percent(m.get("sampled", {}).get("prompt_copies"))),
    ]
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(m) for _, m in columns) + " |" for label, cell in rows]
    steps = ", ".join(f"seed {s['seed']}: {s.get('steps')} steps in {s.get('train_minutes')} min" for s in summaries)
    return "\n".join(lines) + f"\n\ntraining: {steps}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = read_yaml(args.recipe)
    except RecipeError as err:
        print(f"demo-real: {err}", file=sys.stderr)
        return 2
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        print(f"demo-real: --seeds {args.seeds}: give distinct seeds >= 0, e.g. --seeds 0 1", file=sys.stderr)
        return 2
    if len(args.seeds) == 1:
        return run_seed(args, doc, args.seeds[0])
    return run_seeds_side_by_side(args, doc)


if __name__ == "__main__":
    sys.exit(main())
