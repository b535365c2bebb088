"""The one registration point of a reward: `@register` records its name, options, role and dataset columns.

    @register("integer_answer", options=IntegerAnswerOptions, role="shaping")
    def integer_answer(text: str, options: IntegerAnswerOptions) -> float | None:
        '''The score of one completion's text (examples in the docstring, as TRL's rewards have them).'''

The decorated function scores one completion: its text, then one value per declared dataset column, then the
options. `register` replaces it in its module by the batched reward TRL calls, `integer_answer(completions,
**columns)`, with the default options (a module-level function: it pickles by reference, and its `__name__` is the
registered name TRL logs). Every completion goes through `_text.guarded`: a completion that makes a scorer raise is
scored None and counted, never raised.

Roles, which is what `aha` asks the registry about instead of naming rewards:
    accuracy  the answer is right (one per dataset task; `full_credit` options make it score exactly 1.0 or 0.0, and
              `answer_value` says what an answer block stands for, for majority votes);
    format    the completion has the layout (a think block, then an answer block): 1.0 or 0.0;
    shaping   partial credit or a penalty that shapes learning (per tag, per step, an integer, the length).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from rewards._options import build, describe
from rewards._text import column, guarded, texts_of

ROLES = ("accuracy", "format", "shaping")
RewardFunction = Callable[..., list[float | None]]
AnswerValue = Callable[[str, Mapping[str, Any]], Fraction | None]


@dataclass(frozen=True, eq=False)
class RewardSpec:
    """What `@register` recorded about one reward."""

    name: str
    role: str  # one of ROLES
    options: type  # a frozen dataclass of the reward's options, validated in its __post_init__
    score_one: Callable[..., float | None]  # score_one(text, *column values, options)
    columns: Mapping[str, str] = field(default_factory=dict)  # dataset column -> what it holds (for error messages)
    missing_columns: Literal["error", "none"] = "error"  # without the columns: raise, or score every completion None
    task: str | None = None  # accuracy rewards: the dataset_task they judge
    full_credit: Mapping[str, Any] = field(default_factory=dict)  # accuracy: options giving exactly 1.0 or 0.0
    answer_value: AnswerValue | None = None  # accuracy: (answer block, dataset row) -> the value it stands for
    plain: RewardFunction | None = None  # the batched function with default options; None when an option is required

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"reward {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if (self.role == "accuracy") != (self.task is not None):
            raise ValueError(f"reward {self.name!r}: an accuracy reward names its task, and only an accuracy reward")
        if self.role == "accuracy" and self.answer_value is None:
            raise ValueError(f"reward {self.name!r}: an accuracy reward says what an answer stands for (answer_value)")
        if self.missing_columns not in ("error", "none"):
            raise ValueError(f"reward {self.name!r}: missing_columns is 'error' or 'none'")

    @property
    def summary(self) -> str:
        """The first paragraph of the reward's docstring."""
        return " ".join((self.score_one.__doc__ or "").strip().split("\n\n")[0].split())

    def score(self, completions: Any, columns: Mapping[str, Any], options: Any, name: str) -> list[float | None]:
        """One score per completion, as TRL calls a reward: `columns` are the dataset columns and TRL's extras."""
        texts = texts_of(completions, name)
        rows: list[Any] = [texts]
        for key, meaning in self.columns.items():
            if self.missing_columns == "none" and columns.get(key) is None:
                return [None] * len(texts)
            rows.append(column(columns, key, len(texts), name, meaning))
        return guarded(name, _bound(self.score_one, options, len(rows)), *rows)


def _bound(score_one: Callable[..., float | None], options: Any, arity: int) -> Callable[..., float | None]:
    """`score_one` with `options` bound last. A closure of fixed arity for the common shapes: this runs once per
    completion, and a partial with a keyword (or *args) costs 5-10% of a format reward's time."""
    if arity == 1:
        return lambda text: score_one(text, options)
    if arity == 2:
        return lambda text, value: score_one(text, value, options)
    return lambda *row: score_one(*row, options)


_REGISTRY: dict[str, RewardSpec] = {}


def _has_required_option(options: type) -> bool:
    return any(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(options)
    )


def register(
    name: str,
    *,
    options: type,
    role: str,
    columns: Mapping[str, str] | None = None,
    missing_columns: Literal["error", "none"] = "error",
    task: str | None = None,
    full_credit: Mapping[str, Any] | None = None,
    answer_value: AnswerValue | None = None,
) -> Callable[[Callable[..., float | None]], RewardFunction]:
    """Record the reward `name` (see the module docstring); the decorated function becomes the batched reward."""

    def decorate(score_one: Callable[..., float | None]) -> RewardFunction:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice ({score_one.__module__})")
        if full_credit:
            build(name, options, full_credit)  # the full-credit options must be valid options
        defaults = None if _has_required_option(options) else options()

        def plain(completions: Any, **columns: Any) -> list[float | None]:
            if defaults is None:
                raise ValueError(f"reward {name!r} needs options ({describe(options)}): use rewards.get({name!r}, ...)")
            return spec.score(completions, columns, defaults, name)

        plain.__name__ = plain.__qualname__ = name
        plain.__module__ = score_one.__module__
        plain.__doc__ = score_one.__doc__
        spec = RewardSpec(
            name=name,
            role=role,
            options=options,
            score_one=score_one,
            columns=types.MappingProxyType(dict(columns or {})),
            missing_columns=missing_columns,
            task=task,
            full_credit=types.MappingProxyType(dict(full_credit or {})),
            answer_value=answer_value,
            plain=None if defaults is None else plain,
        )
        _REGISTRY[name] = spec
        return plain

    return decorate


class Reward:
    """A reward bound to its options. Picklable (a registered name plus a frozen options value, or a user's
    module-level function plus a dict); `__name__` is the name TRL logs (`think_format@strict` for a labelled copy)."""

    def __init__(self, name: str, options: Any, base: str | None = None, function: Callable[..., Any] | None = None):
        self.__name__ = name
        self.__qualname__ = name
        self.options = options
        self.base = base  # the registered name, or None for a user's function
        self.function = function

    def __call__(self, completions: Any, **kwargs: Any) -> list[float | None]:
        if self.base is not None:
            return _REGISTRY[self.base].score(completions, kwargs, self.options, self.__name__)
        assert self.function is not None
        return self.function(completions, **{**kwargs, **self.options})  # recipe options win over same-named columns

    def __repr__(self) -> str:
        return f"<reward {self.__name__} {self.options!r}>"
