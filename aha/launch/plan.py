"""The plan of a launch (what `--dry-run` prints): the trainer's accelerate command, the vLLM server's command, their
devices and environments, the effective global batch and the precision, all from one Topology."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aha.launch.errors import LaunchError
from aha.recipe import Recipe, accelerate_config_path
from aha.run_folder import RunFolder
from aha.topology import Topology
from aha.train import USER_OVERRIDES_ENV
from aha.vllm_cpu import VLLM_CPU_KVCACHE_GIB

DEFAULT_MAIN_PORT = 29500
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_HOST = LOCAL_HOSTS[0]
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SIGTERM_GUARD = Path(__file__).resolve().parent / "sigterm_guard"  # its sitecustomize makes SIGTERM a no-op


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
class BatchPlan:
    """What one optimizer step sees with this plan's ranks (the numbers the learning dynamics depend on)."""

    per_device: int
    ranks: int
    accumulation: int  # gradient_accumulation_steps (GRPO: steps_per_generation when it is set)
    global_batch: int  # sequences (GRPO: completions) per optimizer step
    num_generations: int | None  # GRPO: completions per prompt
    prompts: int | None  # GRPO: prompts per optimizer step

    def describe(self) -> str:
        text = f"global batch {self.global_batch} = {self.per_device} per device x {self.ranks} rank(s) x "
        text += f"{self.accumulation} accumulation step(s)"
        if self.prompts is not None:
            text += f" = {self.prompts} prompts x {self.num_generations} generations"
        return text


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
    batch: BatchPlan
    precision: str  # how the weights are updated, e.g. "fp32 weights, bfloat16 autocast"
    idle_gpus: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def free_port(start: int, host: str = "") -> int:
    """The first port from `start` nobody listens on here (deterministic on an idle machine)."""
    for port in range(start, start + 500):
        if port_is_free(port, host):
            return port
    raise LaunchError(None, f"no free TCP port in {start}..{start + 499}.")


def port_is_free(port: int, host: str = "") -> bool:
    """Nobody listens on `port`. SO_REUSEADDR, as the vLLM server (uvicorn) binds: a port whose last connections
    are in TIME_WAIT (a run stopped a minute ago, rerun to resume) is free for it; a listening one is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def batch_plan(recipe: Recipe, ranks: int) -> BatchPlan:
    training = recipe.training
    per_device = training.per_device_train_batch_size
    accumulation = training.gradient_accumulation_steps
    if recipe.is_grpo:
        accumulation = getattr(training, "steps_per_generation", None) or accumulation
        total = per_device * ranks * accumulation
        generations = training.num_generations
        return BatchPlan(per_device, ranks, accumulation, total, generations, total // generations)
    return BatchPlan(per_device, ranks, accumulation, per_device * ranks * accumulation, None, None)


def _vllm_server_command(recipe: Recipe, bind: str, port: int, tp: int, dp: int, cpu: bool) -> list[str]:
    launch, model = recipe.launch, recipe.model
    command = [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", model.model_name_or_path]
    command += ["--host", bind, "--port", str(port)]
    if model.model_revision not in (None, "main"):
        command += ["--revision", model.model_revision]
    if model.dtype not in (None, "auto", "float32") or (cpu and model.dtype == "float32"):
        command += ["--dtype", model.dtype]
    elif cpu:  # vLLM's "auto" runs a float32 model in half precision; the CPU trainer computes in float32
        command += ["--dtype", "float32"]
    elif model.dtype == "float32":  # fp32 master weights train; rollouts run in the compute precision
        command += ["--dtype", "bfloat16" if recipe.training.bf16 else "float32"]
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


def no_proxy_for(hosts: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """NO_PROXY/no_proxy extended with the run's own hosts: a site's http(s)_proxy must not carry the trainer's calls
    to the vLLM server (generation, weight sync) nor the health checks."""
    present = [h for h in (environ.get("NO_PROXY") or environ.get("no_proxy") or "").split(",") if h]
    value = ",".join(dict.fromkeys([*present, *LOCAL_HOSTS, *hosts]))
    return {"NO_PROXY": value, "no_proxy": value}


def _routable_address(host: str) -> str:
    """The address other nodes reach `host` at; the name itself when this machine cannot resolve it (dry-run)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def _vllm_plan(recipe: Recipe, topology: Topology, environ: Mapping[str, str]) -> VllmPlan:
    launch, cpu = recipe.launch, topology.cpu
    port = recipe.training.vllm_server_port
    tp, dp = (1, 1) if cpu else (launch.vllm_server_tensor_parallel_size, launch.vllm_server_data_parallel_size)
    server_node = topology.hosts[topology.server_node_rank or 0]
    connect_host = server_node if topology.multi_node else LOCAL_HOST
    bind = "0.0.0.0" if topology.multi_node else LOCAL_HOST
    devices = ",".join(topology.server_gpu_ids)
    env = {"VLLM_SERVER_DEV_MODE": "1", "CUDA_VISIBLE_DEVICES": devices, **no_proxy_for(topology.hosts, environ)}
    # deaf to a job-wide SIGTERM: the trainer may still need it to finish and save (aha/launch/sigterm_guard)
    env["AHA_IGNORE_SIGTERM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SIGTERM_GUARD), environ.get("PYTHONPATH", "")) if p)
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = VLLM_CPU_KVCACHE_GIB
    command = _vllm_server_command(recipe, bind, port, tp, dp, cpu)
    return VllmPlan(connect_host, port, devices, tp, dp, command, server_node, env)


def _trainer_env(recipe: Recipe, topology: Topology, environ: Mapping[str, str]) -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(topology.trainer_gpu_ids), **no_proxy_for(topology.hosts, environ)}
    if topology.cpu:
        # cores shared by the ranks (and a CPU vLLM server): oversubscribed torch threads slow everyone down
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        sharing = topology.ranks_per_node + (1 if topology.vllm_server and not topology.multi_node else 0)
        env["OMP_NUM_THREADS"] = str(max(1, cores // sharing))
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's accelerator probe otherwise warns on every CPU rank
    if topology.vllm_server and topology.multi_node and not topology.cpu and "VLLM_HOST_IP" not in environ:
        # NCCL weight sync: trainer rank 0 is the rendezvous master and announces vLLM's get_ip(), the interface of
        # the default route, which the vLLM node may not reach (no default route, a management network): announce
        # the address node 0 has in the host list, which the vLLM node does reach.
        env["VLLM_HOST_IP"] = _routable_address(topology.hosts[0])
    return env


def make_plan(
    recipe: Recipe,
    recipe_path: str,
    overrides: Sequence[str],
    topology: Topology,
    flags: argparse.Namespace,
    environ: Mapping[str, str],
) -> Plan:
    """The whole plan from the recipe and the topology; the ranks get the topology as recipe overrides, so each one
    validates the recipe the plan was checked against."""
    from aha.precision import training_precision

    training = recipe.training
    use_vllm = recipe.is_grpo and bool(training.use_vllm)
    vllm_plan = _vllm_plan(recipe, topology, environ) if topology.vllm_server else None
    trainer = _trainer_plan(recipe, recipe_path, overrides, topology, flags, environ, vllm_plan)
    notes = list(topology.notes)
    if not topology.hosts_known:
        notes.append("multi-node outside Slurm: host names are placeholders; pass --hosts h0,h1,... to run")
    if topology.source == "recipe" and not topology.cpu:
        notes.append("no GPU found here: planned for the recipe's target topology (gpus_per_node)")
    device = "cpu" if topology.cpu else "gpu"
    return Plan(
        recipe=recipe_path,
        mode=(f"{device}+vllm-{training.vllm_mode}" if use_vllm else device) + ("+async" if recipe.is_async else ""),
        hardware_source=topology.source,
        nodes=list(topology.hosts),
        node_rank=topology.node_rank,
        role=topology.role,
        log_dir=str(RunFolder(Path(training.output_dir)).launch_dir),
        trainer=trainer,
        vllm=vllm_plan,
        batch=batch_plan(recipe, topology.ranks),
        precision=training_precision(recipe).how,
        idle_gpus=list(topology.idle_gpu_ids),
        notes=notes,
    )


def _trainer_plan(
    recipe: Recipe,
    recipe_path: str,
    overrides: Sequence[str],
    topology: Topology,
    flags: argparse.Namespace,
    environ: Mapping[str, str],
    vllm_plan: VllmPlan | None,
) -> TrainerPlan:
    """The accelerate command over `aha.train` and its environment; the ranks get the topology (and the vLLM
    server's address) as recipe overrides after the user's own."""
    config_path = accelerate_config_path(flags.accelerate_config or recipe.launch.accelerate_config)
    assert config_path is not None  # LaunchArguments and the flag check validated it
    multi_node = topology.multi_node
    main_ip = topology.hosts[0] if multi_node else LOCAL_HOST
    main_port = flags.main_port or (DEFAULT_MAIN_PORT if multi_node else free_port(DEFAULT_MAIN_PORT))
    rank_overrides = [*overrides, "--num_nodes", str(topology.nodes), "--gpus_per_node", str(topology.gpus_per_node)]
    if flags.accelerate_config:
        rank_overrides += ["--accelerate_config", flags.accelerate_config]
    if vllm_plan is not None:
        rank_overrides += ["--vllm_server_host", vllm_plan.host, "--vllm_server_port", str(vllm_plan.port)]

    machine_rank = topology.node_rank if topology.role == "trainer" else 0
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path)]
    command += ["--num_machines", str(topology.trainer_nodes), "--num_processes", str(topology.ranks)]
    command += ["--machine_rank", str(machine_rank), "--main_process_port", str(main_port)]
    if multi_node:
        command += ["--main_process_ip", main_ip]
    command += ["-m", "aha.train", recipe_path, *rank_overrides]
    return TrainerPlan(
        num_machines=topology.trainer_nodes,
        num_processes=topology.ranks,
        cuda_visible_devices=",".join(topology.trainer_gpu_ids),
        command=command,
        machine_rank=machine_rank,
        main_process_ip=main_ip,
        main_process_port=main_port,
        accelerate_config=str(config_path),
        # the ranks record the user's overrides, not the plan's topology flags appended after them
        env={**_trainer_env(recipe, topology, environ), USER_OVERRIDES_ENV: json.dumps(list(overrides))},
    )


def describe(plan: Plan, topology: Topology) -> list[str]:
    """What a person reads before the run starts: where it runs, the batch, the precision, the idle devices."""
    lines = [f"plan: {topology.describe()} ({plan.mode}, hardware from {plan.hardware_source})"]
    lines.append(f"plan: {plan.batch.describe()}; {plan.precision}")
    lines += [f"plan: note: {note}" for note in plan.notes]
    return lines


def plan_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)
