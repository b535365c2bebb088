"""Helpers the tests share: paths and recipe variants in tmp folders."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"  # in the repository; see data/gsm8k/SOURCE.md


def write_recipe(tmp_path: Path, base: str, name: str = "recipe.yaml", drop: tuple[str, ...] = (), **keys) -> Path:
    """A copy of recipes/<base> with `keys` replaced or added and `drop` removed, written into tmp_path."""
    config = yaml.safe_load((REPO / "recipes" / base).read_text())
    for key in drop:
        config.pop(key, None)
    config.update(keys)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
