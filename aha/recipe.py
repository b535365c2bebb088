"""Recipes: one YAML file is the whole truth of a run.

A recipe is parsed by TRL's `TrlParser` over our own sections (below) plus TRL's `GRPOConfig` (or `SFTConfig` for a
supervised warm-up) and `ModelConfig`. Keys are flat, as in TRL and open-r1 recipes, so every key can be overridden on
the command line (`--max_steps 5`). This module is the one place defaults live; it knows nothing of launching.

Validation happens in three layers, all before any model loads:
1. the YAML itself: a mapping, every key known (with a "did you mean"), every value of the field's type;
2. each section's `__post_init__`: rules local to a section;
3. `validate()`: rules across sections, e.g. the GRPO batch rule for the number of training ranks the run will have.
Every failure is a `RecipeError` naming the key and the fix; `aha check` turns it into exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aha.errors import AhaUserError
from aha.topology import Topology, process_world_size, uses_vllm_server

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_TASKS = ("arith", "countdown")
TASKS = ("gsm8k", "countdown")
TRAINERS = ("grpo", "sft", "async_grpo")
GRPO_TRAINERS = ("grpo", "async_grpo")  # reinforcement learning from rewards (async_grpo: aha/async_grpo.py)
ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"


class RecipeError(AhaUserError, ValueError):
    """A recipe breaks a rule. `key` names the offending recipe key (or None for the file itself)."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def looks_like_local_path(name: str) -> bool:
    """A hub id is `org/name`; anything else that names a file or folder is a local path and must exist."""
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(DATA_FILE_SUFFIXES)
        or name.count("/") > 1
        or os.path.exists(os.path.expanduser(name))
    )


# --------------------------------------------------------------------------------------------------------------------
# Our own sections. Field help strings are the documentation users see in `aha train --help`.


@dataclass
class DatasetArguments:
    """Where the prompts come from and which columns hold the gold answers."""

    dataset_name: str = field(
        metadata={
            "help": "Hub id (openai/gsm8k), local file (.jsonl/.json/.parquet/.csv) or folder, or a generated task: "
            "synthetic:arith (word problems in GSM8K format) or synthetic:countdown."
        }
    )
    dataset_task: str = field(
        metadata={
            "help": "How rows become prompts and gold columns: gsm8k (question -> answer, gold after '####') or "
            "countdown (nums, target)."
        }
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config, e.g. 'main' for GSM8K."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Held-out split for evaluation (e.g. 'test'); None when there is none."}
    )
    dataset_test_path: str | None = field(
        default=None,
        metadata={"help": "Local file holding the held-out split, when it is a separate file from dataset_name."},
    )
    dataset_columns: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "Map from our column names to the source's: {question: problem, answer: solution} for gsm8k, "
            "{nums: numbers, target: goal} for countdown."
        },
    )
    dataset_max_rows: int | None = field(
        default=None, metadata={"help": "Keep the first N training rows (after shuffling)."}
    )
    dataset_generator: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Options of a synthetic:<task> generator: n_train, n_test, seed, and the task's difficulty "
            "(arith: max_number, min_ops, max_ops; countdown: min_numbers, max_numbers, max_number, max_target)."
        },
    )

    def __post_init__(self):
        if self.dataset_task not in TASKS:
            raise RecipeError("dataset_task", f"{self.dataset_task!r} is not a task; use one of {', '.join(TASKS)}.")
        if self.dataset_max_rows is not None and self.dataset_max_rows < 1:
            raise RecipeError("dataset_max_rows", f"must be >= 1 or null (all rows), got {self.dataset_max_rows}.")
        if self.dataset_name.startswith(SYNTHETIC_PREFIX):
            task = self.dataset_name[len(SYNTHETIC_PREFIX) :]
            if task not in SYNTHETIC_TASKS:
                raise RecipeError(
                    "dataset_name",
                    f"unknown generated task {task!r}; use synthetic:{' or synthetic:'.join(SYNTHETIC_TASKS)}.",
                )
            if not self.dataset_generator:
                raise RecipeError(
                    "dataset_generator",
                    f"{self.dataset_name} needs its generator options (n_train, n_test, seed, difficulty); add a "
                    "dataset_generator mapping to the recipe.",
                )
        elif self.dataset_generator is not None:
            raise RecipeError(
                "dataset_generator", f"only applies to synthetic:<task> datasets, not {self.dataset_name!r}; remove it."
            )
        for key in ("dataset_name", "dataset_test_path"):
            path = getattr(self, key)
            is_local = path and not path.startswith(SYNTHETIC_PREFIX) and looks_like_local_path(path)
            if is_local and not os.path.exists(os.path.expanduser(path)):
                raise RecipeError(
                    key,
                    f"local path {path!r} does not exist (relative paths are taken from {os.getcwd()}); fix the "
                    "path or use a hub id such as openai/gsm8k.",
                )


@dataclass
class PromptArguments:
    """How a row becomes a conversation: system prompt, user message, optional assistant prefill."""

    system_prompt: str | None = field(metadata={"help": "System message; null for none."})
    user_template: str = field(
        metadata={
            "help": "User message, a str.format template over the row's columns: '{question}' for gsm8k, "
            "'Using the numbers {nums}, make {target}.' for countdown."
        }
    )
    assistant_prefill: str | None = field(
        default=None,
        metadata={
            "help": "Text the assistant turn starts with (e.g. 'Let me solve this step by step.\\n<think>'); the model "
            "continues it. Format rewards must then be told the prefill (reward_options.think_format.prefill)."
        },
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "Path to a Jinja chat template that replaces the tokenizer's own."}
    )
    completion_template: str | None = field(
        default=None,
        metadata={
            "help": "sft only: the target completion, a template over the row's columns, e.g. "
            "'<think>\\n{solution}\\n</think>\\n<answer>{answer}</answer>'."
        },
    )

    def __post_init__(self):
        if "{" not in self.user_template:
            raise RecipeError(
                "user_template", "must reference the row's columns, e.g. '{question}'; a fixed prompt cannot learn."
            )
        if self.chat_template is not None and not os.path.isfile(self.chat_template):
            raise RecipeError(
                "chat_template", f"file {self.chat_template!r} does not exist; fix the path or remove it."
            )


@dataclass
class RewardArguments:
    """Which reward functions score completions; weights are GRPOConfig's `reward_weights`."""

    reward_funcs: list[str] = field(
        metadata={
            "help": "Registered reward names (see `rewards.available()`) or dotted paths package.module:function."
        }
    )
    reward_options: dict[str, dict[str, Any]] | None = field(
        default=None, metadata={"help": "Per-reward options: {think_format: {strict: true}, soft_overlong: {...}}."}
    )
    reflection_phrases: list[str] | None = field(
        default=None,
        metadata={
            "help": "Phrases counted as self-checking in completions for the aha/* metrics (case-insensitive whole "
            "words); null: the built-in list (wait, hmm, however, let me check, ...)."
        },
    )

    def __post_init__(self):
        if not self.reward_funcs:
            raise RecipeError("reward_funcs", "list at least one reward, e.g. [think_format, gsm8k_accuracy].")
        if self.reflection_phrases is not None:
            from aha.aha_metrics import AhaSignals

            try:
                AhaSignals(phrases=tuple(self.reflection_phrases))
            except ValueError as err:
                raise RecipeError("reflection_phrases", str(err)) from err
        for name in self.reward_options or {}:
            if name not in self.reward_funcs:
                raise RecipeError(
                    "reward_options", f"has options for {name!r}, which is not in reward_funcs {self.reward_funcs}."
                )


@dataclass
class LaunchArguments:
    """What to run, on which hardware: the launcher plans from this; `aha check` validates against it."""

    trainer: str = field(
        metadata={
            "help": "grpo (reinforcement learning), async_grpo (the same, generation overlapping training on a vLLM "
            "server: aha/async_grpo.py) or sft (supervised warm-up)."
        }
    )
    accelerate_config: str = field(
        metadata={"help": "Name in accelerate_configs/ (ddp, zero2, zero3, zero3_offload) or a path to a YAML file."}
    )
    num_nodes: int = field(default=1, metadata={"help": "Nodes the recipe targets (the last one serves vLLM if > 1)."})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs per node the recipe targets; 0 for a CPU machine."})
    cpu_processes: int = field(default=1, metadata={"help": "Training ranks on a CPU machine (gloo)."})
    vllm_server_gpus: int = field(
        default=0,
        metadata={"help": "On one node: GPUs given to the vLLM server (server mode); the rest train. 0 otherwise."},
    )
    vllm_server_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM server tensor parallel size."})
    vllm_server_data_parallel_size: int = field(default=1, metadata={"help": "vLLM server data parallel size."})
    vllm_server_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "Fraction of each server GPU vLLM may use (a server flag, not GRPOConfig's)."}
    )
    vllm_server_max_model_len: int | None = field(
        default=None, metadata={"help": "Longest prompt + completion the server accepts, in tokens."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "A guard, not a target: stop after this many minutes of optimizer steps (model loading not "
            "counted), say so, and save a checkpoint; the same command run again resumes to max_steps. Set it about 3x "
            "the expected training time; null: max_steps alone decides."
        },
    )

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise RecipeError("trainer", f"{self.trainer!r} is not a trainer; use one of {', '.join(TRAINERS)}.")
        if accelerate_config_path(self.accelerate_config) is None:
            names = sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml"))
            raise RecipeError(
                "accelerate_config",
                f"{self.accelerate_config!r} is neither a file nor one of {', '.join(names)} in accelerate_configs/.",
            )
        for key in ("num_nodes", "cpu_processes", "vllm_server_tensor_parallel_size", "vllm_server_data_parallel_size"):
            if getattr(self, key) < 1:
                raise RecipeError(key, f"must be >= 1, got {getattr(self, key)}.")
        for key in ("gpus_per_node", "vllm_server_gpus"):
            if getattr(self, key) < 0:
                raise RecipeError(key, f"must be >= 0, got {getattr(self, key)}.")
        if not 0.0 < self.vllm_server_gpu_memory_utilization <= 1.0:
            raise RecipeError("vllm_server_gpu_memory_utilization", "must be in (0, 1], e.g. 0.9.")
        if self.max_train_minutes is not None and not self.max_train_minutes > 0:
            raise RecipeError(
                "max_train_minutes", f"must be > 0 minutes, or null for no time limit; got {self.max_train_minutes}."
            )

    def training_processes(self, vllm_server: bool = True) -> int:
        """Training ranks of the target topology: CPU ranks; GPUs minus the vLLM server's (one node) or minus the
        whole last node (several nodes, when a vLLM server runs: `vllm_server`; otherwise every node trains)."""
        return Topology.target(self, vllm_server).ranks


def accelerate_config_path(name: str) -> Path | None:
    candidate = ACCELERATE_CONFIG_DIR / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    path = Path(name).expanduser()
    return path if path.is_file() and path.suffix in (".yaml", ".yml") else None


# --------------------------------------------------------------------------------------------------------------------
# The parsed recipe.


@dataclass
class Recipe:
    path: str
    dataset: DatasetArguments
    prompt: PromptArguments
    launch: LaunchArguments
    model: Any  # trl.ModelConfig
    training: Any  # trl.GRPOConfig or trl.SFTConfig
    rewards: RewardArguments | None  # None for sft
    overrides: list[str] = field(default_factory=list)  # the CLI flags that won over the YAML

    @property
    def is_grpo(self) -> bool:
        """Learning from rewards: grpo or async_grpo."""
        return self.launch.trainer in GRPO_TRAINERS

    @property
    def is_async(self) -> bool:
        return self.launch.trainer == "async_grpo"


def section_types(trainer: str) -> tuple[type, ...]:
    from trl import GRPOConfig, ModelConfig, SFTConfig

    if trainer == "grpo":
        return (DatasetArguments, PromptArguments, RewardArguments, LaunchArguments, GRPOConfig, ModelConfig)
    if trainer == "async_grpo":
        from aha.async_grpo import AsyncRecipeConfig

        return (DatasetArguments, PromptArguments, RewardArguments, LaunchArguments, AsyncRecipeConfig, ModelConfig)
    return (DatasetArguments, PromptArguments, LaunchArguments, SFTConfig, ModelConfig)


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
    try:
        launch, batch, _ = _RecipeParser((LaunchArguments, _batch_fields(types_[-2]))).parse_args_and_config(
            args, return_remaining_strings=True
        )
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(None, str(err)) from err
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
    try:
        with _target_gpu_runs_bf16(launch):
            sections = _RecipeParser(types_).parse_args_and_config(args)
    except RecipeError:
        raise
    except ValueError as err:  # a section's __post_init__ (ours or TRL's): keep its message, it states the rule
        raise RecipeError(None, str(err)) from err
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
    try:
        launch, _ = _RecipeParser((LaunchArguments,)).parse_args_and_config(
            ["--config", path, *overrides], return_remaining_strings=True
        )
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(None, str(err)) from err
    return launch


# --------------------------------------------------------------------------------------------------------------------
# Rules across sections.


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


# --------------------------------------------------------------------------------------------------------------------
# `aha check RECIPE [overrides]`


def check_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: aha check RECIPE [--key value ...]\nValidate a recipe without loading any model; exit 2 on errors."
        )
        return 0 if argv else 2
    start = time.perf_counter()
    path, overrides = argv[0], argv[1:]
    try:
        recipe = load(path, overrides, require_model=False)
    except RecipeError as err:
        print(f"aha check: {path}: {err}", file=sys.stderr)
        return 2
    missing = missing_model_message(recipe.model.model_name_or_path)
    if missing:
        print(f"note: model_name_or_path: {missing} Training will need it.")
    processes = recipe.launch.training_processes()
    where = (
        f"{recipe.launch.num_nodes} node(s) x {recipe.launch.gpus_per_node} GPUs"
        if recipe.launch.gpus_per_node
        else "CPU"
    )
    print(
        f"ok: {path} ({recipe.launch.trainer}, {recipe.model.model_name_or_path}, {where}, {processes} training "
        f"process(es), {time.perf_counter() - start:.1f} s)"
    )
    return 0
