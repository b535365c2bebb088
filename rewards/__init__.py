"""Reward functions for GRPO recipes, registered by name.

    import rewards
    rewards.available()                                   # the registered names
    rewards.get("gsm8k_accuracy")                         # the plain function with default options
    rewards.get("soft_overlong", max_length=256, buffer=64)   # required options: it has no plain form
    rewards.get("think_format", strict=True, prefill="<think>\\n")
    rewards.get("my_pkg.my_rewards:brevity")              # a user's function, by dotted path
    rewards.get("think_format@soft", strict=False)        # a second copy with other options, logged by full name
    rewards.validate("think_format", {"strict": True})    # checks name and options, runs nothing
    rewards.names(role="accuracy", task="gsm8k")          # ask by role: ['gsm8k_accuracy']
    rewards.spec("think_format@strict").options           # what @register recorded (label dropped)

Every reward is `f(completions, **kwargs) -> list[float | None]`: completions are strings or conversations
(`[{"role": "assistant", "content": ...}]`), dataset columns arrive as keyword arguments (`answer`; `nums`, `target`),
unknown keyword arguments are ignored, and None means "cannot be scored" (e.g. the gold answer does not parse).
The callable's `__name__` is its registered name, which TRL logs as `rewards/<name>/mean`. Everything `get` returns
pickles and is safe to call from a worker thread. Each reward is written once, with `@register` (rewards._registry)
beside its scoring function; README.md in this folder lists them, with the spellings an answer may take.

This package imports nothing from `aha` and loads math-verify only when an answer needs it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

# The reward modules register their rewards on import (each with @register).
from rewards import accuracy, countdown, formatting, length  # noqa: F401
from rewards._options import build
from rewards._registry import _REGISTRY, ROLES, Reward, RewardFunction, RewardSpec
from rewards._text import completion_text, final_answer
from rewards.written_numbers import parse_number

__all__ = [
    "ROLES",
    "Reward",
    "RewardSpec",
    "available",
    "base_name",
    "completion_text",
    "final_answer",
    "get",
    "names",
    "parse_number",
    "spec",
    "validate",
]

_LABEL = re.compile(r"[A-Za-z0-9_]+")
_DOTTED_PATH = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


def available() -> list[str]:
    """The registered reward names, sorted."""
    return sorted(_REGISTRY)


def names(role: str | None = None, task: str | None = None) -> list[str]:
    """The registered names with `role` (accuracy, format, shaping) and `task` (an accuracy reward's dataset_task),
    sorted: `names(role="accuracy", task="countdown")` is ['countdown_equation']."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown reward role {role!r}; roles are {', '.join(ROLES)}")
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if (role is None or entry.role == role) and (task is None or entry.task == task)
    )


def base_name(name: str) -> str:
    """A reward name without its label: think_format@strict -> think_format."""
    return name.partition("@")[0]


def spec(name: str) -> RewardSpec:
    """What @register recorded about the registered reward `name` (a label after '@' is dropped)."""
    entry = _REGISTRY.get(base_name(name))
    if entry is None:
        raise _unknown_name(base_name(name))
    return entry


def _unknown_name(name: str) -> ValueError:
    return ValueError(
        f"unknown reward {name!r}; registered rewards: {', '.join(available())}. A function of your own is named "
        "by its dotted path 'package.module:function'."
    )


def _load_function(path: str) -> Callable[..., Any]:
    module_name, _, function_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"reward {path!r}: cannot import module {module_name!r} ({type(error).__name__}: {error}); make it "
            "importable (installed, or on PYTHONPATH) or fix the path"
        ) from None
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        names = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_"))
        raise ValueError(f"reward {path!r}: module {module_name!r} has no function {function_name!r}; it has {names}")
    return function


def _check_user_options(path: str, function: Callable[..., Any], options: Mapping[str, Any]) -> None:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check against
        return
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    accepted = [
        name
        for name, parameter in parameters.items()
        if parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"reward {path!r} has no option {', '.join(map(repr, unknown))}; its keyword parameters are {accepted}"
        )


def get(name: str, **options: Any) -> RewardFunction:
    """The reward `name` (registered, or `package.module:function`) with `options` bound.

    Without options a registered name gives its plain module-level function. An unknown name, an unknown option or a
    bad option value raises ValueError saying what is valid.
    """
    if not isinstance(name, str):
        raise ValueError(f"a reward name must be a string, got {name!r} ({type(name).__name__})")
    base, _, label = name.partition("@")
    if label:  # "think_format@soft": the same reward again with other options, logged under the full name
        if not _LABEL.fullmatch(label):
            raise ValueError(f"reward {name!r}: a label after '@' is letters, digits and '_', e.g. think_format@soft")
        entry = _REGISTRY.get(base)
        if entry is not None:
            return Reward(name, build(base, entry.options, options), base=base)
        if not _DOTTED_PATH.fullmatch(base):
            raise _unknown_name(base)
        function = _load_function(base)
        _check_user_options(base, function, options)
        return Reward(name, dict(options), function=function)
    entry = _REGISTRY.get(name)
    if entry is not None:
        if not options and entry.plain is not None:
            return entry.plain
        return Reward(name, build(name, entry.options, options), base=name)
    if not _DOTTED_PATH.fullmatch(name):
        raise _unknown_name(name)
    function = _load_function(name)
    if not options:
        return function
    _check_user_options(name, function, options)
    return Reward(getattr(function, "__name__", name.rpartition(":")[2]), dict(options), function=function)


def validate(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError when `name` is not a reward or `options` are not its options; score nothing.

    A dotted path is imported (to find the function); registered rewards load nothing heavy.
    """
    options = dict(options or {})
    if not all(isinstance(key, str) for key in options):
        raise ValueError(f"reward {name!r}: option names must be strings, got {sorted(map(repr, options))}")
    get(name, **options)
