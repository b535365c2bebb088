"""The run folder: its paths, its atomic writes, and the resolved recipe later commands load instead of the raw YAML."""

from __future__ import annotations

import json

import pytest
import yaml

from aha.recipe import load
from aha.run_folder import RunFolder, atomic_write, write_json_atomic
from aha.train import resolved_settings, write_run_recipe
from tests.helpers import write_recipe


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = write_json_atomic(tmp_path / "summary.json", {"global_step": 5})

    def fail_halfway(tmp):
        tmp.write_text('{"global_st')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail_halfway)
    assert json.loads(target.read_text()) == {"global_step": 5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_a_checkpoint_belongs_to_the_run_folder_above_it(tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    write_json_atomic(tmp_path / "summary.json", {"recipe": "nowhere.yaml"})
    assert RunFolder.of(tmp_path / "checkpoint-10").path == tmp_path
    assert [step for step, _ in RunFolder(tmp_path).checkpoints()] == [2, 10]
    assert RunFolder(tmp_path).recipe_file() is None  # the named recipe does not exist


def test_the_resolved_recipe_is_found_first_and_holds_the_overrides(tmp_path):
    folder = RunFolder(tmp_path)
    folder.recipe_copy.write_text("seed: 0\nlearning_rate: 1.0e-4\n")
    write_json_atomic(folder.summary_file, {"overrides": ["--seed", "1"]})
    assert folder.recipe_file() == folder.recipe_copy
    assert folder.recipe_settings() == {"seed": 1, "learning_rate": 1e-4}  # an older run: the copy plus overrides
    folder.resolved_recipe.write_text("# resolved\nseed: 1\nlearning_rate: 1.0e-4\n")
    assert folder.recipe_file() == folder.resolved_recipe


def test_loading_the_resolved_recipe_gives_the_recipe_the_run_used(tmp_path):
    path = write_recipe(tmp_path, "tiny/grpo-arith.yaml", output_dir=str(tmp_path / "run"))
    overrides = ["--seed", "3", "--learning_rate", "2e-4", "--lr_scheduler_type", "constant", "--max_steps=7"]
    recipe = load(str(path), [*overrides, "--num_nodes", "1", "--gpus_per_node", "0"], require_model=False)
    settings = resolved_settings(recipe)
    assert (settings["seed"], settings["learning_rate"], settings["max_steps"]) == (3, 2e-4, 7)
    assert settings["lr_scheduler_type"] == "constant"  # an enum written back by value
    assert settings["system_prompt"] == yaml.safe_load(path.read_text())["system_prompt"]

    written = write_run_recipe(recipe, overrides)
    assert written == RunFolder(tmp_path / "run").resolved_recipe
    header = written.read_text().splitlines()[:3]
    assert "--seed 3" in header[1] and "the launcher's plan --num_nodes 1 --gpus_per_node 0" in header[1]
    again = load(str(written), require_model=False)
    for key in ("seed", "learning_rate", "max_steps", "lr_scheduler_type", "num_generations", "beta"):
        assert getattr(again.training, key) == getattr(recipe.training, key), key
    assert again.prompt == recipe.prompt and again.rewards == recipe.rewards and again.dataset == recipe.dataset
