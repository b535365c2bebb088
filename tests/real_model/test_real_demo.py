"""aha.real_demo's own figures: last-number accuracy, strict format and prompt copies from a samples.jsonl."""

from __future__ import annotations

import json

from aha import real_demo


def _completion(text: str, strict: float) -> dict:
    return {"text": text, "rewards": {real_demo.STRICT_REWARD: strict}}


def test_sample_stats_split_greedy_and_sampled(tmp_path):
    prompt = [
        {"role": "system", "content": "Solve the problem. Think inside the tags, then give only the final number."},
        {"role": "user", "content": "Tom has 3 apples. He buys 4 more. How many apples does Tom have now?"},
    ]
    line = {
        "prompt": prompt,
        "gold": {"answer": "7"},
        "greedy": _completion("3 + 4 = 7\n</think>\n<answer>7</answer>", 1.0),
        "samples": [
            _completion("Tom has 3 apples. He buys 4 more. How many apples does Tom have now? 8", 0.0),
            _completion("<answer>\nTom has 7 apples.", 0.25),
        ],
    }
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(line) + "\n")
    stats = real_demo.sample_stats(samples)
    assert stats["greedy"] == {
        "completions": 1,
        "last_number_accuracy": 1.0,
        "strict_format": 1.0,
        "prompt_copies": 0.0,
    }
    assert stats["sampled"]["completions"] == 2
    assert stats["sampled"]["last_number_accuracy"] == 0.5  # "8" wrong, "7" right
    assert stats["sampled"]["strict_format"] == 0.0
    assert stats["sampled"]["prompt_copies"] == 0.5  # the first repeats the question word for word


def test_copies_prompt_needs_a_long_verbatim_run():
    prompt = "Solve the problem. Think inside the tags, then give only the final number inside the answer tags."
    assert real_demo.copies_prompt("then give only the final number inside the answer tags.", prompt)
    assert not real_demo.copies_prompt("give only the final number: 7", prompt)


def test_seeds_table_puts_the_base_model_beside_each_seed():
    def figures(strict, greedy):
        return {"greedy_pass@1": greedy, "pass@1": greedy, "sampled": {"strict_format": strict}, "greedy": {}}

    summaries = [
        {"seed": 0, "steps": 90, "train_minutes": 40.1, "base": figures(0.0, 0.0), "trained": figures(0.9, 0.2)},
        {"seed": 1, "steps": 85, "train_minutes": 40.3, "base": figures(0.0, 0.0), "trained": figures(0.8, 0.15)},
    ]
    table = real_demo.seeds_table(summaries)
    assert "| metric | base | seed 0 | seed 1 |" in table
    assert "| strict format, sampled | 0.0% | 90.0% | 80.0% |" in table
    assert "| accuracy (format and right), greedy pass@1 | 0.0% | 20.0% | 15.0% |" in table
    assert "seed 1: 85 steps in 40.3 min" in table


def test_repeated_or_negative_seeds_exit_2_before_any_work(capsys):
    assert real_demo.main(["--seeds", "1", "1"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert real_demo.main(["--seeds", "-1"]) == 2
