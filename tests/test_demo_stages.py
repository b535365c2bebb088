"""How `aha demo` runs independent stages side by side: every stage's output shown, a failure fails the demo."""

from __future__ import annotations

import pytest

from aha import demo


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain line\n", "plain line\n"),
        ("  0%|   | 0/10\r 50%|#  | 5/10\r100%|## | 10/10\n", "100%|## | 10/10\n"),
        ("bar 1/2\rbar 2/2\ndone -> eval.json\n", "bar 2/2\ndone -> eval.json\n"),
        ("", ""),
    ],
    ids=["plain-text-unchanged", "redraws-keep-last-state", "lines-after-a-bar-kept", "empty"],
)
def test_progress_bar_redraws_are_dropped(raw, shown):
    assert demo._without_progress_bars(raw) == shown


def test_side_by_side_shows_each_stage_and_fails_with_the_failing_code(capsys, monkeypatch):
    monkeypatch.setattr(demo, "_usable_cores", lambda: 2)
    with pytest.raises(SystemExit) as stop:
        demo._aha_side_by_side([["help"], ["no-such-verb"]])
    assert stop.value.code == 2
    out = capsys.readouterr().out
    assert "2 stages side by side" in out
    assert "output of $ aha help" in out and "output of $ aha no-such-verb" in out
    assert "unknown verb 'no-such-verb'" in out  # the failing stage's own message reaches the user


def test_side_by_side_passes_when_every_stage_passes(capsys, monkeypatch):
    monkeypatch.setattr(demo, "_usable_cores", lambda: 2)
    demo._aha_side_by_side([["help"], ["--help"]])
    assert capsys.readouterr().out.count("output of $ aha") == 2


def test_each_side_by_side_stage_is_held_to_one_thread(capsys, monkeypatch):
    monkeypatch.setattr(demo, "_usable_cores", lambda: 2)
    started = []
    real_popen = demo.subprocess.Popen

    def recording_popen(command, **kwargs):
        started.append(kwargs["env"])
        return real_popen(command, **kwargs)

    monkeypatch.setattr(demo.subprocess, "Popen", recording_popen)
    demo._aha_side_by_side([["help"], ["help"]])
    assert [(env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) for env in started] == [("1", "1"), ("1", "1")]


def test_fewer_cores_than_stages_runs_them_one_after_the_other(capfd, monkeypatch):
    monkeypatch.setattr(demo, "_usable_cores", lambda: 1)
    demo._aha_side_by_side([["help"], ["help"]])
    out = capfd.readouterr().out
    assert "side by side" not in out and out.count("$ aha help") == 2
