"""What the launcher checks about this machine before anything starts (GPU review defects 3 and 5, and three of its
suspicions): packages a recipe needs, a writable HF cache, proxies, the weight-sync address, the server timeout."""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import json
import os
import stat
import threading

import pytest

from aha import launch
from aha.launch import command, preflight
from aha.launch import plan as plan_module
from aha.recipe import load
from tests.helpers import REPO, write_recipe
from tests.launch.conftest import REWARD

LORA = REPO / "recipes" / "qwen2.5-3b-instruct" / "gsm8k-lora.yaml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES", "VLLM_HOST_IP"):
        monkeypatch.delenv(name, raising=False)


def needs(recipe_path, cpu: bool = False, accelerate_config: str | None = None) -> dict[str, str]:
    recipe = load(str(recipe_path), require_model=False)
    found = preflight.required_packages(recipe, cpu, accelerate_config or recipe.launch.accelerate_config)
    return {n.package: n.key for n in found}


def test_the_8bit_lora_recipe_names_bitsandbytes_and_vllm():
    assert needs(LORA) == {"bitsandbytes": "optim: adamw_8bit", "peft": "use_peft: true", "vllm": "use_vllm: true"}


@pytest.mark.parametrize(
    ("keys", "package", "key"),
    [
        ({"load_in_4bit": True}, "bitsandbytes", "load_in_4bit: true"),
        ({"attn_implementation": "flash_attention_2"}, "flash-attn", "attn_implementation: flash_attention_2"),
        ({"accelerate_config": "zero3"}, "deepspeed", "accelerate_config: zero3"),
        ({"report_to": ["wandb"]}, "wandb", "report_to: wandb"),
    ],
    ids=["4-bit loading", "flash attention", "deepspeed", "a tracker"],
)
def test_each_kind_of_need_is_named(tmp_path, keys, package, key):
    path = write_recipe(tmp_path, "qwen2.5-3b-instruct/gsm8k-lora.yaml", **keys)
    assert needs(path, accelerate_config=keys.get("accelerate_config"))[package] == key


def test_a_missing_package_stops_the_launch_before_anything_starts(tmp_path, capsys):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    path = write_recipe(tmp_path, "qwen2.5-3b-instruct/gsm8k-lora.yaml", output_dir=str(tmp_path / "run"))
    # one GPU given by the flag, none present: the package check comes first
    recipe = load(str(path), require_model=False)
    with pytest.raises(launch.LaunchError) as err:
        preflight.check_packages(recipe, cpu=False, accelerate_config="ddp")
    message = str(err.value)
    assert message.startswith("optim:") and "bitsandbytes (for optim: adamw_8bit)" in message
    assert "pip install -e '.[gpu]'" in message
    assert not (tmp_path / "run").exists()


def test_a_dry_run_lists_what_is_missing(tmp_path, capsys):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    assert launch.main([str(LORA), "--dry-run"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any(n.startswith("needs bitsandbytes for optim: adamw_8bit") for n in notes), notes


@pytest.fixture
def hub_recipe(tmp_path):
    return load(str(REPO / "recipes" / "qwen2.5-1.5b-instruct" / "gsm8k-grpo.yaml"), require_model=False)


def test_a_read_only_hf_cache_is_refused_with_the_fallback(tmp_path, hub_recipe):
    if os.geteuid() == 0:  # root writes through file modes: make the cache a file's child instead
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        cache = blocker / "hf"
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    environ = {"HF_HOME": str(cache), "TMPDIR": "/scratch/job42"}
    with pytest.raises(launch.LaunchError) as err:
        preflight.check_hf_cache(hub_recipe, environ)
    message = str(err.value)
    assert message.startswith("HF_HOME:") and str(cache) in message
    assert "export HF_HOME=/scratch/job42/hf-cache" in message and "AHA_HF_CACHE" in message


def test_a_writable_cache_and_local_models_pass(tmp_path, hub_recipe):
    preflight.check_hf_cache(hub_recipe, {"HF_HOME": str(tmp_path / "hf")})
    assert (tmp_path / "hf").is_dir()
    tiny = load(str(REPO / "recipes" / "tiny" / "grpo-arith.yaml"), require_model=False)
    preflight.check_hf_cache(tiny, {"HF_HOME": "/proc/not-writable"})  # local model, generated data: no cache used


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_health_checks_and_the_trainer_bypass_a_proxy(monkeypatch, tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead_proxy = "http://127.0.0.1:9"  # discard port: nothing answers
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy"):
            monkeypatch.setenv(name, dead_proxy)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert launch.server_healthy("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
    env = plan_module.no_proxy_for(["gpu07", "gpu08"], {"NO_PROXY": "internal.example"})
    assert env["NO_PROXY"].split(",") == ["internal.example", "127.0.0.1", "localhost", "::1", "gpu07", "gpu08"]
    assert env["no_proxy"] == env["NO_PROXY"]


@pytest.fixture
def server_recipe(tmp_path, tiny_model):
    return write_recipe(
        tmp_path,
        "tiny/grpo-arith.yaml",
        drop=("reward_weights", "reward_options"),
        model_name_or_path=str(tiny_model),
        output_dir=str(tmp_path / "run"),
        reward_funcs=[REWARD],
        gpus_per_node=8,
        use_cpu=False,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_data_parallel_size=8,
        per_device_train_batch_size=8,
    )


def test_multi_node_sync_announces_node_0s_address(server_recipe, capsys):
    argv = [str(server_recipe), "--nodes", "2", "--gpus-per-node", "8", "--hosts", "127.0.0.1,gpu-b01", "--dry-run"]
    assert launch.main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["trainer"]["env"]["VLLM_HOST_IP"] == "127.0.0.1"  # what node 0's name resolves to
    assert "gpu-b01" in plan["trainer"]["env"]["NO_PROXY"] and "gpu-b01" in plan["vllm"]["env"]["NO_PROXY"]


def test_the_server_wait_follows_the_recipe(tmp_path, server_recipe):
    flags = argparse.Namespace(server_timeout=None)
    recipe = load(str(server_recipe), ["--num_nodes", "2"], require_model=False)
    assert command.server_timeout(flags, recipe) == command.DEFAULT_SERVER_TIMEOUT_S
    fourteen = load(str(REPO / "recipes/qwen2.5-14b-instruct/countdown-multinode-3x8.yaml"), require_model=False)
    assert command.server_timeout(flags, fourteen) == 1200.0
    flags.server_timeout = 60.0
    assert command.server_timeout(flags, fourteen) == 60.0
