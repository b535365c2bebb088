"""Prefetch a recipe's model and dataset into the Hugging Face cache, once, before a run.

    aha download recipes/tiny/grpo-arith.yaml              # fetch what the recipe names (no-op for local/synthetic)
    aha download RECIPE --dry-run                          # say what would be fetched, touch nothing
    aha download RECIPE --json                             # the report as JSON
    aha download RECIPE --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct   # recipe overrides, as in `aha train`

Run it on one machine that shares the cache (`HF_HOME`) with the nodes, so N nodes do not download at once; the run
can then set `HF_HUB_OFFLINE=1`. Models go to `$HF_HOME/hub` through `huggingface_hub.snapshot_download`, datasets to
`$HF_HOME/datasets` through `datasets.load_dataset` (the same call `aha.data` makes, so its prepared Arrow cache is
reused). Local paths and generated `synthetic:<task>` datasets need nothing and are reported as such.

Fast transfer: the pinned huggingface_hub (1.x) no longer uses `hf_transfer` (it only warns about
HF_HUB_ENABLE_HF_TRANSFER); its fast path is `hf_xet`, switched to high-performance mode by HF_XET_HIGH_PERFORMANCE=1,
which this command sets unless the caller chose a value.

Exit codes: 0 when everything the recipe names is now local or cached; 1 when something is not (a local path that
does not exist yet, a failed download); 2 on bad input (no recipe file, an invalid recipe, an invalid name).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError

SYNTHETIC_PREFIX = "synthetic:"
# same rule as aha.recipe: a name ending like a data file, or with more than one "/", is a local path, never a hub id
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# weight formats neither transformers nor vLLM load for this project; skipping them can halve a download
MODEL_IGNORE_PATTERNS = ["*.gguf", "*.onnx", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.pth", "original/*"]
FAST_TRANSFER_ENV = "HF_XET_HIGH_PERFORMANCE"

# status of one item in the report
LOCAL, SYNTHETIC, MISSING, WOULD_DOWNLOAD, DOWNLOADED, FAILED = (
    "local",
    "synthetic",
    "missing",
    "would download",
    "downloaded",
    "failed",
)
OK_STATUSES = (LOCAL, SYNTHETIC, WOULD_DOWNLOAD, DOWNLOADED)


class PrefetchError(AhaUserError, ValueError):
    """Bad input to `aha download`: a recipe file that does not exist, or a name that is neither an existing local
    path, a generated dataset, nor a valid hub id."""


def _looks_like_path(name: str) -> bool:
    """Names written as paths (./x, /x, ~/x, a/b/c, data.jsonl), or whose first component is a folder here (e.g.
    artifacts/tiny-warmup once artifacts/ exists): local, so prefetch must never send them to the hub."""
    first = Path(name).parts[0] if Path(name).parts else ""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.endswith(DATA_FILE_SUFFIXES)
        or name.count("/") > 1
        or ("/" in name and os.path.isdir(first))
    )


def locate(name: str, *, is_dataset: bool) -> str:
    """Where `name` comes from: LOCAL (exists here), SYNTHETIC (generated, datasets only), MISSING (a local path that
    does not exist) or "hub". Raises PrefetchError for a name that is none of these."""
    if is_dataset and name.startswith(SYNTHETIC_PREFIX):
        return SYNTHETIC
    if os.path.exists(os.path.expanduser(name)):
        return LOCAL
    if _looks_like_path(name):
        return MISSING
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        kind = "dataset" if is_dataset else "model"
        raise PrefetchError(
            f"{kind} {name!r} is not an existing local path and not a valid hub id ({err}); use a hub id such as "
            f"{'openai/gsm8k' if is_dataset else 'Qwen/Qwen2.5-0.5B-Instruct'} or the path of a local "
            f"{'file or folder' if is_dataset else 'model folder'}."
        ) from err
    return "hub"


def enable_fast_transfer() -> str:
    """Turn on hf_xet's high-performance mode unless the caller set HF_XET_HIGH_PERFORMANCE; say what downloads use.
    hf_xet reads the variable from the environment when it starts a transfer, so setting it here is in time."""
    if importlib.util.find_spec("hf_xet") is None:
        return "http (hf_xet not installed)"
    os.environ.setdefault(FAST_TRANSFER_ENV, "1")
    mode = "high-performance" if os.environ[FAST_TRANSFER_ENV].lower() in ("1", "true", "yes", "on") else "default"
    return f"hf_xet ({mode}; {FAST_TRANSFER_ENV}={os.environ[FAST_TRANSFER_ENV]})"


def cache_dirs() -> dict[str, str]:
    """Where downloads land. Both libraries read HF_HOME (and HF_HUB_CACHE / HF_DATASETS_CACHE) at import."""
    from datasets import config as datasets_config
    from huggingface_hub import constants

    return {
        "hf_home": constants.HF_HOME,
        "models": constants.HF_HUB_CACHE,
        "datasets": str(datasets_config.HF_DATASETS_CACHE),
    }


def _missing_detail(name: str) -> str:
    return (
        f"local path {name!r} does not exist (relative to {os.getcwd()}); nothing to download for it, but the run "
        "will not find it: build it first (for the tiny model: make warmup) or fix the path."
    )


def _download_model(name: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(name, revision=revision, ignore_patterns=MODEL_IGNORE_PATTERNS)


def _download_dataset(name: str, config: str | None) -> dict[str, int]:
    import datasets

    loaded = datasets.load_dataset(name, config)
    return {split: len(rows) for split, rows in loaded.items()}


def _hub_failure(kind: str, name: str, err: Exception) -> str:
    """One line that says what went wrong with a hub download and how to fix it."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    cause = f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if isinstance(err, GatedRepoError):
        return f"{kind} {name!r} is gated: accept its terms on the hub and set HF_TOKEN ({cause})."
    if isinstance(err, (RepositoryNotFoundError, DatasetNotFoundError)):
        return (
            f"{kind} {name!r} is not on the hub (or is private: set HF_TOKEN) and is not a local path here; if it is "
            f"a folder an earlier step builds, build it first ({cause})."
        )
    if isinstance(err, (LocalEntryNotFoundError, ConnectionError)):
        return (
            f"{kind} {name!r} is not in the cache and the hub cannot be reached (HF_HUB_OFFLINE=1 or no network): run "
            f"`aha download` where the hub is reachable, with the same HF_HOME ({cause})."
        )
    return f"{kind} {name!r}: download failed ({cause})."


def prefetch(
    model: str,
    dataset: str | None,
    dataset_config: str | None,
    *,
    dry_run: bool,
    model_revision: str | None = None,
) -> dict[str, Any]:
    """Fetch `model` (hub id or local path) and `dataset` (hub id, local file/folder, `synthetic:<task>` or None)
    into the Hugging Face cache, or with `dry_run` only say what would be fetched.

    Returns {"dry_run", "transfer", "cache": {hf_home, models, datasets}, "model": item, "dataset": item | None},
    each item {"name", "status", "detail", ...}: status is one of local, synthetic, missing, would download,
    downloaded, failed. Raises PrefetchError for a name that is neither a path, a generated dataset, nor a hub id
    (checked for both names before anything is downloaded)."""
    model_source = locate(model, is_dataset=False)
    dataset_source = None if dataset is None else locate(dataset, is_dataset=True)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "transfer": enable_fast_transfer(),
        "cache": cache_dirs(),
    }

    item: dict[str, Any] = {"name": model, "revision": model_revision}
    if model_source == LOCAL:
        item.update(status=LOCAL, path=os.path.abspath(os.path.expanduser(model)), detail="local folder: nothing to do")
    elif model_source == MISSING:
        item.update(status=MISSING, detail=_missing_detail(model))
    elif dry_run:
        item.update(status=WOULD_DOWNLOAD, detail=f"would download from the hub into {report['cache']['models']}")
    else:
        try:
            item.update(status=DOWNLOADED, path=_download_model(model, model_revision), detail="in the hub cache")
        except Exception as err:  # every hub failure becomes a report line; main turns it into exit code 1
            item.update(status=FAILED, detail=_hub_failure("model", model, err))
    report["model"] = item

    if dataset is None:
        report["dataset"] = None
        return report
    item = {"name": dataset, "config": dataset_config}
    if dataset_source == SYNTHETIC:
        item.update(status=SYNTHETIC, detail="generated at run time: nothing to download")
    elif dataset_source == LOCAL:
        item.update(status=LOCAL, path=os.path.abspath(os.path.expanduser(dataset)), detail="local data: nothing to do")
    elif dataset_source == MISSING:
        item.update(status=MISSING, detail=_missing_detail(dataset))
    elif dry_run:
        item.update(
            status=WOULD_DOWNLOAD,
            detail=f"would download and prepare with datasets.load_dataset into {report['cache']['datasets']}",
        )
    else:
        try:
            item.update(status=DOWNLOADED, splits=_download_dataset(dataset, dataset_config), detail="in the cache")
        except Exception as err:  # as for the model
            item.update(status=FAILED, detail=_hub_failure("dataset", dataset, err))
    report["dataset"] = item
    return report


def report_ok(report: dict[str, Any]) -> bool:
    """True when every item is (or, in a dry run, would be) local or cached."""
    items = [report["model"], report["dataset"]]
    return all(item["status"] in OK_STATUSES for item in items if item is not None)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"cache: {report['cache']['hf_home']}   transfer: {report['transfer']}"]
    for kind in ("model", "dataset"):
        item = report[kind]
        if item is None:
            lines.append(f"{kind:<8} (none in the recipe)")
            continue
        name = item["name"] + (f" [{item['config']}]" if item.get("config") else "")
        lines.append(f"{kind:<8} {name}: {item['status']}: {item['detail']}")
        if item.get("path"):
            lines.append(f"{'':<8} at {item['path']}")
        if item.get("splits"):
            lines.append(f"{'':<8} rows per split: {item['splits']}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="aha download",
        allow_abbrev=False,  # a recipe override such as --js... must never be taken for one of ours
        description="Prefetch a recipe's model and dataset into the Hugging Face cache (HF_HOME). "
        "Any other flags are recipe overrides, as in `aha train` (e.g. --model_name_or_path ID).",
    )
    parser.add_argument("recipe", help="path of a YAML recipe, e.g. recipes/tiny/grpo-arith.yaml")
    parser.add_argument("--dry-run", action="store_true", help="say what would be fetched; download nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if not os.path.isfile(args.recipe):  # checked before importing trl, which loading a recipe pulls in
        raise PrefetchError(
            f"recipe file {args.recipe!r} does not exist; pass the path of a YAML recipe, "
            "e.g. recipes/tiny/grpo-arith.yaml."
        )
    from aha.recipe import load  # imported here: loading a recipe pulls in trl, which --help does not need

    # RecipeError and PrefetchError are AhaUserErrors: aha.cli prints the message and exits 2.
    # A local model folder an earlier stage builds is reported below (exit 1), not refused: the dataset is still worth
    # fetching.
    recipe = load(args.recipe, overrides, require_model=False)
    report = prefetch(
        recipe.model.model_name_or_path,
        recipe.dataset.dataset_name,
        recipe.dataset.dataset_config,
        dry_run=args.dry_run,
        model_revision=recipe.model.model_revision,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if report_ok(report):
        return 0
    print("aha download: not everything the recipe names is available; see the lines above.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha download`

    sys.exit(aha_main(["download", *sys.argv[1:]]))
