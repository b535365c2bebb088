"""Helpers the tests share: paths and recipe variants in tmp folders."""

from __future__ import annotations

from pathlib import Path

from aha.recipe import write_variant

REPO = Path(__file__).resolve().parent.parent
GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"  # in the repository; see data/gsm8k/SOURCE.md


def write_recipe(tmp_path: Path, base: str, name: str = "recipe.yaml", drop: tuple[str, ...] = (), **keys) -> Path:
    """A copy of recipes/<base> with `keys` replaced or added and `drop` removed, written into tmp_path."""
    return write_variant(REPO / "recipes" / base, tmp_path, name, drop, **keys)
