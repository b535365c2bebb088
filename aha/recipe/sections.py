"""A recipe's typed sections: what each key means, its default, and the rules local to one section.

Field help strings are the documentation users see in `aha train --help`. Each section checks its own keys in
`__post_init__`; rules that span sections live in `aha.recipe.rules`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError
from aha.topology import Topology

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_TASKS = ("arith", "countdown")
TASKS = ("gsm8k", "countdown")
TRAINERS = ("grpo", "sft", "async_grpo")
GRPO_TRAINERS = ("grpo", "async_grpo")  # reinforcement learning from rewards (async_grpo: aha/async_grpo.py)
ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "accelerate_configs"


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
            "(arith: max_number, min_ops, max_ops, operators, wording story|plain; countdown: min_numbers, "
            "max_numbers, max_number, max_target)."
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
            _check_generator_options(task, self.dataset_generator)
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


def _check_generator_options(task: str, options: dict[str, Any]) -> None:
    """Option names (and the arith wording) checked at `aha check`, before any row is generated or model loaded."""
    import inspect

    from aha import synthetic

    make = {"arith": synthetic.arith_splits, "countdown": synthetic.countdown_splits}[task]
    known = [name for name in inspect.signature(make).parameters]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RecipeError("dataset_generator", f"unknown option(s) {unknown} for synthetic:{task}; it takes {known}.")
    wording = options.get("wording", "story")
    if task == "arith" and wording not in synthetic.WORDINGS:
        raise RecipeError(
            "dataset_generator",
            f"wording {wording!r} is not one of {', '.join(synthetic.WORDINGS)}; e.g. wording: plain.",
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
