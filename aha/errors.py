"""The one error class for bad input: `aha <verb>` turns it into a message and exit status 2 (aha.cli.main).

Raise a subclass of `AhaUserError` for anything the user can fix (a recipe key, a flag, a path, a missing file): its
message names the key, file or value and says the fix. The command prints `aha <verb>: <message>` to stderr and exits
with `EXIT_USAGE`, before any heavy work where the check allows. Anything else is a bug or a failure of the machine,
and keeps its traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2  # what argparse and most Unix tools return for bad usage


class AhaUserError(Exception):
    """Bad input the user can fix; the message states the rule and the fix."""
