"""Which hardware a launch runs on: the flags, then Slurm, then this machine, against what the recipe asks for.

The recipe's GPU count decides the run (its global batch and learning dynamics are written for it): a machine or a
Slurm allocation with more GPUs leaves the extra ones idle and says so; one with fewer is refused before anything
starts (aha.launch.preflight), naming the batch that `--gpus-per-node N` would give. Only the flag changes the count.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping

from aha.launch.errors import LaunchError
from aha.topology import Topology


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


def slurm_gpus(environ: Mapping[str, str]) -> int | None:
    """GPUs Slurm gave this node: SLURM_GPUS_ON_NODE, else SLURM_GPUS_PER_NODE ("8", "h100:8", "8(x2)")."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        match = re.search(r"(\d+)(?:\(|$)", environ.get(key, ""))
        if match:
            return int(match.group(1))
    return None


def in_slurm(environ: Mapping[str, str]) -> bool:
    return "SLURM_JOB_ID" in environ and bool(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES"))


def cuda_device_count() -> int:
    if not os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip():
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpu_count(flags: argparse.Namespace, launch, environ, slurm: bool, gpu_count) -> tuple[int, int, str]:
    """(GPUs the run uses per node, GPUs this node has or was given (0: unknown), where the count came from)."""
    if flags.gpus_per_node is None and launch.gpus_per_node == 0:  # a CPU recipe stays on CPU
        return 0, 0, "recipe"
    available = (slurm_gpus(environ) if slurm else None) or 0
    source = "slurm" if available else "recipe"
    if not available and (count := gpu_count()) > 0:
        available, source = count, "machine"
    if flags.gpus_per_node is not None:
        return flags.gpus_per_node, available, "flags"
    return launch.gpus_per_node, available, source


def _hosts(flags: argparse.Namespace, environ: Mapping[str, str], slurm: bool, nodes: int) -> tuple[list[str], bool]:
    """(one host name per node, whether the names are real): --hosts, then Slurm's node list, then this machine for
    one node; placeholders node0.. otherwise."""
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
    return hosts, hosts_known


def _node_rank(flags: argparse.Namespace, environ: Mapping[str, str], slurm: bool, hosts: list[str]) -> int:
    """This node's rank: --node-rank, then Slurm's SLURM_NODEID, then this host's place in `hosts`, else 0."""
    if flags.node_rank is not None:
        node_rank = flags.node_rank
    elif slurm and "SLURM_NODEID" in environ:
        node_rank = int(environ["SLURM_NODEID"])
    elif socket.gethostname() in hosts:
        node_rank = hosts.index(socket.gethostname())
    else:
        node_rank = 0
    nodes = len(hosts)
    if not 0 <= node_rank < nodes:
        raise LaunchError("--node-rank", f"{node_rank} is not a node of this {nodes}-node run; use 0..{nodes - 1}.")
    return node_rank


def detect(
    flags: argparse.Namespace,
    launch,
    vllm_server: bool,
    environ: Mapping[str, str],
    gpu_count: Callable[[], int] = cuda_device_count,
) -> Topology:
    """The topology this launch runs on; this node's part of it (node rank, device ids)."""
    slurm = in_slurm(environ)
    source = "recipe"
    nodes = launch.num_nodes
    if flags.nodes is not None:
        nodes, source = flags.nodes, "flags"
    elif slurm:
        nodes, source = int(environ.get("SLURM_JOB_NUM_NODES") or environ["SLURM_NNODES"]), "slurm"

    gpus, available, gpu_source = _gpu_count(flags, launch, environ, slurm, gpu_count)
    source = gpu_source if gpu_source != "recipe" else source
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    all_ids = visible if visible else [str(i) for i in range(max(gpus, available))]
    gpu_ids = all_ids[:gpus] if len(all_ids) >= gpus else [str(i) for i in range(gpus)]
    idle = all_ids[gpus:available] if available > gpus else []
    notes = []
    if idle:
        notes.append(
            f"this node has {available} GPUs, the recipe asks for {gpus}: GPUs {','.join(idle)} stay idle "
            f"(--gpus-per-node {available} uses them and changes the global batch)"
        )

    hosts, hosts_known = _hosts(flags, environ, slurm, nodes)
    node_rank = _node_rank(flags, environ, slurm, hosts)
    return Topology(
        nodes=nodes,
        gpus_per_node=gpus,
        cpu_processes=launch.cpu_processes,
        vllm_server=vllm_server,
        vllm_server_gpus=launch.vllm_server_gpus,
        gpu_ids=tuple(gpu_ids),
        idle_gpu_ids=tuple(idle),
        node_rank=node_rank,
        hosts=tuple(hosts),
        hosts_known=hosts_known,
        source=source,
        notes=tuple(notes),
        available_gpus=available,
    )
