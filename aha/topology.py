"""The topology of a run, made once and asked everywhere: nodes, training ranks, devices, where vLLM serves.

`Topology.target(launch, vllm_server)` is what a recipe asks for (`aha check` validates against it);
`aha.launch.hardware.detect` makes the one a launch runs on (flags, Slurm, this machine). Everything else (the batch
rule, the plan, the ranks' own recipe check) asks a Topology instead of recomputing rank counts.

Layouts:
- CPU (`gpus_per_node: 0`): `cpu_processes` gloo ranks on one machine; with a vLLM server, the server shares the
  cores; two "nodes" (the second serving vLLM) are allowed, as on GPUs;
- one GPU node with a server: the last `vllm_server_gpus` GPUs serve, the rest train;
- several nodes with a server: the whole last node serves vLLM, the others train;
- colocate mode or no vLLM: every device trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def uses_vllm_server(training: Any) -> bool:
    """vLLM as a separate server (vllm_mode: server): the one test of "is this server mode"."""
    return bool(getattr(training, "use_vllm", False)) and getattr(training, "vllm_mode", None) == "server"


def process_rank() -> int:
    """This process's global rank as torchrun/accelerate set it (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0"))


def process_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Topology:
    nodes: int
    gpus_per_node: int  # 0: a CPU machine
    cpu_processes: int  # CPU ranks (gpus_per_node 0)
    vllm_server: bool  # a separate vLLM server runs
    vllm_server_gpus: int  # one GPU node: GPUs the server takes (the last ones)
    gpu_ids: tuple[str, ...] = ()  # this node's devices the run uses, as CUDA_VISIBLE_DEVICES names them
    idle_gpu_ids: tuple[str, ...] = ()  # devices this node has that the run leaves alone
    node_rank: int = 0
    hosts: tuple[str, ...] = ("localhost",)  # one per node, node 0 first, the vLLM node (if any) last
    hosts_known: bool = True  # False: placeholder names (multi-node outside Slurm without --hosts)
    source: str = "recipe"  # where the device counts came from: flags | slurm | machine | recipe
    available_gpus: int = 0  # GPUs this node has or Slurm gave it; 0: unknown (planning elsewhere)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def target(cls, launch: Any, vllm_server: bool) -> Topology:
        """The topology a recipe's launch section asks for (no hardware looked at)."""
        gpus = launch.gpus_per_node
        return cls(
            nodes=launch.num_nodes,
            gpus_per_node=gpus,
            cpu_processes=launch.cpu_processes,
            vllm_server=vllm_server,
            vllm_server_gpus=launch.vllm_server_gpus,
            gpu_ids=tuple(str(i) for i in range(gpus)),
            hosts=tuple(f"node{i}" for i in range(launch.num_nodes)),
            hosts_known=launch.num_nodes == 1,
        )

    @property
    def cpu(self) -> bool:
        return self.gpus_per_node == 0

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def server_node_rank(self) -> int | None:
        """The node the vLLM server runs on: the last one of several, else node 0; None without a server."""
        if not self.vllm_server:
            return None
        return self.nodes - 1 if self.multi_node else 0

    @property
    def trainer_nodes(self) -> int:
        return self.nodes - 1 if self.vllm_server and self.multi_node else self.nodes

    @property
    def trainer_gpu_ids(self) -> tuple[str, ...]:
        if not self.multi_node and not self.cpu:  # GPUs the recipe reserves for a server never train
            return self.gpu_ids[: max(self.gpus_per_node - self.vllm_server_gpus, 0)]
        return () if self.cpu else self.gpu_ids

    @property
    def server_gpu_ids(self) -> tuple[str, ...]:
        if not self.vllm_server or self.cpu:
            return ()
        return self.gpu_ids if self.multi_node else self.gpu_ids[self.gpus_per_node - self.vllm_server_gpus :]

    @property
    def ranks_per_node(self) -> int:
        return self.cpu_processes if self.cpu else len(self.trainer_gpu_ids)

    @property
    def ranks(self) -> int:
        """Training processes over all trainer nodes (accelerate's num_processes)."""
        return self.trainer_nodes * self.ranks_per_node

    @property
    def role(self) -> str:
        """What this node runs: "vllm" (the last node of a multi-node server run) or "trainer"."""
        return "vllm" if self.multi_node and self.node_rank == self.server_node_rank else "trainer"

    def describe(self) -> str:
        """One line for people: e.g. "2 node(s) x 8 GPUs, the last node serving vLLM: 8 training ranks"."""
        where = f"{self.nodes} node(s) x {self.gpus_per_node} GPUs" if not self.cpu else f"{self.nodes} CPU node(s)"
        if self.vllm_server and self.multi_node:
            where += ", the last node serving vLLM"
        elif self.vllm_server and not self.cpu:
            where += f", {self.vllm_server_gpus} of them for the vLLM server"
        return f"{where}: {self.ranks} training rank(s)"
