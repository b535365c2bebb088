"""Options of a parameterised reward: a frozen dataclass per reward, checked here against what a recipe passes."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

Options = TypeVar("Options")

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def describe(options_cls: type) -> str:
    """`name=default` for each option, `name (required)` for those without a default."""
    parts = []
    for field in dataclasses.fields(options_cls):
        if field.default is dataclasses.MISSING:
            parts.append(f"{field.name} (required)")
        else:
            parts.append(f"{field.name}={field.default!r}")
    return ", ".join(parts) if parts else "none"


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _coerce(reward_name: str, option: str, hint: Any, value: Any) -> Any:
    """`value` converted to the option's declared type (an integer is a valid number), or ValueError saying which."""
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return None
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if str in allowed and isinstance(value, str):
        return value
    wanted = " or ".join(_TYPE_WORDS.get(kind, kind.__name__) for kind in allowed)
    raise ValueError(
        f"reward {reward_name!r}: option {option} must be {wanted}, got {value!r} ({type(value).__name__})"
    )


def build(reward_name: str, options_cls: type[Options], options: Mapping[str, Any]) -> Options:
    """An `options_cls` from a recipe's options; unknown, missing, mistyped or out-of-range options raise ValueError."""
    fields = {field.name: field for field in dataclasses.fields(options_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"reward {reward_name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{describe(options_cls)}"
        )
    missing = [name for name, field in fields.items() if field.default is dataclasses.MISSING and name not in options]
    if missing:
        raise ValueError(
            f"reward {reward_name!r} needs option {', '.join(map(repr, missing))}; its options are: "
            f"{describe(options_cls)}"
        )
    hints = typing.get_type_hints(options_cls)
    values = {name: _coerce(reward_name, name, hints[name], value) for name, value in options.items()}
    try:
        return options_cls(**values)
    except ValueError as error:
        raise ValueError(f"reward {reward_name!r}: {error}") from None
