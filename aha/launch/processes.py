"""Running a plan: children in their own sessions, logs in the run folder, everything stopped on the way out.

Preemption (Slurm sends SIGTERM to every process of the job, on every node, at once): the ranks finish their step
and save a checkpoint (aha.callbacks). A step may be waiting on the vLLM server (generation, weight sync), so the
server must outlive them: its processes ignore SIGTERM (aha/launch/sigterm_guard; the launcher stops it by SIGINT),
and on a multi-node run the vLLM node serves on after a SIGTERM until node 0 writes `launch/trainer-exit.json` (its
trainer stopped, the checkpoint is written) or `--stop-timeout` plus a margin passes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aha.launch.errors import EXIT_FAILED
from aha.launch.plan import Plan
from aha.run_folder import PLAN_FILE, RunFolder, write_json_atomic

LOG_TAIL_LINES = 40
HEALTH_FAILURES = 3  # consecutive failed /health checks that mean the server is gone
DEAD_SERVER_GRACE_S = 20.0  # seconds the ranks get to stop after the server died
SERVER_STOP_S = 30.0  # seconds the vLLM server gets to shut down after SIGINT
EXIT_FILE_MARGIN_S = 60.0  # the vLLM node waits this long past the trainers' stop timeout for their exit file


def _become_subreaper() -> None:
    """Orphaned descendants (e.g. torchrun workers whose agent died) are re-parented to this process, so the final
    sweep finds and stops them. Linux only; elsewhere the sweep sees fewer processes."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _die_with_parent(signum: int) -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG: a killed launcher


def _trainer_preexec() -> None:
    """accelerate's agent (torchrun) answers a SIGTERM by killing its ranks 30 s later, whatever they are doing; a
    job-wide SIGTERM (Slurm) reaches it too. Blocked here, the agent ignores it; the ranks unblock it once their
    handler is in place (aha.callbacks.SaveOnSigterm), finish the step, save and exit, and the agent follows."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _die_with_parent(signal.SIGKILL)


def _server_preexec() -> None:
    """The vLLM server ignores SIGTERM (aha/launch/sigterm_guard, from the plan's environment): a killed launcher
    takes it down with SIGKILL instead."""
    _die_with_parent(signal.SIGKILL)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return f"(no log at {path})"
    text = path.read_bytes()[-200_000:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Child:
    """A started command: its own session (Ctrl-C reaches the launcher only), output to a log file and optionally to
    this terminal too. `server`: the vLLM server (SIGTERM blocked, stopped by SIGINT)."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log_path: Path, echo: bool, server: bool):
        self.name = name
        self.server = server
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in wait_closed)
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if echo else self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_server_preexec if server else _trainer_preexec,
        )
        (log_path.parent / f"{name}.pid").write_text(f"{self.process.pid}\n")
        self._pump: threading.Thread | None = None
        if echo:
            self._pump = threading.Thread(target=self._copy_output, daemon=True)
            self._pump.start()

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            try:
                self._log.write(chunk)
                self._log.flush()
            except ValueError:  # the log was closed: the child is gone, what is left belongs to orphans
                return
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()

    def poll(self) -> int | None:
        return self.process.poll()

    def _signal_first(self) -> list[Any]:
        """Send the stop signal; return the processes below (the ranks) when they got it instead of the top one."""
        import psutil

        if self.server:  # vLLM's own shutdown path; SIGTERM is blocked in it
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            return []
        below = []
        with contextlib.suppress(psutil.NoSuchProcess):
            # the ranks only (the agent's direct children), not their own helpers: async GRPO's rollout worker is a
            # process the rank spawned, and the rank's checkpoint (rollout_state.json) needs it alive until saved
            below = psutil.Process(self.process.pid).children(recursive=False)
        for proc in below:  # the ranks under accelerate's agent: they save at their step end whatever the agent does
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        if not below:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        return below

    def stop(self, grace_s: float) -> int | None:
        """Stop signal (the trainer's ranks: SIGTERM; the server: SIGINT), then SIGKILL what is left after `grace_s`."""
        if self.process.poll() is None:
            below = self._signal_first()
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.process.poll() is None:
                if below and not any(_alive(p) for p in below):
                    # ranks gone: accelerate's agent notices and exits by itself within seconds
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=15)
                    break
                time.sleep(0.2)
            if not self.server:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.wait_closed()
        return self.process.returncode

    def wait_closed(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)
        self._log.close()


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sweep_descendants(timeout_s: float = 10.0) -> None:
    """Stop every process still below the launcher (orphans come back to it as subreaper). SIGKILL for what does
    not stop on SIGTERM (the server's engines block it)."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


# the launcher's own calls to the server never go through a proxy (http_proxy in a site's environment would)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_healthy(host: str, port: int, timeout_s: float = 5.0) -> bool:
    try:
        with _DIRECT.open(f"http://{host}:{port}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


class Runner:
    def __init__(self, plan: Plan, server_timeout_s: float, stop_grace_s: float, health_interval_s: float):
        self.plan = plan
        self.log_dir = Path(plan.log_dir)
        self.folder = RunFolder(self.log_dir.parent)
        self.server_timeout_s = server_timeout_s
        self.stop_grace_s = stop_grace_s
        self.health_interval_s = health_interval_s
        self.signal: int | None = None
        self.children: list[Child] = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            what = "ranks save a checkpoint" if self.plan.role == "trainer" else "serving until the trainers saved"
            print(f"\naha launch: {signal.Signals(signum).name}: stopping ({what})", file=sys.stderr, flush=True)
        self.signal = signum

    def _check_signal(self) -> None:
        if self.signal is not None:
            raise Stop(self.signal)

    def say(self, message: str) -> None:
        print(f"aha launch: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        _become_subreaper()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / PLAN_FILE).write_text(self.plan.to_json() + "\n")
        stopped_by: int | None = None
        try:
            return self._run_vllm_node() if self.plan.role == "vllm" else self._run_trainer_node()
        except Stop as stop:
            stopped_by = stop.signum
            return 128 + stop.signum
        finally:
            for child in reversed(self.children):  # the trainer first: it may still be saving
                child.stop(self.stop_grace_s if child.name == "trainer" else SERVER_STOP_S)
            if self._writes_exit_file():
                self._write_trainer_exit(stopped_by)
            sweep_descendants()
            if stopped_by is not None:
                self.say(f"stopped by {signal.Signals(stopped_by).name}; {self._resume_hint()}")

    def _writes_exit_file(self) -> bool:
        return len(self.plan.nodes) > 1 and self.plan.role == "trainer" and self.plan.node_rank == 0

    def _write_trainer_exit(self, stopped_by: int | None) -> None:
        """Node 0 tells the vLLM node that its trainer is gone (checkpoint written, or failed): it may stop serving."""
        from aha.train import last_checkpoint

        trainer = next((c for c in self.children if c.name == "trainer"), None)
        write_json_atomic(
            self.folder.trainer_exit_file,
            {
                "exit_code": trainer.poll() if trainer else None,
                "stopped_by": signal.Signals(stopped_by).name if stopped_by else None,
                "checkpoint": last_checkpoint(str(self.folder.path)),
            },
        )

    def _resume_hint(self) -> str:
        if self.plan.role != "trainer":
            return "the vLLM server is down"
        from aha.train import last_checkpoint

        checkpoint = last_checkpoint(str(self.folder.path))
        if checkpoint is None:
            return "no checkpoint was saved (stopped before the first step ended)"
        return f"newest complete checkpoint: {checkpoint}; rerun the same command to resume from it"

    def _start_server(self) -> Child:
        vllm = self.plan.vllm
        assert vllm is not None
        log_path = self.log_dir / "vllm.log"
        self.say(f"starting the vLLM server on {vllm.node}:{vllm.port} (log: {log_path})")
        child = Child("vllm", vllm.command, vllm.env, log_path, echo=False, server=True)
        self.children.append(child)
        return child

    def _await_server(self, server: Child | None) -> None:
        vllm = self.plan.vllm
        assert vllm is not None
        start = time.monotonic()
        while not server_healthy(vllm.host, vllm.port):
            self._check_signal()
            if server is not None and server.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with code {server.poll()} before it was ready. Last lines of "
                    f"{server.log_path}:\n{tail(server.log_path)}"
                )
            if time.monotonic() - start > self.server_timeout_s:
                where = (
                    f"Last lines of {server.log_path}:\n{tail(server.log_path)}"
                    if server
                    else (f"It runs on {vllm.node}; see its log there ({self.log_dir / 'vllm.log'}).")
                )
                raise RuntimeError(
                    f"the vLLM server at http://{vllm.host}:{vllm.port} was not healthy after "
                    f"{self.server_timeout_s:.0f} s (vllm_server_timeout in the recipe, or --server-timeout). {where}"
                )
            time.sleep(1.0)
        self.say(f"vLLM server ready after {time.monotonic() - start:.1f} s")

    def _run_trainer_node(self) -> int:
        plan, vllm = self.plan, self.plan.vllm
        multi_node = len(plan.nodes) > 1
        server: Child | None = None
        try:
            if vllm is not None:
                if not multi_node:
                    server = self._start_server()
                self._await_server(server)
        except RuntimeError as err:
            self.say(str(err))
            return EXIT_FAILED
        log_name = f"trainer-node{plan.node_rank}" if multi_node else "trainer"
        log_path = self.log_dir / f"{log_name}.log"
        self.say(
            f"starting {plan.trainer.num_processes} training rank(s) on {plan.trainer.num_machines} machine(s) "
            f"(log: {log_path})"
        )
        trainer = Child("trainer", plan.trainer.command, plan.trainer.env, log_path, echo=True, server=False)
        self.children.append(trainer)
        return self._supervise(trainer, server)

    def _supervise(self, trainer: Child, server: Child | None) -> int:
        """Wait for the trainer. A server that exits (local) or fails HEALTH_FAILURES checks in a row (local or
        remote: hung or gone) ends the run: the trainer would otherwise retry its requests, then fail late."""
        vllm = self.plan.vllm
        failures, next_check = 0, time.monotonic() + self.health_interval_s
        while (code := trainer.poll()) is None:
            self._check_signal()
            dead = None
            if server is not None and server.poll() is not None:
                dead = f"the vLLM server exited with code {server.poll()} during training"
            elif vllm is not None and time.monotonic() >= next_check:
                failures = 0 if server_healthy(vllm.host, vllm.port) else failures + 1
                next_check = time.monotonic() + self.health_interval_s
                if failures >= HEALTH_FAILURES:
                    dead = (
                        f"the vLLM server at http://{vllm.host}:{vllm.port} failed {HEALTH_FAILURES} health checks "
                        f"{self.health_interval_s:.0f} s apart"
                    )
            if dead:
                log = f"\nLast lines of {server.log_path}:\n{tail(server.log_path)}" if server else ""
                self.say(f"{dead}; stopping the trainer (no retrying: the run cannot generate without it).{log}")
                # a step blocked on generation cannot finish: a short grace, then SIGKILL
                trainer.stop(min(self.stop_grace_s, DEAD_SERVER_GRACE_S))
                return EXIT_FAILED
            time.sleep(0.5)
        trainer.wait_closed()
        if code:
            self.say(f"the trainer exited with code {code}; log: {trainer.log_path}")
        else:
            self.say(f"done; logs in {self.log_dir}")
        return code

    def _run_vllm_node(self) -> int:
        exit_file = self.folder.trainer_exit_file
        exit_file.unlink(missing_ok=True)  # left over from an earlier run of the same output_dir
        server = self._start_server()
        try:
            self._await_server(server)
        except RuntimeError as err:
            self.say(str(err))
            return EXIT_FAILED
        self.say(f"serving until the trainer writes {exit_file} (shared output_dir)")
        deadline: float | None = None
        while not exit_file.is_file():
            if self.signal is not None and deadline is None:
                # preemption: the trainers are finishing their step and saving, which may need the server
                deadline = time.monotonic() + self.stop_grace_s + EXIT_FILE_MARGIN_S
                self.say(f"serving on until {exit_file.name} appears (at most {deadline - time.monotonic():.0f} s)")
            if deadline is not None and time.monotonic() > deadline:
                self.say(f"no {exit_file.name} after the grace period; stopping the server")
                raise Stop(self.signal or signal.SIGTERM)
            if server.poll() is not None:
                self.say(f"the vLLM server exited with code {server.poll()}. Last lines:\n{tail(server.log_path)}")
                return EXIT_FAILED
            time.sleep(1.0)
        if self.signal is not None:
            raise Stop(self.signal)
        return 0
