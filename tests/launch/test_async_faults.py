"""Faults of the async path that must end a run with a clear error within a bound instead of hanging: a vLLM server
that stops answering in the middle of a weight push (a stalled transfer), and one that is gone."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from aha.async_grpo import ReloadWeightTransfer, WeightTransferStalled


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
