"""Reward throughput on one core, and gsm8k_accuracy against math-verify alone.

    .venv/bin/python scripts/bench/rewards.py            # what `make bench` runs; writes bench/rewards.json
    .venv/bin/python scripts/bench/rewards.py --check    # exit 1 when a target is missed

Inputs: 10,000 GSM8K-shaped completions (`<think>` with the dataset's worked solution, `<answer>` with a number),
half stating the gold answer and half gold+1, each written in one of four forms (plain, thousands separator, "$",
".00"). Gold answers come from the repository's data/gsm8k/test.jsonl, else from a seeded generator. Countdown
and length rewards get inputs of their own shape.

math-verify alone means `verify(parse(gold), parse(x))` per completion, for x the answer block (the same job the
reward does; all 10,000) and x the whole completion (math-verify without knowing the tags; every 5th completion, to
keep the run near a minute). Verdicts are compared with gsm8k_accuracy's on the gold and the gold+1 set; by
construction every gold completion is right and every gold+1 one wrong. Targets (issue 3): gsm8k_accuracy >= 20,000
completions/s and >= 10x math-verify on the answer block, with identical verdicts on both sets. The process pins
itself to one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: `rewards` is a top-level package of the repo

import rewards  # noqa: E402
from rewards import _text, accuracy, fallback  # noqa: E402

GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"
COMPLETIONS = 10_000
REPEATS = 3
WHOLE_COMPLETION_STRIDE = 5  # math-verify on whole completions: every 5th (covers both sets and all four forms)
TARGET_PER_SECOND = 20_000
TARGET_SPEEDUP = 10.0
FORMS: dict[str, Callable[[int], str]] = {
    "plain": str,
    "thousands": lambda value: f"{value:,}",
    "dollar": lambda value: f"${value}",  # "$-10": math-verify reads "-$10" as no answer at all
    "decimal": lambda value: f"{value}.00",
}


def gsm8k_rows(count: int, rng: random.Random) -> tuple[list[tuple[str, int]], str]:
    """(worked solution, gold) pairs: the GSM8K test split cycled, or generated when it is absent."""
    if GSM8K_TEST.is_file():
        rows = []
        for line in GSM8K_TEST.read_text().splitlines():
            solution, gold = json.loads(line)["answer"].rsplit("####", 1)
            rows.append((re.sub(r"<<[^>]*>>", "", solution).strip(), int(gold.strip().replace(",", ""))))
        return [rows[index % len(rows)] for index in range(count)], str(GSM8K_TEST)
    rows = []
    for _ in range(count):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        rows.append((f"Each box holds {a} items and there are {b} boxes, so {a} * {b} = {a * b}.", a * b))
    return rows, "generated (gsm8k test split absent)"


def gsm8k_inputs(rng: random.Random) -> tuple[list[str], list[str], list[str], list[str], str]:
    """completions, gold column, answer blocks, set name per completion, data source."""
    half = COMPLETIONS // 2
    rows, source = gsm8k_rows(half, rng)
    completions, golds, blocks, sets = [], [], [], []
    form_names = list(FORMS)
    for set_name, offset in (("gold", 0), ("gold+1", 1)):
        for index, (solution, gold) in enumerate(rows):
            block = FORMS[form_names[index % len(FORMS)]](gold + offset)
            completions.append(f"<think>\n{solution}\n</think>\n<answer>\n{block}\n</answer>")
            golds.append(str(gold))
            blocks.append(block)
            sets.append(set_name)
    return completions, golds, blocks, sets, source


def countdown_inputs(rng: random.Random) -> tuple[list[str], list[list[int]], list[int]]:
    completions, nums, targets = [], [], []
    for index in range(COMPLETIONS):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 99)
        target = (a + b) * c if index % 2 == 0 else a * b - c
        completions.append(f"<think>\nTry ({a} + {b}) * {c}.\n</think>\n<answer>({a} + {b}) * {c}</answer>")
        nums.append([a, b, c])
        targets.append(target)
    return completions, nums, targets


def best_rate(call: Callable[[], Any], count: int, before_each: Callable[[], None] | None = None) -> dict[str, float]:
    """Completions per second: best and median of REPEATS timed passes by the wall clock, and the best by this
    process's CPU time (on a loaded machine the wall clock also counts time the core ran other processes)."""
    seconds, cpu_seconds = [], []
    for _ in range(REPEATS):
        if before_each is not None:
            before_each()
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "per_second": count / min(seconds),
        "median_per_second": count / statistics.median(seconds),
        "cpu_per_second": count / max(min(cpu_seconds), 1e-9),
    }


def math_verify_verdicts(texts: list[str], golds: list[str]) -> tuple[list[bool], float]:
    parse, verify = fallback._math_verify()
    verdicts = []
    start = time.perf_counter()
    for text, gold in zip(texts, golds, strict=True):
        verdicts.append(bool(verify(parse(f"${gold}$", parsing_timeout=None), parse(text, parsing_timeout=None))))
    return verdicts, time.perf_counter() - start


def compare(reward: list[float | None], verdicts: list[bool], sets: list[str], blocks: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for set_name in ("gold", "gold+1"):
        rows = [index for index, name in enumerate(sets) if name == set_name]
        disagree = [index for index in rows if (reward[index] == 1.0) != verdicts[index]]
        result[set_name] = {
            "completions": len(rows),
            "reward_correct": sum(reward[index] == 1.0 for index in rows),
            "math_verify_correct": sum(verdicts[index] for index in rows),
            "disagreements": len(disagree),
            "examples": [{"block": blocks[index], "reward": reward[index]} for index in disagree[:5]],
        }
    return result


def main(check: bool) -> int:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # one core, as the target is stated
    rng = random.Random(0)
    completions, golds, blocks, sets, source = gsm8k_inputs(rng)
    countdown_completions, nums, targets = countdown_inputs(rng)
    completion_ids = [[0] * (index % 300) for index in range(COMPLETIONS)]
    fallback._math_verify()  # import cost (about 0.6 s) is not a per-completion cost

    rates: dict[str, dict[str, float]] = {}
    gsm8k = rewards.get("gsm8k_accuracy")
    # gold parsing is cached per distinct gold string: clear it so every pass pays it (the conservative number)
    clear_gold_cache = accuracy._gold_value_of_text.cache_clear
    rates["gsm8k_accuracy"] = best_rate(lambda: gsm8k(completions, answer=golds), COMPLETIONS, clear_gold_cache)
    for name in ("think_format", "tag_count", "integer_answer", "reasoning_steps"):
        reward = rewards.get(name)
        rates[name] = best_rate(lambda reward=reward: reward(completions, answer=golds), COMPLETIONS)
    countdown = rewards.get("countdown_equation")
    rates["countdown_equation"] = best_rate(
        lambda: countdown(countdown_completions, nums=nums, target=targets), COMPLETIONS
    )
    overlong = rewards.get("soft_overlong", max_length=256, buffer=64)
    rates["soft_overlong"] = best_rate(lambda: overlong(completions, completion_ids=completion_ids), COMPLETIONS)

    scores = gsm8k(completions, answer=golds)
    on_block, block_seconds = math_verify_verdicts(blocks, golds)
    sample = range(0, COMPLETIONS, WHOLE_COMPLETION_STRIDE)
    sampled_completions, sampled_golds = [completions[i] for i in sample], [golds[i] for i in sample]
    on_completion, completion_seconds = math_verify_verdicts(sampled_completions, sampled_golds)
    rates["math-verify, answer block"] = {"per_second": COMPLETIONS / block_seconds}
    rates["math-verify, whole completion"] = {"per_second": len(sample) / completion_seconds}
    speedup = rates["gsm8k_accuracy"]["per_second"] / rates["math-verify, answer block"]["per_second"]
    verdicts = {
        "math-verify, answer block": compare(scores, on_block, sets, blocks),
        "math-verify, whole completion": compare(
            [scores[i] for i in sample], on_completion, [sets[i] for i in sample], [blocks[i] for i in sample]
        ),
    }
    identical = all(row["disagreements"] == 0 for row in verdicts["math-verify, answer block"].values())
    targets_met = {
        "gsm8k_accuracy >= 20,000/s": rates["gsm8k_accuracy"]["per_second"] >= TARGET_PER_SECOND,
        "gsm8k_accuracy >= 10x math-verify (answer block)": speedup >= TARGET_SPEEDUP,
        "identical verdicts, gold and gold+1 (answer block)": identical,
    }
    report = {
        "completions": COMPLETIONS,
        "gold_source": source,
        "forms": list(FORMS),
        "cpu": f"1 core ({platform.processor() or platform.machine()}), {os.cpu_count()} on the machine",
        "python": platform.python_version(),
        "rates": rates,
        "speedup_vs_math_verify_answer_block": speedup,
        "verdicts": verdicts,
        "targets_met": targets_met,
        "caught_errors": dict(_text.caught_errors),
    }
    out = REPO / "bench" / "rewards.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"rewards on {COMPLETIONS:,} completions, one core; gold answers: {source}")
    print(f"{'reward':34} {'completions/s':>14} {'median':>10} {'by CPU time':>12}")
    for name, rate in rates.items():
        median = f"{rate['median_per_second']:>10,.0f}" if "median_per_second" in rate else f"{'':>10}"
        cpu = f"{rate['cpu_per_second']:>12,.0f}" if "cpu_per_second" in rate else ""
        print(f"{name:34} {rate['per_second']:>14,.0f} {median} {cpu}")
    print(f"gsm8k_accuracy / math-verify (answer block): {speedup:.1f}x")
    for baseline, by_set in verdicts.items():
        for set_name, row in by_set.items():
            print(
                f"verdicts vs {baseline}, {set_name:6}: reward correct {row['reward_correct']:,}, math-verify correct "
                f"{row['math_verify_correct']:,}, disagreements {row['disagreements']:,}"
            )
    for target, met in targets_met.items():
        print(f"target {target}: {'met' if met else 'MISSED'}")
    print(f"wrote {out.relative_to(REPO)}")
    return 1 if check and not all(targets_met.values()) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    sys.exit(main(parser.parse_args().check))
