"""Rules across a recipe's sections, checked once every section parsed: the GRPO batch rule for the run's training
ranks, the hardware layout, vLLM keys in the wrong mode, rewards against the prompt, and CPU precision."""

from __future__ import annotations

import math
import os
import typing
from typing import Any

from aha.recipe.sections import TRAINERS, LaunchArguments, Recipe, RecipeError, looks_like_local_path
from aha.topology import uses_vllm_server


def _nearest(values: typing.Iterable[int], target: int, count: int = 3) -> list[int]:
    return sorted(sorted(set(values), key=lambda v: (abs(v - target), v))[:count])


def batch_rule_error(per_device: int, processes: int, steps_per_generation: int, num_generations: int) -> str | None:
    """The GRPO batch rule: every generation batch holds whole groups of `num_generations` completions.
    generation batch = per_device_train_batch_size x training processes x steps_per_generation."""
    generation_batch = per_device * processes * steps_per_generation
    if num_generations >= 2 and generation_batch % num_generations == 0:
        return None
    divisors = [d for d in range(2, generation_batch + 1) if generation_batch % d == 0]
    step = num_generations // math.gcd(num_generations, processes * steps_per_generation)
    per_device_ok = [step * k for k in range(1, 64)]
    return (
        f"generation batch = per_device_train_batch_size {per_device} x {processes} training processes x "
        f"steps_per_generation {steps_per_generation} = {generation_batch}, which is not divisible by "
        f"num_generations {num_generations} (GRPO needs whole groups, and num_generations >= 2). Fix: set "
        f"num_generations to one of {_nearest(divisors, num_generations) or 'none (batch too small)'}, or "
        f"per_device_train_batch_size to one of {_nearest(per_device_ok, per_device)}."
    )


def validate_topology(launch: LaunchArguments, processes: int, *, vllm_server: bool = True) -> None:
    """Rules of the hardware layout, for a run with `processes` training ranks (`vllm_server`: a vLLM server runs,
    i.e. `use_vllm` with `vllm_mode: server`)."""
    if processes < 1:
        raise RecipeError(
            "vllm_server_gpus",
            f"leaves {processes} GPUs for training on a {launch.gpus_per_node}-GPU node; give vLLM fewer GPUs.",
        )
    server = launch.vllm_server_tensor_parallel_size * launch.vllm_server_data_parallel_size
    if launch.gpus_per_node and launch.num_nodes == 1 and launch.vllm_server_gpus and server != launch.vllm_server_gpus:
        raise RecipeError(
            "vllm_server_gpus",
            f"{launch.vllm_server_gpus} server GPUs but vllm_server_tensor_parallel_size x "
            f"vllm_server_data_parallel_size = {server}; make them equal.",
        )
    if launch.gpus_per_node and launch.num_nodes > 1 and vllm_server and server != launch.gpus_per_node:
        raise RecipeError(
            "vllm_server_tensor_parallel_size",
            f"the last node serves vLLM with all its {launch.gpus_per_node} GPUs, but tensor x data parallel = "
            f"{server}; make the product {launch.gpus_per_node}.",
        )


def validate_batch(batch: Any, processes: int) -> None:
    """The GRPO batch rule for `processes` training ranks (see `batch_rule_error`)."""
    if batch.generation_batch_size is not None and batch.steps_per_generation is not None:
        raise RecipeError("generation_batch_size", "set generation_batch_size or steps_per_generation, not both.")
    if batch.generation_batch_size is not None:
        global_batch = batch.per_device_train_batch_size * processes
        if batch.generation_batch_size % global_batch:
            raise RecipeError(
                "generation_batch_size",
                f"{batch.generation_batch_size} is not a multiple of per_device_train_batch_size x {processes} "
                f"training processes = {global_batch}; use a multiple of {global_batch}.",
            )
        steps_per_generation = batch.generation_batch_size // global_batch
    else:
        steps_per_generation = batch.steps_per_generation or batch.gradient_accumulation_steps
    problem = batch_rule_error(
        batch.per_device_train_batch_size, processes, steps_per_generation, batch.num_generations
    )
    if problem:
        raise RecipeError("num_generations", problem)


def missing_model_message(model_name_or_path: str) -> str | None:
    """Why a local model folder cannot be loaded, with the fix; None when it exists or is a hub id."""
    if not looks_like_local_path(model_name_or_path) or os.path.isdir(model_name_or_path):
        return None
    hint = (
        " Build it with `make warmup` (tiny model + supervised warm start)."
        if "artifacts/" in model_name_or_path
        else ""
    )
    from aha.models import creation_hint  # a converted real model (artifacts/models/...) names its own command

    hint = f" {creation_hint(model_name_or_path)}" if creation_hint(model_name_or_path) else hint
    return f"local model folder {model_name_or_path!r} does not exist.{hint}"


# vLLM keys that only mean something in one mode: GRPOConfig's act on colocate engines, ours on the server command
COLOCATE_ONLY_KEYS = {
    "vllm_gpu_memory_utilization": "vllm_server_gpu_memory_utilization",
    "vllm_max_model_length": "vllm_server_max_model_len",
    "vllm_tensor_parallel_size": "vllm_server_tensor_parallel_size",
}
SERVER_ONLY_KEYS = (
    "vllm_server_gpus",
    "vllm_server_tensor_parallel_size",
    "vllm_server_data_parallel_size",
    "vllm_server_gpu_memory_utilization",
    "vllm_server_max_model_len",
)


def validate_vllm_keys(training: Any, explicit: set[str]) -> None:
    """A vLLM key the recipe sets (`explicit`: keys in the YAML or on the command line) must act in its mode; in the
    wrong one it would be silently ignored (e.g. a memory limit meant for the server)."""
    server = uses_vllm_server(training)
    colocate = training.use_vllm and training.vllm_mode == "colocate"
    for key, server_key in COLOCATE_ONLY_KEYS.items():
        if server and key in explicit:
            raise RecipeError(
                key, f"applies to colocate mode only; the vLLM server's setting is {server_key}: set that instead."
            )
    for key in SERVER_ONLY_KEYS:
        if not server and key in explicit and key != "vllm_server_gpus":
            where = "colocate mode" if colocate else "a run without vLLM (use_vllm: false)"
            colocate_key = next((k for k, v in COLOCATE_ONLY_KEYS.items() if v == key), None)
            hint = f" (colocate mode's is {colocate_key})" if colocate_key and colocate else ""
            raise RecipeError(key, f"sets the vLLM server, which {where} does not start; remove it{hint}.")


def validate(recipe: Recipe, *, require_model: bool = True) -> None:
    """Rules across sections, checked once every section parsed."""
    launch, training, model = recipe.launch, recipe.training, recipe.model
    if not model.model_name_or_path:
        raise RecipeError(
            "model_name_or_path", "set the model: a hub id (Qwen/Qwen2.5-0.5B-Instruct) or a local folder."
        )
    missing = missing_model_message(model.model_name_or_path)
    if missing and require_model:
        raise RecipeError("model_name_or_path", missing)
    if launch.gpus_per_node == 0:
        if not training.use_cpu:
            raise RecipeError("use_cpu", "a CPU recipe (gpus_per_node: 0) must say `use_cpu: true`.")
        if training.fp16:
            raise RecipeError(
                "fp16", "CPUs have no float16 fast path: set `fp16: false` (or `bf16: true` with `dtype: float32`)."
            )
        if training.bf16 and str(model.dtype or "float32").replace("torch.", "") not in ("float32", "auto"):
            # bf16 autocast keeps fp32 master weights; bf16 weights on a CPU round small updates away (aha/precision)
            raise RecipeError(
                "bf16",
                f"`bf16: true` on a CPU means bf16 matmuls over float32 weights, but dtype is {model.dtype}: "
                "set `dtype: float32` (or `bf16: false`).",
            )
    from aha.precision import lost_update_problem

    if recipe.launch.trainer in TRAINERS and (problem := lost_update_problem(recipe)):
        raise RecipeError("dtype", problem)
    if recipe.is_async:
        from aha.async_grpo import validate_async_recipe

        validate_async_recipe(recipe)
    if recipe.is_grpo:
        _validate_grpo(recipe)
    else:
        if not recipe.prompt.completion_template:
            raise RecipeError(
                "completion_template",
                "an sft recipe needs the target completion, e.g. "
                "'<think>\\n{solution}\\n</think>\\n<answer>{answer}</answer>'.",
            )
        if recipe.prompt.assistant_prefill:
            raise RecipeError("assistant_prefill", "applies to grpo recipes; put the text in completion_template.")


def _validate_grpo(recipe: Recipe) -> None:
    import rewards

    launch, training, reward = recipe.launch, recipe.training, recipe.rewards
    assert reward is not None
    weights = getattr(training, "reward_weights", None)
    if weights is not None and len(weights) != len(reward.reward_funcs):
        raise RecipeError(
            "reward_weights",
            f"has {len(weights)} weights for {len(reward.reward_funcs)} reward_funcs {reward.reward_funcs}; "
            "give one weight per reward.",
        )
    for name in reward.reward_funcs:
        try:
            rewards.validate(name, (reward.reward_options or {}).get(name, {}))
        except (ValueError, TypeError) as err:
            raise RecipeError("reward_funcs", str(err)) from err
    server_mode = uses_vllm_server(training)
    if server_mode and launch.gpus_per_node and launch.num_nodes == 1 and not launch.vllm_server_gpus:
        raise RecipeError(
            "vllm_server_gpus",
            "vllm_mode: server on one node needs GPUs for the server; set vllm_server_gpus (e.g. 1).",
        )
    if training.use_vllm and training.vllm_mode == "colocate" and launch.vllm_server_gpus:
        raise RecipeError("vllm_server_gpus", "colocate mode shares the training GPUs; set vllm_server_gpus: 0.")
    format_rewards = [name for name in reward.reward_funcs if rewards.base_name(name) in rewards.names(role="format")]
    for name in format_rewards if recipe.prompt.assistant_prefill else []:
        prefill = (reward.reward_options or {}).get(name, {}).get("prefill")
        if prefill != recipe.prompt.assistant_prefill:
            raise RecipeError(
                "reward_options",
                f"the prompt pre-fills the assistant turn, so {name} must score prefill + completion: set "
                f"reward_options.{name}.prefill to the same text as assistant_prefill.",
            )
