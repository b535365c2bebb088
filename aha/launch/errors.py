"""The launcher's refusal: a plan that cannot run on this hardware, naming the key or flag and the fix (exit 2)."""

from __future__ import annotations

from aha.errors import AhaUserError

EXIT_PREFLIGHT = 2
EXIT_FAILED = 1


class LaunchError(AhaUserError):
    """`key` names the recipe key or launcher flag; the message says the fix."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)
