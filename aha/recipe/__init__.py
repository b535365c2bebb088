"""Recipes: one YAML file is the whole truth of a run.

A recipe is parsed by TRL's `TrlParser` over our own sections plus TRL's `GRPOConfig` (or `SFTConfig` for a
supervised warm-up) and `ModelConfig`. Keys are flat, as in TRL and open-r1 recipes, so every key can be overridden on
the command line (`--max_steps 5`). This package is the one place defaults live; it knows nothing of launching.

By job:
- `sections`: the typed sections (what each key means, its default, rules local to one section) and `Recipe`;
- `parsing`: the YAML file, unknown keys and value types, TRL's parser, and `load`;
- `rules`: rules across sections (the GRPO batch rule, hardware layout, vLLM keys, rewards, CPU precision);
- `check`: `aha check RECIPE`.
Every failure is a `RecipeError` (an `aha.errors.AhaUserError`) naming the key and the fix; `aha <verb>` turns it into
exit code 2. The names below are the package's interface: import them from `aha.recipe`.
"""

from aha.recipe.check import check_main
from aha.recipe.parsing import launch_section, load, read_yaml, write_variant
from aha.recipe.rules import batch_rule_error, missing_model_message, validate, validate_batch, validate_topology
from aha.recipe.sections import (
    SYNTHETIC_PREFIX,
    DatasetArguments,
    LaunchArguments,
    PromptArguments,
    Recipe,
    RecipeError,
    RewardArguments,
    accelerate_config_path,
    looks_like_local_path,
    section_types,
)

__all__ = [
    "SYNTHETIC_PREFIX",
    "DatasetArguments",
    "LaunchArguments",
    "PromptArguments",
    "Recipe",
    "RecipeError",
    "RewardArguments",
    "accelerate_config_path",
    "batch_rule_error",
    "check_main",
    "launch_section",
    "load",
    "looks_like_local_path",
    "missing_model_message",
    "read_yaml",
    "section_types",
    "validate",
    "validate_batch",
    "validate_topology",
    "write_variant",
]
