"""The parts of `aha eval` (aha/evaluate.py): scoring, generation and the metrics' display, one job per module."""

from aha.errors import AhaUserError


class EvalError(AhaUserError, ValueError):
    """Bad input to `aha eval`; the message states the rule and the fix."""
