"""Reading a recipe: the YAML file, its keys and value types, TRL's parser over every section, and `load`.

Validation happens in three layers, all before any model loads:
1. the YAML itself (here): a mapping, every key known (with a "did you mean"), every value of the field's type;
2. each section's `__post_init__` (aha.recipe.sections): rules local to a section;
3. cross-section rules (aha.recipe.rules), e.g. the GRPO batch rule for the number of training ranks the run will have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

from aha.recipe.rules import validate, validate_batch, validate_topology, validate_vllm_keys
from aha.recipe.sections import (
    GRPO_TRAINERS,
    TRAINERS,
    LaunchArguments,
    Recipe,
    RecipeError,
    section_types,
)
from aha.topology import process_world_size, uses_vllm_server


def _planned_world_size(config_type: type, num_processes: int) -> type:
    """The training config as the run will see it with `num_processes` ranks, built in one process. GRPOConfig
    derives its generation batch from `world_size`; checking a 7-rank plan from a 1-process CLI needs this."""

    def world_size(self) -> int:
        return num_processes

    return type(config_type.__name__, (config_type,), {"world_size": property(world_size)})


@contextlib.contextmanager
def _target_gpu_runs_bf16(launch: LaunchArguments):
    """transformers' TrainingArguments refuses `bf16: true` when *this* machine has no bf16 GPU, but a GPU recipe is
    validated (aha check, a dry-run plan) on machines without its GPUs. On such a machine the probe answers for the
    target GPU; a training process on the GPU node runs the real check."""
    import torch
    import transformers.training_args as training_args

    if launch.gpus_per_node == 0 or torch.cuda.is_available():
        yield
        return
    probe = training_args.is_torch_bf16_gpu_available
    training_args.is_torch_bf16_gpu_available = lambda *args, **kwargs: True
    try:
        yield
    finally:
        training_args.is_torch_bf16_gpu_available = probe


def write_variant(
    base: str | os.PathLike,
    folder: str | os.PathLike,
    name: str = "recipe.yaml",
    drop: typing.Sequence[str] = (),
    **keys,
) -> Path:
    """A copy of the recipe `base` with `keys` replaced or added and `drop` removed, written as folder/name (tests,
    benchmarks and the GPU smoke derive their runs from the shipped recipes this way)."""
    config = yaml.safe_load(Path(base).read_text())
    for key in drop:
        config.pop(key, None)
    config.update(keys)
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise RecipeError(
            None, f"recipe file {path!r} does not exist; pass a path such as recipes/tiny/grpo-arith.yaml."
        )
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise RecipeError(None, f"recipe file {path!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise RecipeError(None, f"recipe file {path!r} must be a YAML mapping of key: value.")
    return data


def _type_matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a field annotation. Strings are left to argparse, which converts and checks them."""
    if isinstance(value, str) or annotation is Any:
        return True
    if isinstance(annotation, str):  # a forward reference we cannot resolve: let the dataclass decide
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_type_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, list)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        # enums and other classes: argparse would get them from strings only
        return isinstance(value, annotation)
    return True


def _field_types(types_: tuple[type, ...]) -> dict[str, Any]:
    annotations: dict[str, Any] = {}
    for cls in types_:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                annotations[f.name] = hints.get(f.name, Any)
    return annotations


def _check_keys_and_types(config: dict[str, Any], annotations: dict[str, Any], path: str) -> None:
    for key, value in config.items():
        if key == "env":
            if not isinstance(value, dict):
                raise RecipeError("env", "must be a mapping of environment variable names to values.")
            continue
        if key not in annotations:
            close = difflib.get_close_matches(key, annotations, n=3, cutoff=0.75)
            hint = f" Did you mean {' or '.join(close)}?" if close else " Remove it or check the spelling."
            raise RecipeError(key, f"unknown key in {path}.{hint}")
        if value is not None and not _type_matches(value, annotations[key]):
            expected = getattr(annotations[key], "__name__", None) or str(annotations[key]).replace("typing.", "")
            raise RecipeError(key, f"expects {expected}, got {type(value).__name__} {value!r} in {path}.")


class _RecipeParser:
    """TrlParser whose argparse errors become RecipeErrors (argparse would print the usage of 300 flags and exit)."""

    def __new__(cls, types_: tuple[type, ...]):
        from trl import TrlParser

        class Parser(TrlParser):
            def error(self, message: str):
                key = None
                if message.startswith("argument --"):
                    key = message[len("argument --") :].split(":")[0].split("/")[0].strip()
                raise RecipeError(key, message)

        return Parser(types_)


def _parse(types_: tuple[type, ...], args: list[str], *, remaining: bool = False) -> tuple[Any, ...]:
    """TRL's parser over `types_`; a ValueError from a section's __post_init__ (ours or TRL's) becomes a RecipeError
    that keeps its message: it states the rule."""
    try:
        return _RecipeParser(types_).parse_args_and_config(args, return_remaining_strings=remaining)
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(None, str(err)) from err


# GRPOConfig keys that decide whether a vLLM server takes GPUs away from training (read with the batch keys)
VLLM_MODE_KEYS = ("use_vllm", "vllm_mode")
BATCH_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "generation_batch_size",
    "steps_per_generation",
)
# async_grpo's staleness keys, read with the batch keys (aha.async_grpo.validate_async_rules)
ASYNC_RULE_KEYS = ("max_staleness", "weight_sync_steps", "max_inflight_tasks", "queue_maxsize")


def _batch_fields(config_type: type) -> type:
    """The GRPO batch keys with GRPOConfig's own defaults, parsed before GRPOConfig itself so that the batch rule is
    reported with the plan's numbers and the fix (GRPOConfig's own error knows neither)."""
    fields_ = [
        (f.name, f.type, field(default=f.default, metadata=f.metadata))
        for f in dataclasses.fields(config_type)
        if f.name in BATCH_KEYS + VLLM_MODE_KEYS + ASYNC_RULE_KEYS
    ]
    return dataclasses.make_dataclass("BatchFields", fields_)


def load(
    path: str, overrides: typing.Sequence[str] = (), *, processes: int | None = None, require_model: bool = True
) -> Recipe:
    """Parse and validate a recipe. `overrides` are CLI flags (`--max_steps 5`) that win over the YAML.

    `processes`: the number of training ranks to validate for. None means the recipe's own target topology
    (`aha check`); the launcher passes its plan's count; a training process passes its real world size.
    `require_model`: a local model folder must exist. `aha check` turns it off: a recipe whose model is built by an
    earlier stage (the warm start) is valid before that stage ran; it reports the missing folder as a note."""
    config = read_yaml(path)
    overrides = list(overrides)
    trainer = overrides[overrides.index("--trainer") + 1] if "--trainer" in overrides[:-1] else config.get("trainer")
    if trainer not in TRAINERS:
        raise RecipeError("trainer", f"{trainer!r} is not a trainer; set `trainer:` to one of {', '.join(TRAINERS)}.")
    types_ = section_types(trainer)
    _check_keys_and_types(config, _field_types(types_), path)
    args = ["--config", path, *overrides]

    # Stage 1: the launch section and the batch keys, to check the topology before the training config is built.
    launch, batch, _ = _parse((LaunchArguments, _batch_fields(types_[-2])), args, remaining=True)
    vllm_server = uses_vllm_server(batch)
    if processes is None:
        processes = launch.training_processes(vllm_server)
    validate_topology(launch, processes, vllm_server=vllm_server)
    if trainer == "grpo":
        validate_batch(batch, processes)
    elif trainer == "async_grpo":
        from aha.async_grpo import validate_async_rules

        validate_async_rules(batch, processes)

    # Stage 2: every section. GRPOConfig validates itself for `processes` ranks, even from a single process.
    running = process_world_size()
    if processes != running:
        types_ = (*types_[:-2], _planned_world_size(types_[-2], processes), types_[-1])
    with _target_gpu_runs_bf16(launch):
        sections = _parse(types_, args)
    if trainer in GRPO_TRAINERS:
        dataset, prompt, reward, launch, training, model = sections
    else:
        dataset, prompt, launch, training, model = sections
        reward = None
    recipe = Recipe(path, dataset, prompt, launch, model, training, reward, overrides)
    validate(recipe, require_model=require_model)
    if trainer in GRPO_TRAINERS:
        explicit = set(config) | {o[2:].split("=")[0] for o in overrides if o.startswith("--")}
        validate_vllm_keys(training, explicit)
    return recipe


def launch_section(path: str, overrides: typing.Sequence[str] = ()) -> LaunchArguments:
    """Only the launch section (with overrides): what the launcher needs to look at the hardware before it knows how
    many ranks to validate the whole recipe for."""
    launch, _ = _parse((LaunchArguments,), ["--config", path, *overrides], remaining=True)
    return launch
