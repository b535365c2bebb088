"""`make smoke-gpu`: the GPU path on one CUDA GPU, end to end, in a few minutes; results in smoke-gpu.json/.md.

    python scripts/gpu/smoke.py [--out runs/smoke-gpu] [--copy-to DIR] [--plan]

Without a CUDA GPU it says so in one line and exits 0. With one, every part runs the real entry points (`aha tiny`,
`aha launch` on the repo's own recipes with overrides, TRL, accelerate, DeepSpeed), each checked on real signals:
  setup  the tiny model and a supervised warm start on the GPU (SFT, 150 steps), so GRPO has rewards to learn from;
  a      GRPO 5 steps, tiny model, DDP, bf16 autocast over fp32 master weights: losses finite, rewards logged, the
         weights moved, and they are still fp32;
  b      the same under accelerate + DeepSpeed ZeRO-3 (one rank), and ZeRO-3 with LoRA (the adapter moved);
  c      a Qwen2.5-0.5B-shaped model (its config, random weights: no download) for a few GRPO steps under DDP and
         under ZeRO-3: seconds per step and peak GPU memory; generation tokens/s; an 8-bit AdamW run (bitsandbytes);
  d      the precision check of aha/precision.py on the GPU: bf16 weights lose lr-1e-6 AdamW steps, fp32 master
         weights with bf16 autocast keep them.
Peak memory is what nvidia-smi reports for the whole device while a part runs (sampled every 0.5 s).
Packages the GPU machine lacks (trl, datasets, deepspeed, math-verify, bitsandbytes, ...) come from .gpu-wheels/
(`make gpu-wheels` here), installed with `pip install --no-index --no-deps --target`. `--plan` checks, without a GPU,
that every part's launch plans and validates (tests/test_gpu_smoke.py runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".gpu-wheels"
NEEDED = ("trl", "datasets", "deepspeed", "math_verify", "latex2sympy2_extended", "pydantic")
BUDGET_S = 720.0  # the whole smoke: measured 9.5 minutes on an H200 (docs/gpu-smoke.md); the goal is 8
PART_TIMEOUT_S = 240.0
WARM_STEPS = 150
GRPO_STEPS = 5
QWEN_STEPS = 4
# Qwen2.5-0.5B's architecture (its config.json), random weights: the memory and speed of the real thing
QWEN05 = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY_GRPO = "recipes/tiny/grpo-arith.yaml"
TINY_SFT = "recipes/tiny/sft-warmup.yaml"
GPU = ["--gpus-per-node", "1", "--use_cpu", "false", "--bf16", "true"]
# --rehearse: the same parts on this CPU, smaller, to check the harness itself before spending GPU time; what it writes
# is not a GPU result and goes to runs/smoke-gpu-rehearsal
REHEARSAL = os.environ.get("AHA_SMOKE_REHEARSAL") == "1"
if REHEARSAL:
    GPU = ["--use_cpu", "true", "--bf16", "false"]
    WARM_STEPS, GRPO_STEPS, QWEN_STEPS = 10, 2, 1
    BUDGET_S, PART_TIMEOUT_S = 3600.0, 900.0  # two busy cores
    QWEN05 = {**QWEN05, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}


def say(message: str) -> None:
    print(f"smoke-gpu: {message}", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# The parts, as launch command lines (also what --plan validates).


def launches(work: Path) -> dict[str, list[str]]:
    """Part name -> `aha launch` arguments."""
    tiny, warm, qwen = str(work / "tiny"), str(work / "warm"), str(work / "qwen2.5-0.5b-shaped")
    grpo = [TINY_GRPO, *GPU, "--model_name_or_path", warm, "--max_steps", str(GRPO_STEPS), "--save_strategy", "no"]
    qwen_args = [TINY_GRPO, *GPU, "--model_name_or_path", qwen, "--max_steps", str(QWEN_STEPS)]
    batch, length = ("8", "16") if REHEARSAL else ("32", "128")
    qwen_args += ["--save_strategy", "no", "--per_device_train_batch_size", batch, "--max_completion_length", length]
    lora = ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", "q_proj", "v_proj"]
    return {
        "setup: SFT warm start (DDP, bf16 autocast)": [
            TINY_SFT,
            *GPU,
            "--model_name_or_path",
            tiny,
            "--output_dir",
            warm,
            "--max_steps",
            str(WARM_STEPS),
        ],
        "a: GRPO, DDP, fp32 master + bf16 autocast": [*grpo, "--output_dir", str(work / "grpo-ddp")],
        "b: GRPO, DeepSpeed ZeRO-3": [*grpo, "--accelerate-config", "zero3", "--output_dir", str(work / "grpo-zero3")],
        "b: GRPO, ZeRO-3 + LoRA": [
            *grpo,
            "--accelerate-config",
            "zero3",
            *lora,
            "--output_dir",
            str(work / "grpo-zero3-lora"),
        ],
        "c: Qwen2.5-0.5B-shaped, DDP": [*qwen_args, "--output_dir", str(work / "qwen-ddp")],
        "c: Qwen2.5-0.5B-shaped, ZeRO-3": [
            *qwen_args,
            "--accelerate-config",
            "zero3",
            "--output_dir",
            str(work / "qwen-zero3"),
        ],
        "c: Qwen2.5-0.5B-shaped, 8-bit AdamW": [
            *qwen_args,
            "--optim",
            "adamw_8bit",
            "--max_steps",
            "2",
            "--output_dir",
            str(work / "qwen-adamw8bit"),
        ],
    }


def plan_all(work: Path) -> int:
    """Every part's launch, planned and validated for one GPU without starting anything (no GPU needed)."""
    from aha.launch import plan_from_args

    for name, args in launches(work).items():
        plan, _, _ = plan_from_args([*args, "--dry-run"], environ={})
        assert plan.trainer.num_processes == 1, plan.trainer
        config = Path(plan.trainer.accelerate_config).stem
        say(f"plans: {name}: {plan.mode}, {config}, {plan.trainer.num_processes} rank")
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Environment: the GPU, the wheels, the versions.


def cuda_gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def ensure_packages(work: Path) -> None:
    """Install .gpu-wheels/ into work/site and re-run this script with it on PYTHONPATH, once."""
    import importlib.util

    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing or os.environ.get("AHA_SMOKE_SITE"):
        if missing:
            raise SystemExit(f"smoke-gpu: still missing after installing the wheels: {', '.join(missing)}")
        return
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        raise SystemExit(
            f"smoke-gpu: {', '.join(missing)} missing and no wheels in {WHEELS}: run `make gpu-wheels` on a machine "
            "with network, then carry .gpu-wheels/ here"
        )
    site = work / "site"
    say(f"installing {len(wheels)} wheels from {WHEELS.name}/ into {site} ({', '.join(missing)} missing)")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*command, "--target", str(site), *map(str, wheels)], check=True)
    path = os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.update(PYTHONPATH=path, AHA_SMOKE_SITE=str(site))
    os.execv(sys.executable, [sys.executable, *sys.argv])


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "transformers", "accelerate", "trl", "deepspeed", "peft", "datasets", "pyarrow", "fsspec")
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*names, "bitsandbytes", "math-verify"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    import torch

    found["cuda"] = torch.version.cuda
    return found


def check_datasets_stack(found: dict[str, str | None]) -> None:
    """datasets 5.2 needs pyarrow >= 21 and fsspec <= 2026.9.0: a clear message instead of an import error later."""
    from packaging.version import Version

    problems = []
    if found.get("pyarrow") and Version(found["pyarrow"]) < Version("21"):
        problems.append(f"pyarrow {found['pyarrow']} < 21")
    if found.get("fsspec") and Version(found["fsspec"]) > Version("2026.9.0"):
        problems.append(f"fsspec {found['fsspec']} > 2026.9.0")
    if problems:
        raise SystemExit(f"smoke-gpu: datasets 5.2 cannot run here: {'; '.join(problems)}; add a wheel to wheels.txt")


# --------------------------------------------------------------------------------------------------------------------
# Measuring a part: peak device memory, the run's scalars, its weights.


class PeakMemory:
    """Highest memory.used (MiB) nvidia-smi reports for GPU 0 while the block runs."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s, self.peak_mib, self._stop = interval_s, 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.peak_mib = max(self.peak_mib, int(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def scalars(output_dir: Path) -> dict[str, list[float]]:
    """TensorBoard scalars of a run folder: tag -> values in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for events in sorted(output_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return values


def weight_change(before: Path, after: Path) -> dict[str, Any]:
    """How the saved weights differ: max |delta| and the share of elements that moved, after casting the start to the
    saved dtype (a bf16 save of unchanged fp32 weights shows no change); the saved dtype(s)."""
    from safetensors.torch import load_file

    start, end = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    moved = total = 0
    biggest = 0.0
    for name, tensor in end.items():
        reference = start[name].to(tensor.dtype).float()
        delta = (tensor.float() - reference).abs()
        moved += int((delta > 0).sum())
        total += delta.numel()
        biggest = max(biggest, float(delta.max()))
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in end.values()})
    return {"max_abs_delta": biggest, "share_moved": moved / max(total, 1), "saved_dtypes": dtypes}


def adapter_change(run: Path) -> dict[str, Any]:
    """LoRA: B starts at zero, so any nonzero B is a trained adapter."""
    from safetensors.torch import load_file

    tensors = load_file(str(run / "adapter_model.safetensors"))
    b_norm = sum(float(t.float().norm()) for name, t in tensors.items() if "lora_B" in name)
    return {"adapter_tensors": len(tensors), "lora_B_norm": b_norm}


def summarize_run(output_dir: Path) -> dict[str, Any]:
    found = scalars(output_dir)
    loss, reward = found.get("train/loss", []), found.get("train/reward", [])
    step_times = sorted(found.get("train/step_time", []))
    summary_file = output_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return {
        "steps": summary.get("global_step"),
        "loss": [round(v, 6) for v in loss],
        "loss_finite": bool(loss) and all(math.isfinite(v) for v in loss),
        "reward": [round(v, 4) for v in reward],
        # the median leaves out the first step (CUDA kernels and caches warm up there)
        "s_per_step": round(step_times[len(step_times) // 2], 3) if step_times else None,
        "train_runtime_s": (summary.get("train_summary") or {}).get("train_runtime"),
    }


# --------------------------------------------------------------------------------------------------------------------
# Running the parts.


class Smoke:
    def __init__(self, work: Path, copy_to: Path | None = None):
        self.work = work
        self.copy_to = copy_to  # results copied here after every part (a killed run still leaves them)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.results: list[dict[str, Any]] = []
        self.budget_s = BUDGET_S

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def part(self, name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {"part": name}
        if self.left_s() < 30:
            result.update(ok=False, error=f"skipped: the {self.budget_s:.0f} s budget is spent")
        else:
            began = time.monotonic()
            try:
                with PeakMemory() as memory:
                    result.update(body())
                result.setdefault("ok", True)
            except Exception as err:  # a failed part is a result; the other parts still run
                result.update(ok=False, error=f"{type(err).__name__}: {err}")
            result["seconds"] = round(time.monotonic() - began, 1)
            result["peak_gpu_mib"] = memory.peak_mib
        say(f"{'ok  ' if result['ok'] else 'FAIL'} {name} ({result.get('seconds', 0)} s) {result.get('error', '')}")
        self.results.append(result)
        self.write()
        return result

    def launch(self, name: str, args: list[str]) -> dict[str, Any]:
        log = self.logs / (name.split(":")[0].strip() + "-" + args[args.index("--output_dir") + 1].split("/")[-1])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "aha.cli", "launch", *args]
        with open(f"{log}.log", "w") as handle:
            code = subprocess.run(
                command,
                cwd=REPO,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=min(PART_TIMEOUT_S, max(self.left_s(), 30)),
            ).returncode
        if code:
            tail = "\n".join(Path(f"{log}.log").read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"aha launch exited {code}; last lines of {log}.log:\n{tail}")
        return summarize_run(Path(args[args.index("--output_dir") + 1]))

    def write(self) -> None:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "gpu": cuda_gpu(),
            "versions": versions(),
            "wall_s": round(time.monotonic() - self.start, 1),
            "parts": self.results,
        }
        (self.work / "smoke-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.work / "smoke-gpu.md").write_text(markdown(report))
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            for name in ("smoke-gpu.json", "smoke-gpu.md"):
                shutil.copy(self.work / name, self.copy_to / name)
            shutil.make_archive(str(self.copy_to / "logs"), "gztar", self.work, "logs")


def markdown(report: dict[str, Any]) -> str:
    v = report["versions"]
    lines = [
        f"Measured {report['date']} on {report['gpu']} (CUDA {v.get('cuda')}), Python {v.get('python')}, torch "
        f"{v.get('torch')}, transformers {v.get('transformers')}, accelerate {v.get('accelerate')}, "
        f"trl {v.get('trl')}, "
        f"deepspeed {v.get('deepspeed')}, peft {v.get('peft')}, bitsandbytes {v.get('bitsandbytes')}; "
        f"whole smoke {report['wall_s']} s.",
        "",
        "| part | result | wall s | peak GPU MiB | s/step | loss | reward | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["parts"]:
        check = r.get("error") or r.get("check", "")
        loss = ", ".join(f"{x:.4g}" for x in r.get("loss", [])[:6])
        reward = ", ".join(f"{x:.3g}" for x in r.get("reward", [])[:6])
        lines.append(
            f"| {r['part']} | {'ok' if r['ok'] else 'FAILED'} | {r.get('seconds', '')} | {r.get('peak_gpu_mib', '')} "
            f"| {r.get('s_per_step') or ''} | {loss} | {reward} | {str(check).splitlines()[0] if check else ''} |"
        )
    return "\n".join(lines) + "\n"


def build_qwen_shaped(work: Path) -> Path:
    """Qwen2.5-0.5B's architecture with random weights and the tiny tokenizer (its ids fit the big vocabulary)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    folder = work / "qwen2.5-0.5b-shaped"
    tokenizer = AutoTokenizer.from_pretrained(work / "tiny")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = Qwen2Config(**QWEN05, eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def generation_speed(folder: Path, batch: int = 64, new_tokens: int = 128) -> dict[str, Any]:
    """HF generate in bf16 on the GPU, every sequence forced to `new_tokens` (a random model rarely stops)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cpu" if REHEARSAL else "cuda"
    batch, new_tokens = (4, 8) if REHEARSAL else (batch, new_tokens)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device).eval()
    prompt = torch.randint(3, 2000, (batch, 64), device=device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, pad_token_id=0)
    with torch.no_grad():
        model.generate(prompt, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        began = time.perf_counter()
        model.generate(prompt, **kwargs)
        sync()
        seconds = time.perf_counter() - began
    return {
        "check": f"{batch} x {new_tokens} tokens in {seconds:.2f} s: {batch * new_tokens / seconds:,.0f} tokens/s",
        "tokens_per_s": round(batch * new_tokens / seconds, 1),
    }


def precision_on_gpu() -> dict[str, Any]:
    from aha.precision import update_fidelity, within_tolerance

    device = "cpu" if REHEARSAL else "cuda"
    fp32_master = update_fidelity("float32", "bfloat16", device=device)
    pure_bf16 = update_fidelity("bfloat16", "bfloat16", device=device)
    ok = within_tolerance(fp32_master) and not within_tolerance(pure_bf16)
    return {
        "ok": ok,
        "fp32_master_bf16_autocast": fp32_master,
        "pure_bf16": pure_bf16,
        "check": f"share of the fp32 update kept after 5 AdamW steps at lr 1e-6: fp32 master + bf16 autocast "
        f"{fp32_master['kept']:.3f}, bf16 weights {pure_bf16['kept']:.3f}",
    }


# part id -> (the parts it needs first); `--only` runs a subset with what it needs
PART_IDS = ("setup", "a", "d", "b-zero3", "b-lora", "c-build", "c-gen", "c-ddp", "c-zero3", "c-8bit")
NEEDS = {"a": "setup", "b-zero3": "setup", "b-lora": "setup", "c-gen": "c-build", "c-ddp": "c-build",
         "c-zero3": "c-build", "c-8bit": "c-build"}  # fmt: skip


def selected(only: str | None) -> list[str]:
    if not only:
        return list(PART_IDS)
    wanted = set(only.split(","))
    unknown = wanted - set(PART_IDS)
    if unknown:
        raise SystemExit(f"smoke-gpu: --only: unknown part(s) {sorted(unknown)}; parts are {', '.join(PART_IDS)}")
    wanted |= {NEEDS[p] for p in wanted if p in NEEDS}
    return [p for p in PART_IDS if p in wanted]


def run_parts(smoke: Smoke, parts: list[str]) -> None:
    work = smoke.work
    plans = launches(work)
    names = dict(zip(("setup", "a", "b-zero3", "b-lora", "c-ddp", "c-zero3", "c-8bit"), plans, strict=True))

    def tiny() -> None:
        if not (work / "tiny" / "config.json").is_file():
            subprocess.run(
                [sys.executable, "-m", "aha.cli", "tiny", "--output", str(work / "tiny")],
                check=True,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
            )

    def setup() -> dict[str, Any]:
        tiny()
        result = smoke.launch(names["setup"], plans[names["setup"]])
        result["check"] = f"warm start saved after {result['steps']} steps"
        return result

    def grpo(part: str) -> Callable[[], dict[str, Any]]:
        name = names[part]

        def body() -> dict[str, Any]:
            result = smoke.launch(name, plans[name])
            out = Path(plans[name][plans[name].index("--output_dir") + 1])
            lora = part == "b-lora"
            change = adapter_change(out) if lora else weight_change(work / "warm", out)
            moved = change["lora_B_norm"] > 0 if lora else change["share_moved"] > 0.01
            # DDP saves the fp32 master weights; ZeRO-3 gathers a 16-bit copy on save (zero3_save_16bit_model)
            expected = None if lora else ["bfloat16"] if part == "b-zero3" else ["float32"]
            dtype_ok = lora or change["saved_dtypes"] == expected
            result.update(change, ok=result["loss_finite"] and bool(result["reward"]) and moved and dtype_ok)
            result["check"] = (
                f"adapter lora_B norm {change['lora_B_norm']:.3g}"
                if lora
                else f"{change['share_moved']:.1%} of weights moved (max {change['max_abs_delta']:.2e}), saved "
                f"{'/'.join(change['saved_dtypes'])}"
            )
            return result

        return body

    def qwen(part: str) -> Callable[[], dict[str, Any]]:
        name = names[part]

        def body() -> dict[str, Any]:
            result = smoke.launch(name, plans[name])
            result["ok"] = result["loss_finite"] and result["steps"] is not None
            result["check"] = f"{result['steps']} steps, loss finite: {result['loss_finite']}"
            return result

        return body

    def build() -> dict[str, Any]:
        tiny()
        return {"check": str(build_qwen_shaped(work))}

    bodies: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "setup": (names["setup"], setup),
        "a": (names["a"], grpo("a")),
        "d": ("d: precision, lr 1e-6 AdamW steps", precision_on_gpu),
        "b-zero3": (names["b-zero3"], grpo("b-zero3")),
        "b-lora": (names["b-lora"], grpo("b-lora")),
        "c-build": ("c: build Qwen2.5-0.5B-shaped model", build),
        "c-gen": ("c: generation, bf16, HF generate", lambda: generation_speed(work / "qwen2.5-0.5b-shaped")),
        "c-ddp": (names["c-ddp"], qwen("c-ddp")),
        "c-zero3": (names["c-zero3"], qwen("c-zero3")),
        "c-8bit": (names["c-8bit"], qwen("c-8bit")),
    }
    failed: set[str] = set()
    for part in parts:
        if NEEDS.get(part) in failed:
            failed.add(part)
            continue
        title, body = bodies[part]
        if not smoke.part(title, body)["ok"]:
            failed.add(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smoke-gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "smoke-gpu", help="work folder (emptied first)")
    parser.add_argument("--copy-to", type=Path, help="also copy smoke-gpu.json/.md and logs.tar.gz here")
    parser.add_argument("--plan", action="store_true", help="validate every part's launch plan; needs no GPU")
    parser.add_argument("--only", help=f"a comma-separated subset of {','.join(PART_IDS)} (and what they need)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts (default %(default)s)")
    parser.add_argument("--rehearse", action="store_true", help="run the harness on this CPU (not a GPU result)")
    args = parser.parse_args(argv)
    if args.plan:
        return plan_all(args.out)
    if args.rehearse and not REHEARSAL:
        os.environ["AHA_SMOKE_REHEARSAL"] = "1"
        os.execv(
            sys.executable,
            [
                sys.executable,
                *[a for a in sys.argv if a != "--rehearse"],
                "--out",
                str(REPO / "runs" / "smoke-gpu-rehearsal"),
            ],
        )
    gpu = "CPU rehearsal" if REHEARSAL else cuda_gpu()
    if gpu is None:
        say("no CUDA GPU here (torch.cuda.is_available() is False): skipped; run it on a GPU node (docs/gpu-smoke.md)")
        return 0
    if not os.environ.get("AHA_SMOKE_SITE"):
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_packages(args.out)
    found = versions()
    say(f"{gpu}; " + ", ".join(f"{k} {v}" for k, v in found.items()))
    check_datasets_stack(found)
    smoke = Smoke(args.out, args.copy_to)
    smoke.budget_s = args.budget
    run_parts(smoke, selected(args.only))
    smoke.write()
    failed = [r["part"] for r in smoke.results if not r["ok"]]
    say(
        f"{len(smoke.results) - len(failed)}/{len(smoke.results)} parts ok in {time.monotonic() - smoke.start:.0f} s; "
        f"{args.out / 'smoke-gpu.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
