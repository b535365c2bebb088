"""`aha check RECIPE [overrides]`: validate a recipe without loading any model."""

from __future__ import annotations

import time

from aha.recipe.parsing import load
from aha.recipe.rules import missing_model_message


def check_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: aha check RECIPE [--key value ...]\nValidate a recipe without loading any model; exit 2 on errors."
        )
        return 0 if argv else 2
    start = time.perf_counter()
    path, overrides = argv[0], argv[1:]
    recipe = load(path, overrides, require_model=False)  # a RecipeError: aha.cli prints it and exits 2
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
