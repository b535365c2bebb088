"""The aha signals: numbers that show a reasoning model's "aha moment" as curves during GRPO training.

DeepSeek-R1-Zero's moment was visible in two ways: completions grew longer, and the model started to stop and
re-check its own work ("Wait, wait. Wait. That's an aha moment I can flag here."). Every GRPO run of aha logs both,
each logging step, next to TRL's own metrics (TensorBoard tags `train/aha/...`):

    aha/completion_length           mean completion length in tokens
    aha/reflection_rate             share of completions holding at least one reflection phrase (0 to 1)
    aha/reflections_per_completion  mean number of reflection phrases per completion
    aha/phrase/<phrase>             share of completions holding that phrase (spaces and '-' written as '_')

A reflection phrase matches case-insensitively as whole words ("Wait," counts, "awaited" does not), with any
whitespace between its words. Where phrases overlap the longest wins, so "wait a minute" in the text counts once
even when both "wait" and "wait a minute" are listed.

How it hooks into training: TRL 1.16's GRPOTrainer calls every reward function once per generation batch with the
completions, their token ids, and a `log_metric(name, value)` callable whose values it averages per logging step
(over processes too) and logs with its own metrics. `aha_metrics_hooks(recipe).attach(reward_funcs)` wraps the first
reward function so that each call also measures the completions: its name, scores and weight are unchanged, so no
reward is added and nothing about the optimisation changes. The per-completion count also goes to TRL's completions
table (`log_extra`, column `reflections`, in `<output_dir>/completions/*.parquet` when `log_completions` is on), and a
few completions per tenth of the run go to `<output_dir>/aha-samples.jsonl` (main process only) for `aha report`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.run_folder import AHA_SAMPLES_FILE, RunFolder

logger = logging.getLogger("aha.aha_metrics")

# Phrases of self-verification seen in R1-style reasoning traces; recipes replace the list with `reflection_phrases`.
DEFAULT_REFLECTION_PHRASES: tuple[str, ...] = (
    "wait",
    "hmm",
    "however",
    "let me check",
    "let me verify",
    "double-check",
    "re-check",
    "recheck",
    "re-evaluate",
    "reevaluate",
    "reconsider",
    "on second thought",
    "i made a mistake",
)
SAMPLES_FILE = AHA_SAMPLES_FILE  # appended to as training goes (a log: a cut-off last line is skipped by its reader)
METRIC_PREFIX = "aha/"
# Completions written to SAMPLES_FILE at each sampling point, and sampling points per run (about one per tenth).
SAMPLES_PER_POINT = 2
SAMPLE_POINTS = 10
# Characters of a completion kept in SAMPLES_FILE.
MAX_SAMPLE_CHARS = 2000

RewardFunction = Callable[..., list[float | None]]


def phrase_slug(phrase: str) -> str:
    """The metric-name form of a phrase: lower case, spaces and "-" as "_" ("let me check" -> let_me_check)."""
    return re.sub(r"[\s\-]+", "_", phrase.strip().lower())


def _check_phrases(phrases: Iterable[str]) -> tuple[str, ...]:
    checked: list[str] = []
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(
                f"reflection_phrases: every phrase must be a non-empty string, got {phrase!r}; e.g. "
                "reflection_phrases: [wait, let me check, however]"
            )
        normalised = " ".join(phrase.lower().split())
        if normalised not in checked:
            checked.append(normalised)
    slugs = [phrase_slug(p) for p in checked]
    clashing = sorted({s for s in slugs if slugs.count(s) > 1})
    if clashing:
        raise ValueError(
            f"reflection_phrases: phrases that differ only in spaces or '-' share the metric name {clashing}; "
            "keep one of each"
        )
    return tuple(checked)


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """One regex for all phrases, longest first, one named group per phrase (`p0`, `p1`, ... in `phrases` order)."""
    if not phrases:
        return re.compile(r"(?!)")  # matches nothing
    order = sorted(range(len(phrases)), key=lambda i: -len(phrases[i]))
    words = [r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases]
    alternatives = [f"(?P<p{i}>{words[i]})" for i in order]
    # whole words: no letter, digit or '_' right before or after the phrase
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class AhaSignals:
    """Measures the aha signals of a batch of completions; pickles (spawned workers, TRL's reward wrappers)."""

    phrases: tuple[str, ...] = DEFAULT_REFLECTION_PHRASES
    samples_path: Path | None = None  # where sampled completions go (SAMPLES_FILE); None: nowhere
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phrases = _check_phrases(self.phrases)
        object.__setattr__(self, "phrases", phrases)
        object.__setattr__(self, "pattern", phrase_pattern(phrases))

    def phrase_counts(self, text: str) -> dict[str, int]:
        """How often each phrase occurs in `text` (phrases that do not occur are left out)."""
        counts: dict[str, int] = {}
        for match in self.pattern.finditer(text):
            assert match.lastgroup is not None  # every alternative is a named group
            phrase = self.phrases[int(match.lastgroup[1:])]
            counts[phrase] = counts.get(phrase, 0) + 1
        return counts

    def count(self, text: str) -> int:
        """Reflection phrases in `text`."""
        return sum(1 for _ in self.pattern.finditer(text))

    def measure(self, texts: Sequence[str], lengths: Sequence[int] | None = None) -> dict[str, float]:
        """The aha metrics of one batch: `texts` are the completions, `lengths` their lengths in tokens (None when
        unknown: no length metric). Empty batches give {}."""
        if not texts:
            return {}
        per_text = [self.phrase_counts(text) for text in texts]
        totals = [sum(counts.values()) for counts in per_text]
        metrics = {
            f"{METRIC_PREFIX}reflection_rate": sum(1 for t in totals if t > 0) / len(texts),
            f"{METRIC_PREFIX}reflections_per_completion": sum(totals) / len(texts),
        }
        if lengths is not None and len(lengths) == len(texts):
            metrics[f"{METRIC_PREFIX}completion_length"] = sum(lengths) / len(lengths)
        for phrase in self.phrases:
            share = sum(1 for counts in per_text if phrase in counts) / len(texts)
            metrics[f"{METRIC_PREFIX}phrase/{phrase_slug(phrase)}"] = share
        return metrics

    # -- the training hook ---------------------------------------------------------------------------------------

    def observe(self, completions: Sequence[Any], scores: Sequence[float | None], reward_name: str, **kwargs: Any):
        """Log the signals of one generation batch through TRL's `log_metric` / `log_extra` kwargs, and keep a few
        completions now and then. Never raises: a metrics problem must not stop a training run."""
        try:
            self._observe(completions, scores, reward_name, kwargs)
        except Exception as error:  # see the docstring
            logger.warning("aha signals not logged for this batch (%s: %s)", type(error).__name__, error)

    def _observe(self, completions: Sequence[Any], scores: Sequence[float | None], reward_name: str, kwargs) -> None:
        from rewards import completion_text

        texts = [completion_text(c) for c in completions]
        ids = kwargs.get("completion_ids")
        lengths = [len(row) for row in ids] if ids is not None and len(ids) == len(texts) else None
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for name, value in self.measure(texts, lengths).items():
                log_metric(name, value)
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("reflections", [self.count(text) for text in texts])
        state = kwargs.get("trainer_state")
        if self.samples_path is not None and state is not None and _is_main_process():
            self._keep_samples(state, texts, lengths, scores, reward_name, kwargs.get("prompts"))

    def _keep_samples(self, state, texts, lengths, scores, reward_name: str, prompts) -> None:
        step = int(getattr(state, "global_step", 0))
        max_steps = int(getattr(state, "max_steps", 0) or 0)
        every = max(1, max_steps // SAMPLE_POINTS)
        path = Path(self.samples_path)  # type: ignore[arg-type]
        written = _steps_written(path)
        # the first batch of each tenth of the run (generation may skip steps: steps_per_generation), and the last step
        is_last = max_steps > 0 and step >= max_steps - 1
        if step in written or (any(s // every == step // every for s in written) and not is_last):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for i in range(min(SAMPLES_PER_POINT, len(texts))):
                row = {
                    "step": step,
                    "prompt": _prompt_text(prompts[i]) if prompts is not None and i < len(prompts) else None,
                    "completion": texts[i][:MAX_SAMPLE_CHARS],
                    "tokens": lengths[i] if lengths else None,
                    "reflections": self.count(texts[i]),
                    "rewards": {reward_name: scores[i] if i < len(scores) else None},
                }
                f.write(json.dumps(row) + "\n")
        written.add(step)


_WRITTEN: dict[Path, set[int]] = {}


def _steps_written(path: Path) -> set[int]:
    """Steps already in the samples file (read once per process, so a resumed run does not repeat them)."""
    if path not in _WRITTEN:
        steps: set[int] = set()
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    steps.add(int(json.loads(line)["step"]))
                except (ValueError, KeyError, TypeError):
                    continue
        _WRITTEN[path] = steps
    return _WRITTEN[path]


def _is_main_process() -> bool:
    from aha.topology import process_rank

    return process_rank() == 0


def _prompt_text(prompt: Any) -> str:
    """The last user message of a conversation, or a string prompt as is."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else str(prompt)


class RewardWithAhaSignals:
    """A reward function that also logs the aha signals of the completions it scores. Same `__name__` (the metric
    TRL logs for it), same arguments, same scores."""

    def __init__(self, reward: RewardFunction, signals: AhaSignals) -> None:
        self.reward = reward
        self.signals = signals
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)
        self.__qualname__ = self.__name__

    def __call__(self, completions: Any, **kwargs: Any) -> list[float | None]:
        scores = self.reward(completions, **kwargs)
        self.signals.observe(completions, scores, self.__name__, **kwargs)
        return scores

    def __repr__(self) -> str:
        return f"<{self.__name__} + aha signals>"


@dataclass(frozen=True)
class AhaHooks:
    """What `aha.train` adds to a GRPO run to log the aha signals."""

    signals: AhaSignals

    def attach(self, reward_funcs: list[Any]) -> list[Any]:
        """`reward_funcs` with the first plain (synchronous, callable, not a model) one wrapped to log the signals
        once per generation batch. Unchanged, with a warning, when there is none to wrap."""
        for i, func in enumerate(reward_funcs):
            if isinstance(func, RewardWithAhaSignals):
                return list(reward_funcs)  # already attached
            if callable(func) and not _is_module(func) and not _is_async(func):
                wrapped = list(reward_funcs)
                wrapped[i] = RewardWithAhaSignals(func, self.signals)
                return wrapped
        logger.warning("aha signals: no plain reward function to attach to; the aha/* metrics will be missing")
        return list(reward_funcs)


def _is_module(func: Any) -> bool:
    """A reward model (TRL runs it as a model, not as a function); only possible once torch is imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(func, torch.nn.Module)


def _is_async(func: Any) -> bool:
    """Calling `func` gives a coroutine: an async function, a partial of one, or an object with an async __call__."""
    while isinstance(func, functools.partial):
        func = func.func
    call = type(func).__call__ if not inspect.isfunction(func) else None  # a callable object: its method
    return inspect.iscoroutinefunction(func) or (call is not None and inspect.iscoroutinefunction(call))


def configured_phrases(recipe: Any) -> tuple[str, ...]:
    """The reflection phrases of `recipe` (an `aha.recipe.Recipe`): its `reflection_phrases`, or the defaults when
    it sets none (null) or has no reward section (an sft recipe)."""
    # getattr: the key lives in the rewards section, which sft recipes do not have
    phrases = getattr(recipe.rewards, "reflection_phrases", None) if recipe.rewards is not None else None
    return DEFAULT_REFLECTION_PHRASES if phrases is None else tuple(phrases)


def aha_metrics_hooks(recipe: Any) -> AhaHooks:
    """The aha-signal hooks of a GRPO `recipe` (an `aha.recipe.Recipe`): its reflection phrases, samples into its
    output_dir. Use: `reward_funcs = aha_metrics_hooks(recipe).attach(reward_funcs)`."""
    signals = AhaSignals(
        phrases=configured_phrases(recipe), samples_path=RunFolder(Path(recipe.training.output_dir)).aha_samples_file
    )
    return AhaHooks(signals)
