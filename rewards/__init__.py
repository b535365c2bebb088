"""Reward functions for GRPO recipes, registered by name.

    import rewards
    rewards.available()                                   # the registered names
    rewards.get("gsm8k_accuracy")                         # the plain function with default options
    rewards.get("soft_overlong", max_length=256, buffer=64)   # required options: it has no plain form
    rewards.get("think_format", strict=True, prefill="<think>\\n")
    rewards.get("my_pkg.my_rewards:brevity")              # a user's function, by dotted path
    rewards.get("think_format@soft", strict=False)        # a second copy with other options, logged by full name
    rewards.validate("think_format", {"strict": True})    # checks name and options, runs nothing

Every reward is `f(completions, **kwargs) -> list[float | None]`: completions are strings or conversations
(`[{"role": "assistant", "content": ...}]`), dataset columns arrive as keyword arguments (`answer`; `nums`, `target`),
unknown keyword arguments are ignored, and None means "cannot be scored" (e.g. the gold answer does not parse).
The callable's `__name__` is its registered name, which TRL logs as `rewards/<name>/mean`. Everything `get` returns
pickles and is safe to call from a worker thread.

This package imports nothing from `aha` and loads math-verify only when an answer needs it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rewards import _options, accuracy, countdown, format, length

__all__ = ["Reward", "available", "get", "validate"]

RewardFunction = Callable[..., list[float | None]]


@dataclass(frozen=True)
class _Entry:
    score: Callable[..., list[float | None]]  # score(completions, columns, options, name)
    options: type
    plain: RewardFunction | None  # the function with default options; None when an option is required


_REGISTRY: dict[str, _Entry] = {
    "think_format": _Entry(format.score_think_format, format.ThinkFormatOptions, format.think_format),
    "tag_count": _Entry(format.score_tag_count, format.TagCountOptions, format.tag_count),
    "reasoning_steps": _Entry(format.score_reasoning_steps, format.ReasoningStepsOptions, format.reasoning_steps),
    "gsm8k_accuracy": _Entry(accuracy.score_gsm8k_accuracy, accuracy.Gsm8kAccuracyOptions, accuracy.gsm8k_accuracy),
    "integer_answer": _Entry(accuracy.score_integer_answer, accuracy.IntegerAnswerOptions, accuracy.integer_answer),
    "countdown_equation": _Entry(
        countdown.score_countdown_equation, countdown.CountdownOptions, countdown.countdown_equation
    ),
    "soft_overlong": _Entry(length.score_soft_overlong, length.SoftOverlongOptions, None),
}

_LABEL = re.compile(r"[A-Za-z0-9_]+")
_DOTTED_PATH = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


class Reward:
    """A reward bound to its options. Picklable (a module-level function plus a frozen options value or a dict);
    `__name__` is the registered name (or the user function's name), the name TRL logs."""

    def __init__(self, name: str, function: Callable[..., Any], options: Any, registered: bool) -> None:
        self.__name__ = name
        self.__qualname__ = name
        self.function = function
        self.options = options
        self.registered = registered

    def __call__(self, completions: Any, **kwargs: Any) -> list[float | None]:
        if self.registered:
            return self.function(completions, kwargs, self.options, self.__name__)
        return self.function(completions, **{**kwargs, **self.options})  # recipe options win over same-named columns

    def __repr__(self) -> str:
        return f"<reward {self.__name__} {self.options!r}>"


def available() -> list[str]:
    """The registered reward names, sorted."""
    return sorted(_REGISTRY)


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
            return Reward(name, entry.score, _options.build(base, entry.options, options), registered=True)
        if not _DOTTED_PATH.fullmatch(base):
            raise _unknown_name(base)
        function = _load_function(base)
        _check_user_options(base, function, options)
        return Reward(name, function, dict(options), registered=False)
    entry = _REGISTRY.get(name)
    if entry is not None:
        if not options and entry.plain is not None:
            return entry.plain
        return Reward(name, entry.score, _options.build(name, entry.options, options), registered=True)
    if not _DOTTED_PATH.fullmatch(name):
        raise _unknown_name(name)
    function = _load_function(name)
    if not options:
        return function
    _check_user_options(name, function, options)
    return Reward(getattr(function, "__name__", name.rpartition(":")[2]), function, dict(options), registered=False)


def validate(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError when `name` is not a reward or `options` are not its options; score nothing.

    A dotted path is imported (to find the function); registered rewards load nothing heavy.
    """
    options = dict(options or {})
    if not all(isinstance(key, str) for key in options):
        raise ValueError(f"reward {name!r}: option names must be strings, got {sorted(map(repr, options))}")
    get(name, **options)
