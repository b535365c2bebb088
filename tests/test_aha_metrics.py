"""The aha signals: reflection phrases counted right, metrics logged through TRL's reward kwargs, samples kept."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest

import rewards
from aha.aha_metrics import (
    DEFAULT_REFLECTION_PHRASES,
    AhaSignals,
    RewardWithAhaSignals,
    aha_metrics_hooks,
    configured_phrases,
    phrase_slug,
)

SIGNALS = AhaSignals()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("<think>\n3 + 4 = 7\n</think>\n<answer>7</answer>", 0),
        ("Wait, that is wrong.", 1),
        ("wait", 1),
        ("WAIT. Wait... wait!", 3),
        ("Hmm, however, let me check: 3 + 4 = 7.", 3),
        ("Let me   check\nagain", 1),  # any whitespace between the words of a phrase
        ("let me checkout the store", 0),  # whole words only
        ("The waiter awaited the waitress.", 0),
        ("I need to re-evaluate, then reevaluate and re-check.", 3),
        ("Let me double-check this.", 1),
        ("On second thought, I made a mistake.", 2),
        ("wait_time = 3", 0),  # '_' is part of a word
        ("(wait)", 1),
    ],
)
def test_counts_reflection_phrases(text, expected):
    assert SIGNALS.count(text) == expected


def test_the_longest_overlapping_phrase_counts_once():
    signals = AhaSignals(phrases=("wait", "wait a minute"))
    assert signals.count("Wait a minute, wait.") == 2
    assert signals.phrase_counts("Wait a minute, wait.") == {"wait a minute": 1, "wait": 1}


@pytest.mark.parametrize(
    ("phrases", "text", "expected"),
    [
        (("Let Me See",), "let me see... LET ME SEE", {"let me see": 2}),  # configured case does not matter
        (("c++",), "I wrote c++ code", {"c++": 1}),  # regex characters are literal
        (("wait", "Wait"), "wait", {"wait": 1}),  # duplicates collapse
        ((), "wait", {}),  # no phrases: nothing counts
    ],
)
def test_configured_phrases(phrases, text, expected):
    assert AhaSignals(phrases=phrases).phrase_counts(text) == expected


@pytest.mark.parametrize("bad", [[""], ["   "], [3], ["let me check", "let-me check"]])
def test_bad_phrase_lists_are_rejected_with_the_rule(bad):
    with pytest.raises(ValueError, match="reflection_phrases"):
        AhaSignals(phrases=tuple(bad))


def test_phrase_slugs_are_metric_names():
    assert phrase_slug("let me check") == "let_me_check"
    assert phrase_slug("re-evaluate") == "re_evaluate"
    assert len({phrase_slug(p) for p in DEFAULT_REFLECTION_PHRASES}) == len(DEFAULT_REFLECTION_PHRASES)


def test_measure_a_batch():
    signals = AhaSignals(phrases=("wait", "let me check"))
    metrics = signals.measure(["Wait, wait.", "no reflection", "let me check", ""], lengths=[10, 20, 30, 40])
    assert metrics == {
        "aha/reflection_rate": 0.5,
        "aha/reflections_per_completion": 0.75,
        "aha/completion_length": 25.0,
        "aha/phrase/wait": 0.25,
        "aha/phrase/let_me_check": 0.25,
    }
    assert signals.measure([]) == {}
    assert "aha/completion_length" not in signals.measure(["wait"], lengths=None)


def trl_kwargs(logged: dict, extra: dict, **more):
    """The keyword arguments TRL 1.16's GRPOTrainer passes a reward function (`_calculate_rewards`)."""
    return {
        "prompts": [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]],
        "completion_ids": [[1, 2, 3], [4, 5, 6, 7, 8]],
        "answer": ["7", "5"],
        "trainer_state": SimpleNamespace(global_step=0, max_steps=10),
        "log_metric": lambda name, value: logged.setdefault(name, []).append(value),
        "log_extra": lambda column, values: extra.setdefault(column, []).extend(values),
        **more,
    }


def test_the_wrapped_reward_keeps_its_name_and_scores_and_logs_the_signals(tmp_path):
    completions = [
        [{"role": "assistant", "content": "<think>\nwait, 3 + 4 = 7\n</think>\n<answer>7</answer>"}],
        [{"role": "assistant", "content": "<answer>4</answer>"}],
    ]
    logged: dict = {}
    extra: dict = {}
    plain = rewards.get("gsm8k_accuracy")
    wrapped = aha_metrics_hooks(fake_recipe(tmp_path)).attach([plain, rewards.get("think_format")])
    assert isinstance(wrapped[0], RewardWithAhaSignals)
    assert wrapped[0].__name__ == "gsm8k_accuracy"
    assert wrapped[1] is not plain and not isinstance(wrapped[1], RewardWithAhaSignals)
    kwargs = trl_kwargs(logged, extra)
    assert wrapped[0](completions, **kwargs) == plain(completions, **kwargs) == [1.0, 0.0]
    assert logged["aha/reflection_rate"] == [0.5]
    assert logged["aha/completion_length"] == [4.0]
    assert extra == {"reflections": [1, 0]}
    assert pickle.loads(pickle.dumps(wrapped[0]))(completions, **kwargs) == [1.0, 0.0]


def fake_recipe(tmp_path, phrases=None):
    rewards_section = SimpleNamespace(reward_funcs=["gsm8k_accuracy"], reflection_phrases=phrases)
    return SimpleNamespace(rewards=rewards_section, training=SimpleNamespace(output_dir=str(tmp_path / "run")))


def test_attach_wraps_the_first_plain_function_once(tmp_path):
    hooks = aha_metrics_hooks(fake_recipe(tmp_path))

    async def judge(completions, **kwargs):
        return [0.0] * len(completions)

    plain = rewards.get("think_format")
    attached = hooks.attach([judge, plain])
    assert attached[0] is judge and isinstance(attached[1], RewardWithAhaSignals)
    assert hooks.attach(attached) == attached  # attaching twice does not wrap twice
    assert hooks.attach([judge]) == [judge]  # nothing to wrap: unchanged


def test_recipe_phrases_replace_the_defaults(tmp_path):
    assert configured_phrases(fake_recipe(tmp_path)) == DEFAULT_REFLECTION_PHRASES
    assert configured_phrases(fake_recipe(tmp_path, ["aha"])) == ("aha",)
    assert configured_phrases(SimpleNamespace(rewards=None)) == DEFAULT_REFLECTION_PHRASES  # an sft recipe
    assert aha_metrics_hooks(fake_recipe(tmp_path, ["aha"])).signals.phrases == ("aha",)


def test_a_broken_batch_never_raises_into_training(tmp_path):
    wrapped = aha_metrics_hooks(fake_recipe(tmp_path)).attach([rewards.get("think_format")])[0]

    def broken_logger(name, value):
        raise RuntimeError("logger down")

    scores = wrapped(["<think>\nx\n</think>\n<answer>1</answer>"], log_metric=broken_logger)
    assert scores == [1.0]


def test_samples_are_kept_once_per_tenth_of_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    recipe = fake_recipe(tmp_path)
    wrapped = aha_metrics_hooks(recipe).attach([rewards.get("gsm8k_accuracy")])[0]
    completions = ["<answer>7</answer>", "wait <answer>5</answer>"]
    for step in [0, 0, 3, 9, 10, 11, 25, 99]:  # max_steps 100: tenths of 10 steps; 99 is the last step
        kwargs = trl_kwargs({}, {})
        kwargs["trainer_state"] = SimpleNamespace(global_step=step, max_steps=100)
        wrapped(completions, **kwargs)
    rows = [json.loads(line) for line in (tmp_path / "run" / "aha-samples.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in rows}) == [0, 10, 25, 99]
    assert len(rows) == 8  # two completions per kept step
    assert rows[1] == {
        "step": 0,
        "prompt": "q2",
        "completion": "wait <answer>5</answer>",
        "tokens": 5,
        "reflections": 1,
        "rewards": {"gsm8k_accuracy": 1.0},
    }


def test_other_ranks_keep_no_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    wrapped = aha_metrics_hooks(fake_recipe(tmp_path)).attach([rewards.get("gsm8k_accuracy")])[0]
    wrapped(["<answer>7</answer>", "<answer>5</answer>"], **trl_kwargs({}, {}))
    assert not (tmp_path / "run" / "aha-samples.jsonl").exists()


@pytest.mark.e2e
def test_a_real_grpo_step_logs_the_signals(tiny_model, tmp_path):
    """TRL's own trainer passes log_metric to the wrapped reward and logs aha/* with its metrics."""
    from trl import GRPOConfig, GRPOTrainer

    from aha.data import grpo_dataset
    from aha.recipe import load
    from aha.train import load_tokenizer
    from tests.helpers import write_recipe

    path = write_recipe(tmp_path, "tiny/grpo-arith.yaml", model_name_or_path=str(tiny_model),
                        output_dir=str(tmp_path / "run"), dataset_generator={"n_train": 16, "n_test": 4, "seed": 0,
                        "max_number": 15, "min_ops": 1, "max_ops": 1})  # fmt: skip
    recipe = load(str(path), require_model=True)
    tokenizer = load_tokenizer(recipe)
    args = GRPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, max_steps=1, num_generations=2,
                      per_device_train_batch_size=4, max_completion_length=8, report_to=[], logging_steps=1,
                      save_strategy="no", gradient_checkpointing=False)  # fmt: skip
    reward_funcs = aha_metrics_hooks(recipe).attach([rewards.get("gsm8k_accuracy"), rewards.get("think_format")])
    trainer = GRPOTrainer(model=str(tiny_model), reward_funcs=reward_funcs, args=args, processing_class=tokenizer,
                          train_dataset=grpo_dataset(recipe.dataset, recipe.prompt, tokenizer, "train"))  # fmt: skip
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert 0.0 <= logged["aha/reflection_rate"] <= 1.0
    assert 1 <= logged["aha/completion_length"] <= 8
    assert "rewards/gsm8k_accuracy/mean" in logged  # the wrapped reward keeps its metric name
    assert (tmp_path / "run" / "aha-samples.jsonl").is_file()
