"""Loaded at start-up by every Python process of the vLLM server `aha launch` starts (this folder leads its
PYTHONPATH, AHA_IGNORE_SIGTERM=1 in its environment), including the engine processes vLLM spawns.

Why: a preemption or time limit (Slurm) sends SIGTERM to every process of the job at once. A vLLM server that obeys
it dies while the trainer still needs it to finish the step under way (a rollout, a weight sync) and to save that
step's checkpoint. vLLM and uvicorn install their own SIGTERM handlers (uvloop even unblocks a blocked SIGTERM), so
the handler is made a no-op where it is set: `signal.signal(SIGTERM, ...)` installs SIG_IGN instead. The server stops
when the launcher says so: SIGINT (its normal shutdown), then SIGKILL.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys

if os.environ.get("AHA_IGNORE_SIGTERM") == "1":
    _install = signal.signal

    def _guarded(signum, handler):
        return _install(signum, signal.SIG_IGN if signum == signal.SIGTERM else handler)

    signal.signal = _guarded
    _install(signal.SIGTERM, signal.SIG_IGN)

# the environment's own sitecustomize, if there is one, still runs
_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
