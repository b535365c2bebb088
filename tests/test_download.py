"""aha.download: prefetch a recipe's model and dataset into the HF cache; no-ops for local and generated data.

Everything here runs offline except `test_hub_prefetch_then_offline_load`, which skips without a reachable hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import httpx
import pytest

from aha import cli, download
from aha.download import (
    DOWNLOADED,
    FAILED,
    FAST_TRANSFER_ENV,
    LOCAL,
    MISSING,
    SYNTHETIC,
    WOULD_DOWNLOAD,
    PrefetchError,
    prefetch,
    report_ok,
)
from aha.errors import AhaUserError

REPO = Path(__file__).resolve().parent.parent
HUB_MODEL = "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5"
HUB_DATASET, HUB_DATASET_CONFIG = "trl-internal-testing/zen", "standard_prompt_only"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test in an empty folder, with HF_XET_HIGH_PERFORMANCE restored afterwards (prefetch sets it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(FAST_TRANSFER_ENV, "placeholder")  # records the caller's value so teardown restores it
    monkeypatch.delenv(FAST_TRANSFER_ENV)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def no_downloads(monkeypatch):
    """Fail the test if prefetch tries to download anything."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"prefetch tried to download {args}")

    monkeypatch.setattr(download, "_download_model", refuse)
    monkeypatch.setattr(download, "_download_dataset", refuse)


@pytest.fixture
def local_model(tmp_path) -> str:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.fixture
def local_data(tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "1+1", "answer": "#### 2"}\n')
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# What prefetch reports, by kind of name. Neither a dry run nor a real run downloads for local or generated data.


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
@pytest.mark.parametrize(
    ("dataset", "expected_dataset_status"),
    [("LOCAL_FILE", LOCAL), ("LOCAL_DIR", LOCAL), ("synthetic:arith", SYNTHETIC), (None, None)],
    ids=["local-file", "local-folder", "synthetic", "no-dataset"],
)
def test_local_model_and_local_or_generated_data_are_noops(
    no_downloads, local_model, local_data, tmp_path, dataset, expected_dataset_status, dry_run
):
    dataset = {"LOCAL_FILE": local_data, "LOCAL_DIR": str(tmp_path)}.get(dataset, dataset)
    report = prefetch(local_model, dataset, None, dry_run=dry_run)
    assert report["model"]["status"] == LOCAL
    assert report["model"]["path"] == local_model
    if expected_dataset_status is None:
        assert report["dataset"] is None
    else:
        assert report["dataset"]["status"] == expected_dataset_status
    assert report_ok(report)
    assert report["dry_run"] is dry_run


def test_relative_local_paths_resolve_against_the_working_folder(no_downloads, local_model, local_data):
    report = prefetch("./my-model", "train.jsonl", None, dry_run=False)
    assert report["model"] == {
        "name": "./my-model",
        "revision": None,
        "status": LOCAL,
        "path": local_model,
        "detail": "local folder: nothing to do",
    }
    assert report["dataset"]["status"] == LOCAL


def test_dry_run_names_hub_ids_and_the_cache_without_downloading(no_downloads, local_model):
    report = prefetch("Qwen/Qwen2.5-0.5B-Instruct", "openai/gsm8k", "main", dry_run=True)
    assert report["model"]["status"] == WOULD_DOWNLOAD
    assert report["cache"]["models"] in report["model"]["detail"]
    assert report["dataset"]["status"] == WOULD_DOWNLOAD
    assert report["dataset"]["config"] == "main"
    assert report["cache"]["datasets"] in report["dataset"]["detail"]
    assert report_ok(report)


@pytest.mark.parametrize(
    "missing",
    ["./not-built-yet", "/no/such/model", "~/no-such-model-folder-xyz", "a/b/c", "data/train.jsonl", "artifacts/tiny"],
)
def test_a_local_path_that_does_not_exist_is_missing_not_sent_to_the_hub(no_downloads, missing):
    Path("artifacts").mkdir()  # a first component that is a folder here makes artifacts/tiny a local path
    report = prefetch(missing, missing if missing.endswith(".jsonl") else None, None, dry_run=False)
    assert report["model"]["status"] == MISSING
    assert repr(missing) in report["model"]["detail"]
    assert "build it first" in report["model"]["detail"]
    assert not report_ok(report)


def test_org_slash_name_without_a_local_folder_is_a_hub_id(no_downloads):
    assert prefetch("artifacts/tiny", None, None, dry_run=True)["model"]["status"] == WOULD_DOWNLOAD


@pytest.mark.parametrize(
    ("model", "dataset"),
    [("not a repo id!", None), ("Qwen/Qwen2.5-0.5B", "org/na me"), ("Qwen/Qwen2.5-0.5B", "two words")],
)
def test_a_name_that_is_neither_path_nor_hub_id_is_rejected_before_any_download(no_downloads, model, dataset):
    with pytest.raises(PrefetchError, match="not a valid hub id") as err:
        prefetch(model, dataset, None, dry_run=False)
    assert "use a hub id such as" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# Real runs for hub ids: the download functions are replaced; what is checked is what prefetch does with them.


def test_hub_ids_are_downloaded_with_revision_and_config(monkeypatch):
    calls = []
    monkeypatch.setattr(download, "_download_model", lambda name, rev: calls.append((name, rev)) or "/cache/snap")
    monkeypatch.setattr(download, "_download_dataset", lambda name, cfg: calls.append((name, cfg)) or {"train": 7})
    report = prefetch("Qwen/Qwen2.5-0.5B", "openai/gsm8k", "main", dry_run=False, model_revision="abc123")
    assert calls == [("Qwen/Qwen2.5-0.5B", "abc123"), ("openai/gsm8k", "main")]
    assert (report["model"]["status"], report["model"]["path"]) == (DOWNLOADED, "/cache/snap")
    assert (report["dataset"]["status"], report["dataset"]["splits"]) == (DOWNLOADED, {"train": 7})
    assert report_ok(report)


def _hub_error(kind: str) -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/api/models/x"))
    return {
        "not-found": lambda: RepositoryNotFoundError("404", response=response),
        "gated": lambda: GatedRepoError("403", response=response),
        "offline": lambda: LocalEntryNotFoundError("not cached"),
        "unreachable": lambda: ConnectionError("Couldn't reach 'org/data' on the Hub"),
        "dataset-not-found": lambda: DatasetNotFoundError("Dataset 'org/data' doesn't exist on the Hub"),
        "other": lambda: RuntimeError("disk full"),
    }[kind]()


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        ("not-found", "set HF_TOKEN"),
        ("gated", "accept its terms"),
        ("offline", "run `aha download` where the hub is reachable"),
        ("unreachable", "the hub cannot be reached"),
        ("dataset-not-found", "is not on the hub"),
        ("other", "download failed (RuntimeError: disk full)"),
    ],
)
def test_a_failed_download_is_reported_with_its_fix_not_raised(monkeypatch, error, advice):
    def fail(*args):
        raise _hub_error(error)

    monkeypatch.setattr(download, "_download_model", fail)
    monkeypatch.setattr(download, "_download_dataset", fail)
    report = prefetch("org/model", "org/data", None, dry_run=False)
    for kind in ("model", "dataset"):
        assert report[kind]["status"] == FAILED
        assert advice in report[kind]["detail"]
        assert f"{kind} 'org/" in report[kind]["detail"]
    assert not report_ok(report)


# ---------------------------------------------------------------------------------------------------------------------
# Fast transfer: the pinned huggingface_hub's fast path is hf_xet, switched on by HF_XET_HIGH_PERFORMANCE.


def test_fast_transfer_is_switched_on_unless_the_caller_chose(no_downloads, local_model, monkeypatch):
    pytest.importorskip("hf_xet")
    report = prefetch(local_model, None, None, dry_run=True)
    assert os.environ[FAST_TRANSFER_ENV] == "1"
    assert "high-performance" in report["transfer"]
    monkeypatch.setenv(FAST_TRANSFER_ENV, "0")
    report = prefetch(local_model, None, None, dry_run=True)
    assert os.environ[FAST_TRANSFER_ENV] == "0"
    assert "default" in report["transfer"]


def test_the_fast_transfer_variable_is_one_the_pinned_hub_reads():
    """Guards against a huggingface_hub upgrade that renames the switch (as 1.0 did with HF_HUB_ENABLE_HF_TRANSFER).
    A fresh interpreter: the hub reads its environment once, at import."""
    probe = "from huggingface_hub import constants; print(constants.HF_XET_HIGH_PERFORMANCE)"
    seen = {}
    for value in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != FAST_TRANSFER_ENV}
        if value is not None:
            env[FAST_TRANSFER_ENV] = value
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        seen[value] = result.stdout.strip()
    assert seen == {"1": "True", None: "False"}


# ---------------------------------------------------------------------------------------------------------------------
# main: the recipe is read through aha.recipe.load; a stub stands in for it so these tests do not depend on its rules.


def _stub_recipe_module(monkeypatch, *, model, dataset, config=None, error=None) -> list:
    seen = []

    def load(path, overrides=(), *, require_model=True):
        seen.append((path, list(overrides), require_model))
        if error:
            raise error
        return types.SimpleNamespace(
            model=types.SimpleNamespace(model_name_or_path=model, model_revision="main"),
            dataset=types.SimpleNamespace(dataset_name=dataset, dataset_config=config),
        )

    monkeypatch.setitem(sys.modules, "aha.recipe", types.SimpleNamespace(load=load))
    return seen


def test_main_names_a_missing_recipe_file_and_exits_2(capsys):
    assert cli.main(["download", "recipes/nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert "'recipes/nope.yaml' does not exist" in err
    assert "e.g. recipes/tiny/grpo-arith.yaml" in err


def test_main_passes_overrides_to_the_recipe_loader_and_prints_json(no_downloads, local_model, monkeypatch, capsys):
    Path("r.yaml").write_text("{}")
    seen = _stub_recipe_module(monkeypatch, model=local_model, dataset="synthetic:arith")
    assert download.main(["r.yaml", "--json", "--max_steps", "5", "--dry-run"]) == 0
    assert seen == [("r.yaml", ["--max_steps", "5"], False)]  # a missing local model is reported, not refused
    report = json.loads(capsys.readouterr().out)
    assert (report["model"]["status"], report["dataset"]["status"]) == (LOCAL, SYNTHETIC)


@pytest.mark.parametrize(
    ("model", "error", "code", "message"),
    [
        ("./not-built", None, 1, "not everything the recipe names is available"),
        ("bad name!", None, 2, "not a valid hub id"),
        ("org/model", AhaUserError("max_steps: must be >= 1"), 2, "max_steps: must be >= 1"),
    ],
    ids=["missing-local-path", "invalid-name", "invalid-recipe"],
)
def test_main_exit_codes(no_downloads, monkeypatch, capsys, model, error, code, message):
    Path("r.yaml").write_text("{}")
    _stub_recipe_module(monkeypatch, model=model, dataset=None, error=error)
    assert cli.main(["download", "r.yaml"]) == code  # through the dispatcher, which maps user errors to exit 2
    assert message in capsys.readouterr().err


def test_aha_download_cli_on_the_tiny_recipe_with_a_local_model(local_model, capsys):
    """The real recipe loader behind the `aha` dispatcher (in-process: loading a recipe imports trl, which the rest
    of the suite imports anyway)."""
    pytest.importorskip("aha.recipe")
    from aha.cli import main as aha

    recipe = REPO / "recipes" / "tiny" / "grpo-arith.yaml"
    assert aha(["download", str(recipe), "--model_name_or_path", local_model]) == 0
    out = capsys.readouterr().out
    assert f"model    {local_model}: local: local folder: nothing to do" in out
    assert "dataset  synthetic:arith: synthetic: generated at run time" in out


# ---------------------------------------------------------------------------------------------------------------------
# The hub path, for real: skipped unless the hub answers within 3 s.


def hub_reachable(timeout_s: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        request = urllib.request.Request(f"{endpoint}/api/models/{HUB_MODEL}", method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status < 500
    except OSError:  # URLError, HTTPError and timeouts are all OSErrors
        return False


def test_hub_prefetch_then_offline_load(tmp_path):
    """Prefetch a tiny model and dataset into a fresh HF_HOME, then load both with HF_HUB_OFFLINE=1."""
    if not hub_reachable():
        pytest.skip("the Hugging Face hub is not reachable within 3 s")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_OFFLINE", None)
    fetch = (
        "import json; from aha.download import prefetch; "
        f"print(json.dumps(prefetch({HUB_MODEL!r}, {HUB_DATASET!r}, {HUB_DATASET_CONFIG!r}, dry_run=False)))"
    )
    result = subprocess.run([sys.executable, "-c", fetch], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["model"]["status"], report["dataset"]["status"]) == (DOWNLOADED, DOWNLOADED), report
    assert report["model"]["path"].startswith(str(tmp_path / "hf" / "hub"))
    offline_load = (
        "import datasets, transformers; "
        f"transformers.AutoConfig.from_pretrained({HUB_MODEL!r}); transformers.AutoTokenizer.from_pretrained("
        f"{HUB_MODEL!r}); print(len(datasets.load_dataset({HUB_DATASET!r}, {HUB_DATASET_CONFIG!r}, split='train')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", offline_load],
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == report["dataset"]["splits"]["train"]
