"""Bad input: one error class, turned into a message and exit status 2 in one place (aha.cli.main)."""

from __future__ import annotations

import pytest

from aha import cli
from aha.errors import EXIT_USAGE, AhaUserError


def test_the_cli_turns_any_user_error_into_its_message_and_exit_2(monkeypatch, capsys):
    class Bad(AhaUserError):
        pass

    def verb(argv):
        raise Bad("key x: must be > 0, got -1. Fix: set x: 1.")

    monkeypatch.setitem(cli.VERBS, "bad", ("tests.test_errors:verb", "raises"))
    monkeypatch.setattr("tests.test_errors.verb", verb, raising=False)
    assert cli.main(["bad"]) == EXIT_USAGE == 2
    assert capsys.readouterr().err == "aha bad: key x: must be > 0, got -1. Fix: set x: 1.\n"


def test_other_errors_keep_their_traceback(monkeypatch):
    def verb(argv):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.VERBS, "bug", ("tests.test_errors:verb", "raises"))
    monkeypatch.setattr("tests.test_errors.verb", verb, raising=False)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["bug"])


@pytest.mark.parametrize(
    "path", ["aha.evaluate:EvalError", "aha.reporting.runs:ReportError", "aha.export:ExportError",
             "aha.chat:ChatError", "aha.demo:DemoError", "aha.recipe:RecipeError", "aha.download:PrefetchError",
             "aha.models:ModelError", "aha.launch.errors:LaunchError"],
)  # fmt: skip
def test_the_verbs_errors_are_user_errors(path):
    import importlib

    module, name = path.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), AhaUserError)


MISSING = "recipes/nope.yaml"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", MISSING], f"aha check: recipe file {MISSING!r} does not exist"),
        (["train", MISSING], f"aha train: recipe file {MISSING!r} does not exist"),
        (["download", MISSING], f"aha download: recipe file {MISSING!r} does not exist"),
        (["launch", MISSING, "--dry-run"], f"aha launch: recipe file {MISSING!r} does not exist"),
        (["demo", "--grpo", MISSING], f"aha demo: recipe file {MISSING!r} does not exist"),
        (["model", "smollm2-135m", "--gguf", "nope.gguf", "--output", "{tmp}/m"], "aha model: "),
    ],
    ids=["check", "train", "download", "launch", "demo", "model"],
)
def test_each_verbs_bad_input_exits_2_with_its_message(tmp_path, capsys, argv, message):
    """The verbs raise their user errors; only the dispatcher turns them into a message and exit 2."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Traceback" not in err
