"""Scoring completions: pure functions of completion texts and the recipe's rewards, testable without a model."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aha.recipe import Recipe


@dataclass
class Generated:
    """One completion as generated: decoded text (special tokens skipped, as TRL decodes), token ids up to and
    including the end-of-sequence token, and whether it hit the token budget before ending."""

    text: str
    token_ids: list[int]
    truncated: bool


@dataclass
class ScoredCompletion:
    text: str
    tokens: int
    truncated: bool
    correct: float | None  # 1.0 / 0.0 from the accuracy reward, None when the gold answer does not parse
    formatted: float | None
    answer: str | None  # the voting key for maj@k: the answer's value, or its text; None without an answer block
    reflections: int
    rewards: dict[str, float | None]
    reward: float | None  # the recipe's weighted sum, as training computes it (None when every reward is None)


@dataclass
class ScoredProblem:
    index: int
    prompt: Any
    gold: dict[str, Any]
    greedy: ScoredCompletion | None
    samples: list[ScoredCompletion]

    @property
    def scorable(self) -> bool:
        return any(c.correct is not None for c in self.completions)

    @property
    def completions(self) -> list[ScoredCompletion]:
        return ([self.greedy] if self.greedy else []) + self.samples


@dataclass
class Scorer:
    """How completions of one recipe are judged (see the module docstring)."""

    task: str  # dataset_task: gsm8k or countdown
    correctness: Callable[..., list[float | None]]
    format: Callable[..., list[float | None]]
    rewards: dict[str, Callable[..., list[float | None]]]
    weights: list[float]
    answer_tag: str
    signals: Any  # aha.aha_metrics.AhaSignals

    def score(
        self, row: dict[str, Any], completions: Sequence[Generated], conversational: bool
    ) -> list[ScoredCompletion]:
        """Score the completions of one problem (`row`: its prompt and gold columns) with every reward."""
        if not completions:
            return []
        count = len(completions)
        texts = [c.text for c in completions]
        shaped: list[Any] = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
        columns = {key: [value] * count for key, value in row.items() if key != "prompt"}
        kwargs = {"prompts": [row["prompt"]] * count, "completion_ids": [c.token_ids for c in completions], **columns}
        correct = self.correctness(shaped, **kwargs)
        formatted = self.format(shaped, **kwargs)
        by_reward = {name: func(shaped, **kwargs) for name, func in self.rewards.items()}
        scored = []
        for i, completion in enumerate(completions):
            rewards = {name: values[i] for name, values in by_reward.items()}
            present = [(w, r) for w, r in zip(self.weights, rewards.values(), strict=True) if r is not None]
            scored.append(
                ScoredCompletion(
                    text=completion.text,
                    tokens=len(completion.token_ids),
                    truncated=completion.truncated,
                    correct=correct[i],
                    formatted=formatted[i],
                    answer=answer_key(self.task, completion.text, row, self.answer_tag),
                    reflections=self.signals.count(completion.text),
                    rewards=rewards,
                    reward=sum(w * r for w, r in present) if present else None,
                )
            )
        return scored


def answer_key(task: str, text: str, row: dict[str, Any], answer_tag: str = "answer") -> str | None:
    """What maj@k votes on: the value of the answer (gsm8k: the number; countdown: the value of an expression that
    uses every number once), so "18" and "18.00" vote together; otherwise the answer's text. None without an answer
    block (the one after the thinking, as the rewards read it)."""
    import rewards

    block = rewards.final_answer(text, answer_tag)
    if block is None:
        return None
    stripped = " ".join(block.split())
    value = rewards.spec(_accuracy_reward(task)).answer_value(block, row)
    return f"={value}" if value is not None else f"text:{stripped}"


def _accuracy_reward(task: str) -> str:
    """The registered accuracy reward of a dataset task (the registry's role "accuracy" for that task)."""
    import rewards

    return rewards.names(role="accuracy", task=task)[0]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from c correct of n samples (k <= n)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n samples, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority(completions: Sequence[ScoredCompletion]) -> ScoredCompletion | None:
    """The first completion giving the most common answer (ties: the answer given first); None when none answers."""
    keys = [c.answer for c in completions if c.answer is not None]
    if not keys:
        return None
    counts = Counter(keys)
    best = max(counts.values())
    winner = next(k for k in keys if counts[k] == best)
    return next(c for c in completions if c.answer == winner)


def k_values(samples: int) -> list[int]:
    """The k of pass@k: powers of two below the number of samples, and the number of samples itself."""
    ks = [k for k in (2**i for i in range(samples.bit_length())) if k < samples]
    return [*ks, samples] if samples else []


def mean_of(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n))."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def full_credit(score: float | None) -> float:
    return 1.0 if score is not None and score >= 1.0 else 0.0


def summarize(problems: Sequence[ScoredProblem], samples: int) -> dict[str, float | int | None]:
    """Every metric of the module docstring from scored problems (each with `samples` sampled completions)."""
    scored = [p for p in problems if p.scorable]
    metrics: dict[str, float | int | None] = {
        "n": len(problems),
        "n_scored": len(scored),
        "n_unscorable": len(problems) - len(scored),
    }
    greedy = [p.greedy for p in scored if p.greedy is not None]
    if greedy:
        hits = [full_credit(c.correct) for c in greedy]
        metrics["greedy_pass@1"] = mean_of(hits)
        metrics["greedy_pass@1_stderr"] = _stderr(hits)
        metrics["format_greedy"] = mean_of([full_credit(c.formatted) for c in greedy])
        metrics["mean_tokens_greedy"] = mean_of([c.tokens for c in greedy])
    if samples and scored:
        if any(len(p.samples) != samples for p in scored):
            raise ValueError(f"every problem needs {samples} samples to summarize them")
        correct_counts = [sum(full_credit(c.correct) for c in p.samples) for p in scored]
        rates = [c / samples for c in correct_counts]
        metrics["pass@1"] = mean_of(rates)
        metrics["pass@1_stderr"] = _stderr(rates)
        for k in k_values(samples):
            if k > 1:
                metrics[f"pass@{k}"] = mean_of([pass_at_k(samples, int(c), k) for c in correct_counts])
        winners = [majority(p.samples) for p in scored]
        metrics[f"maj@{samples}"] = mean_of([full_credit(w.correct) if w else 0.0 for w in winners])
        every = [c for p in scored for c in p.samples]
        metrics["format_sampled"] = mean_of([full_credit(c.formatted) for c in every])
        metrics["mean_tokens_sampled"] = mean_of([c.tokens for c in every])
        metrics["truncated_sampled"] = mean_of([1.0 if c.truncated else 0.0 for c in every])
        metrics["reflection_rate"] = mean_of([1.0 if c.reflections else 0.0 for c in every])
        metrics["reflections_per_completion"] = mean_of([c.reflections for c in every])
        metrics["reward"] = mean_of([c.reward for c in every if c.reward is not None])
        for name in every[0].rewards:
            metrics[f"rewards/{name}"] = mean_of([c.rewards[name] for c in every if c.rewards[name] is not None])
    return metrics


def build_scorer(recipe: Recipe) -> Scorer:
    """The scorer of `recipe`: its rewards with their options, the task's accuracy reward at full credit 1.0, and
    its format reward: a `module:function` reward of the recipe whose function has `role = "format"` (formatted at
    full credit 1.0), else think_format (the strict copy when it has several, e.g. think_format@strict), else
    think_format with the recipe's tags and prefill."""
    import rewards
    from aha.aha_metrics import AhaSignals, configured_phrases

    task = recipe.dataset.dataset_task
    names = recipe.rewards.reward_funcs if recipe.rewards else []
    options = (recipe.rewards.reward_options or {}) if recipe.rewards else {}
    accuracy = _accuracy_reward(task)
    recipe_accuracy = next((n for n in names if rewards.base_name(n) == accuracy), accuracy)
    accuracy_options = {**options.get(recipe_accuracy, {}), **rewards.spec(accuracy).full_credit}
    answer_tag = accuracy_options.get("answer_tag", "answer")
    format_reward = rewards.names(role="format")[0]
    formats = [n for n in names if rewards.base_name(n) == format_reward]
    own_format = next((n for n in names if ":" in n and getattr(rewards.get(n), "role", None) == "format"), None)
    if own_format is not None:  # a `module:function` reward that says it judges the layout, full credit 1.0
        format_reward, format_options = own_format, dict(options.get(own_format, {}))
    elif formats:
        chosen = next((n for n in formats if options.get(n, {}).get("strict")), formats[0])
        format_options = dict(options.get(chosen, {}))
    else:  # the recipe's tags (e.g. tag_count's think_tag: reasoning), continuing its prefill
        think_tag = next((o["think_tag"] for o in options.values() if "think_tag" in o), "think")
        prefill = recipe.prompt.assistant_prefill or ""
        format_options = {"think_tag": think_tag, "answer_tag": answer_tag, "prefill": prefill}
    weights = getattr(recipe.training, "reward_weights", None) or [1.0] * len(names)
    return Scorer(
        task=task,
        correctness=rewards.get(accuracy, **accuracy_options),
        format=rewards.get(format_reward, **format_options),
        rewards={name: rewards.get(name, **options.get(name, {})) for name in names},
        weights=list(weights),
        answer_tag=answer_tag,
        signals=AhaSignals(phrases=configured_phrases(recipe)),
    )


def score_problems(
    scorer: Scorer, rows: Sequence[dict[str, Any]], greedy: Sequence[Generated | None], sampled: Sequence[list]
) -> list[ScoredProblem]:
    """Score each problem's greedy completion (None: not generated) and sampled completions."""
    problems = []
    for index, (row, first, samples) in enumerate(zip(rows, greedy, sampled, strict=True)):
        conversational = isinstance(row["prompt"], list)
        scored = scorer.score(row, ([first] if first else []) + list(samples), conversational)
        gold = {key: value for key, value in row.items() if key not in ("prompt", "solution")}
        problems.append(
            ScoredProblem(
                index=index,
                prompt=row["prompt"],
                gold=gold,
                greedy=scored[0] if first else None,
                samples=scored[1:] if first else scored,
            )
        )
    return problems
