"""The registry: names, options, dotted paths, errors that say what is valid, pickling, threads, import cost."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import rewards
from rewards import _text

REPO = Path(__file__).resolve().parents[2]
NAMES = [
    "countdown_equation",
    "gsm8k_accuracy",
    "integer_answer",
    "reasoning_steps",
    "soft_overlong",
    "tag_count",
    "think_format",
]
# Options for each registered reward that bind something other than the defaults.
BOUND_OPTIONS = {
    "countdown_equation": {"well_formed": 0.1},
    "gsm8k_accuracy": {"exact_match": 2.0, "correct": 1.5},
    "integer_answer": {"value": 0.5},
    "reasoning_steps": {"min_steps": 2},
    "soft_overlong": {"max_length": 8, "buffer": 4},
    "tag_count": {"per_tag": 0.125, "trailing_penalty": 0.01},
    "think_format": {"strict": True, "prefill": "<think>\n", "think_tag": "think"},
}
COMPLETIONS = [
    "<think>\nStep 1: 44 + 19 = 63.\nStep 2: 63 + 35 = 98.\n</think>\n<answer>\n44 + 19 + 35\n</answer>",
    "\nStep 1: add.\n</think>\n<answer>\n98\n</answer>",
    [{"role": "assistant", "content": "<think>2 * 49</think><answer>2 \\times 49</answer>"}],
    "no format at all",
]
COLUMNS = {
    "answer": ["98", "98", "#### 98", "98"],
    "nums": [[44, 19, 35]] * 4,
    "target": [98] * 4,
    "completion_ids": [[1] * 3, [1] * 6, [1] * 8, [1] * 20],
    "prompts": ["p"] * 4,
}


def test_available_lists_exactly_the_registered_names():
    assert rewards.available() == NAMES


@pytest.mark.parametrize("name", [name for name in NAMES if name != "soft_overlong"])
def test_get_without_options_returns_the_plain_module_function(name):
    reward = rewards.get(name)
    assert reward.__name__ == name
    assert reward.__module__.startswith("rewards.")
    assert getattr(sys.modules[reward.__module__], name) is reward


@pytest.mark.parametrize("name", NAMES)
def test_bound_reward_is_named_as_registered_and_picklable(name):
    reward = rewards.get(name, **BOUND_OPTIONS[name])
    # TRL names a reward by unwrapping functools.partial and reading __name__: this must be the registered name
    assert not isinstance(reward, functools.partial)
    assert reward.__name__ == name
    scores = reward(COMPLETIONS, **COLUMNS)
    assert len(scores) == len(COMPLETIONS)
    restored = pickle.loads(pickle.dumps(reward))
    assert restored.__name__ == name
    assert restored(COMPLETIONS, **COLUMNS) == scores


@pytest.mark.parametrize("name", [name for name in NAMES if name != "soft_overlong"])
def test_plain_reward_pickles_by_reference(name):
    reward = rewards.get(name)
    assert pickle.loads(pickle.dumps(reward)) is reward


def test_options_change_scores():
    strict = rewards.get("think_format", **BOUND_OPTIONS["think_format"])
    assert strict(COMPLETIONS, **COLUMNS) == [0.0, 1.0, 0.0, 0.0]
    assert rewards.get("think_format")(COMPLETIONS, **COLUMNS) == [1.0, 0.0, 1.0, 0.0]


def test_yaml_integers_are_valid_numbers():
    reward = rewards.get("gsm8k_accuracy", correct=2)
    assert reward.options.correct == 2.0
    assert isinstance(reward.options.correct, float)


def test_unknown_name_lists_the_registered_names():
    with pytest.raises(ValueError, match="unknown reward 'accuracy'") as error:
        rewards.get("accuracy")
    for name in NAMES:
        assert name in str(error.value)
    assert "package.module:function" in str(error.value)


BAD_OPTIONS = [
    # (behaviour, name, options, message pattern)
    ("unknown option names the valid ones", "think_format", {"strickt": True}, r"no option 'strickt'.*strict=False"),
    ("wrong type", "think_format", {"strict": "yes"}, r"option strict must be true or false, got 'yes'"),
    ("bool is not a number", "gsm8k_accuracy", {"correct": True}, r"option correct must be a number"),
    ("tag with brackets", "think_format", {"think_tag": "<think>"}, r"think_tag='<think>' is not a tag name"),
    ("same tag twice", "tag_count", {"think_tag": "answer"}, r"both 'answer'"),
    ("non-positive credit", "tag_count", {"per_tag": 0}, r"per_tag must be > 0"),
    ("partial credit above full", "countdown_equation", {"well_formed": 1.0}, r"well_formed must be >= 0 and below"),
    ("required options", "soft_overlong", {"max_length": 10}, r"needs option 'buffer'"),
    ("out of range", "reasoning_steps", {"min_steps": 0}, r"min_steps must be between 1 and 100"),
]


@pytest.mark.parametrize(
    ("name", "options", "pattern"), [case[1:] for case in BAD_OPTIONS], ids=[case[0] for case in BAD_OPTIONS]
)
def test_bad_options_raise_value_error_saying_what_is_valid(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        rewards.get(name, **options)
    with pytest.raises(ValueError, match=pattern):
        rewards.validate(name, options)


def test_validate_accepts_good_names_and_options():
    for name in NAMES:
        assert rewards.validate(name, BOUND_OPTIONS[name]) is None
    assert rewards.validate("think_format") is None
    assert rewards.validate("think_format", None) is None
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.validate("thinking_format", {})


USER_MODULE = """
def brevity(completions, limit=10, **kwargs):
    return [1.0 if len(str(c)) <= limit else 0.0 for c in completions]

def fixed(completions, value=1.0):
    return [value for _ in completions]

not_callable = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_user_rewards.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_user_rewards"
    sys.modules.pop("my_user_rewards", None)


def test_dotted_path_loads_a_user_function(user_module):
    reward = rewards.get(f"{user_module}:brevity")
    assert reward.__name__ == "brevity"
    assert reward(["short", "x" * 20]) == [1.0, 0.0]


def test_dotted_path_with_options_binds_them(user_module):
    reward = rewards.get(f"{user_module}:brevity", limit=30)
    assert reward.__name__ == "brevity"
    assert reward(["short", "x" * 20], answer=["ignored", "ignored"]) == [1.0, 1.0]
    assert pickle.loads(pickle.dumps(reward))(["x" * 40]) == [0.0]


DOTTED_PATH_ERRORS = [
    ("missing module", "no_such_module_xyz:f", {}, r"cannot import module 'no_such_module_xyz'"),
    ("missing function", "my_user_rewards:nope", {}, r"has no function 'nope'.*'brevity'"),
    ("not callable", "my_user_rewards:not_callable", {}, r"has no function 'not_callable'"),
    ("unknown option", "my_user_rewards:fixed", {"limit": 3}, r"no option 'limit'.*\['completions', 'value'\]"),
    ("malformed path", "my_user_rewards:", {}, r"unknown reward"),
]


@pytest.mark.parametrize(
    ("path", "options", "pattern"),
    [case[1:] for case in DOTTED_PATH_ERRORS],
    ids=[case[0] for case in DOTTED_PATH_ERRORS],
)
def test_dotted_path_errors(user_module, path, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        rewards.validate(path, options)


@pytest.mark.parametrize("name", NAMES)
def test_rewards_are_safe_in_worker_threads(name):
    reward = rewards.get(name, **BOUND_OPTIONS[name])
    expected = reward(COMPLETIONS, **COLUMNS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: reward(COMPLETIONS, **COLUMNS), range(16)))
    assert all(result == expected for result in results)


def test_math_verify_fallback_works_in_a_worker_thread():
    """math-verify's default signal timeout raises outside the main thread; the reward must run without it."""
    _text.caught_errors.clear()
    reward = rewards.get("gsm8k_accuracy", math_verify=True)
    completions = ["<answer>2 \\times 49</answer>", "<answer>\\frac{196}{2} + 0</answer>", "<answer>97 + 2</answer>"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: reward(completions, answer=["98"] * 3), range(4)))
    assert results == [[1.0, 1.0, 0.0]] * 4
    assert not _text.caught_errors


FIRST_USE_IN_THREAD = """
import sys
from concurrent.futures import ThreadPoolExecutor
import rewards
reward = rewards.get("gsm8k_accuracy", math_verify=True)
with ThreadPoolExecutor(max_workers=2) as pool:
    scores = list(pool.map(lambda answer: reward([answer], answer=["98"])[0], ["<answer>2 \\\\times 49</answer>"] * 2))
print(scores, "math_verify" in sys.modules, dict(rewards._text.caught_errors))
"""


def test_math_verify_first_imported_in_a_worker_thread():
    """A fresh process whose first math-verify use (the import included) happens in worker threads."""
    output = subprocess.run(
        [sys.executable, "-c", FIRST_USE_IN_THREAD], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[1.0, 1.0] True {}"


IMPORT_PROBE = """
import sys, time
start = time.perf_counter()
import rewards
seconds = time.perf_counter() - start
rewards.get("gsm8k_accuracy")(["<answer>$1,000.00</answer>"], answer=["1000"])
aha_loaded = any(module == "aha" or module.startswith("aha.") for module in sys.modules)
print(seconds, "math_verify" in sys.modules, "sympy" in sys.modules, aha_loaded)
"""


def test_import_is_fast_and_loads_neither_math_verify_nor_aha():
    runs = []
    for _ in range(3):  # the machine is shared: judge the fastest of three fresh interpreters
        output = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append(output)
    assert min(float(run[0]) for run in runs) < 0.3
    assert runs[0][1:] == ["False", "False", "False"], "math_verify / sympy / aha imported"


def test_rewards_source_does_not_import_aha():
    for path in (REPO / "rewards").rglob("*.py"):
        source = path.read_text()
        assert "import aha" not in source and "from aha" not in source, path


def test_a_labelled_copy_has_its_own_options_and_name():
    soft = rewards.get("think_format@soft", strict=False)
    strict = rewards.get("think_format@strict", strict=True)
    assert (soft.__name__, strict.__name__) == ("think_format@soft", "think_format@strict")
    loose = "<think>a</think> <answer>7</answer>"
    assert soft([loose]) == [1.0]
    assert strict([loose]) == [0.0]


def test_a_bad_label_or_base_name_is_refused():
    with pytest.raises(ValueError, match="label"):
        rewards.get("think_format@so-ft")
    with pytest.raises(ValueError, match="registered rewards"):
        rewards.get("thinkformat@soft")


ROLES = {
    "countdown_equation": ("accuracy", "countdown"),
    "gsm8k_accuracy": ("accuracy", "gsm8k"),
    "integer_answer": ("shaping", None),
    "reasoning_steps": ("shaping", None),
    "soft_overlong": ("shaping", None),
    "tag_count": ("shaping", None),
    "think_format": ("format", None),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_reward_records_its_role_and_task(name):
    entry = rewards.spec(name)
    assert (entry.name, entry.role, entry.task) == (name, *ROLES[name])
    assert entry.summary, f"{name} has no docstring"
    assert rewards.spec(f"{name}@copy") is entry  # a labelled copy is the same reward


def test_aha_asks_by_role_and_task():
    assert rewards.names(role="accuracy") == ["countdown_equation", "gsm8k_accuracy"]
    assert rewards.names(role="accuracy", task="gsm8k") == ["gsm8k_accuracy"]
    assert rewards.names(role="format") == ["think_format"]
    assert rewards.names() == NAMES
    assert rewards.base_name("think_format@strict") == "think_format"
    with pytest.raises(ValueError, match="roles are accuracy, format, shaping"):
        rewards.names(role="accuracy_reward")
    with pytest.raises(ValueError, match="unknown reward 'accuracy'"):
        rewards.spec("accuracy@x")


FULL_CREDIT_CASES = [
    ("gsm8k_accuracy", {"answer": ["72"]}, {"exact_match": 2.0, "correct": 1.5}, "72", "73"),
    ("countdown_equation", {"nums": [[9, 8]], "target": [72]}, {"well_formed": 0.5, "correct": 2.0}, "9 * 8", "9 + 8"),
]


@pytest.mark.parametrize(("name", "columns", "recipe_options", "right", "wrong"), FULL_CREDIT_CASES)
def test_full_credit_options_score_exactly_one_or_zero(name, columns, recipe_options, right, wrong):
    """What an evaluation counts as correct: the recipe's options with the full-credit ones on top."""
    reward = rewards.get(name, **{**recipe_options, **rewards.spec(name).full_credit})
    both = {key: value * 2 for key, value in columns.items()}
    assert reward([f"<answer>{right}</answer>", f"<answer>{wrong}</answer>"], **both) == [1.0, 0.0]


ANSWER_VALUES = [
    ("gsm8k_accuracy", "$1,000.00", {}, "1000"),
    ("gsm8k_accuracy", "**18**", {}, "18"),
    ("gsm8k_accuracy", "18 or 19", {}, None),
    ("countdown_equation", "3 * 5 - 2", {"nums": [2, 3, 5]}, "13"),
    ("countdown_equation", "3 * 5", {"nums": [2, 3, 5]}, None),  # a number unused
]


@pytest.mark.parametrize(("name", "block", "row", "value"), ANSWER_VALUES)
def test_accuracy_rewards_say_what_an_answer_stands_for(name, block, row, value):
    result = rewards.spec(name).answer_value(block, row)
    assert (None if result is None else str(result)) == value


@pytest.mark.parametrize("name", NAMES)
def test_docstring_examples_hold(name):
    """Each reward's docstring shows calls and their scores, as TRL's reward functions do: they must stay true."""
    import doctest

    function = getattr(sys.modules[rewards.spec(name).score_one.__module__], name)
    tests = doctest.DocTestFinder().find(function, name, globs={name: function, "rewards": rewards})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted >= 2, f"{name}: its docstring shows no examples"
    assert results.failed == 0


def test_a_reward_that_needs_options_says_so_when_called_plain():
    from rewards import length

    with pytest.raises(ValueError, match=r"needs options \(max_length \(required\), buffer \(required\)\)"):
        length.soft_overlong(["a"], completion_ids=[[1]])


def test_register_refuses_a_second_reward_of_the_same_name_and_an_unknown_role():
    from rewards._registry import register
    from rewards.formatting import ReasoningStepsOptions

    with pytest.raises(ValueError, match="registered twice"):
        register("tag_count", options=ReasoningStepsOptions, role="shaping")(lambda text, options: 0.0)
    with pytest.raises(ValueError, match="role 'bonus' is not one of"):
        register("new_reward_xyz", options=ReasoningStepsOptions, role="bonus")(lambda text, options: 0.0)
    with pytest.raises(ValueError, match="names its task"):
        register("new_reward_xyz", options=ReasoningStepsOptions, role="accuracy")(lambda text, options: 0.0)
    assert "new_reward_xyz" not in rewards.available()


def test_no_rewards_module_shadows_a_standard_library_module():
    shadowing = [path.name for path in (REPO / "rewards").glob("*.py") if path.stem in sys.stdlib_module_names]
    assert not shadowing


def test_the_rewards_readme_lists_every_reward():
    readme = (REPO / "rewards" / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in readme, name
