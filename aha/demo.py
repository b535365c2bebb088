"""`aha demo`: the CPU demo end to end, three stages, each a recipe under recipes/tiny/.

    aha demo                  # stages 0-3 below -> runs/demo/report.md   (make demo)
    aha demo --compare        # then GRPO on a second seed and continued SFT for the same time (make demo-compare)
    aha demo --warm-start-only                                           # stages 0-1 (make warmup)

  0. tiny model    `aha tiny --output <warm-up recipe's model_name_or_path>`        skipped when it exists
  1. warm start    `aha launch recipes/tiny/sft-warmup.yaml` (supervised, stopped early)  skipped when it exists
  2. GRPO          `aha launch recipes/tiny/grpo-arith.yaml` (model: stage 1's output)    a finished run is kept
  3. evaluation    `aha eval --baseline` (the warm start) and `aha eval --model <GRPO run>` on the GRPO recipe's
                   held-out set, side by side on two cores, then `aha report <GRPO run>`; an evaluation newer
                   than its model is kept
--compare, run once to answer "did reinforcement beat more supervision?" and "is the gain a lucky seed?":
  - the GRPO recipe again with `--seed 1`, into `<GRPO output_dir>-seed1`
  - `recipes/tiny/sft-continue.yaml` from the same warm start, for as many steps as fit in the minutes of training
    stage 2 took (`--max_steps`: GRPO's training time x the warm start's SFT steps per second, both measured on this
    machine), evaluated with the GRPO recipe's prompt, held-out set and rewards
The report of the GRPO run lists every comparison run that exists (`aha report RUN --compare DIR`).

The stages are chained by their recipes' paths, checked before anything runs (exit 2): the GRPO and SFT recipes must
start from the warm-up recipe's output_dir, and all three must generate the same data (one held-out set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.errors import AhaUserError
from aha.recipe import read_yaml
from aha.run_folder import MODEL_CONFIG, RunFolder

WARMUP_RECIPE = "recipes/tiny/sft-warmup.yaml"
GRPO_RECIPE = "recipes/tiny/grpo-arith.yaml"
SFT_RECIPE = "recipes/tiny/sft-continue.yaml"
COMPARE_SEED = 1


class DemoError(AhaUserError, ValueError):
    """The demo's recipes do not chain; the message names the recipe, the key and the fix."""


@dataclass(frozen=True)
class DemoPlan:
    warmup: str  # recipe paths
    grpo: str
    sft: str
    tiny_model: Path  # the warm-up recipe's model_name_or_path, built by `aha tiny` when missing
    warm_start: Path  # the warm-up recipe's output_dir = the GRPO and SFT recipes' model_name_or_path
    grpo_run: Path
    seed_run: Path
    sft_run: Path

    @property
    def compare_runs(self) -> list[Path]:
        return [self.seed_run, self.sft_run]


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def plan(warmup: str, grpo: str, sft: str) -> DemoPlan:
    """Read the three recipes and check that they chain; DemoError (or RecipeError for a bad file) otherwise."""
    docs = {path: read_yaml(path) for path in (warmup, grpo, sft)}
    for path, key in ((warmup, "model_name_or_path"), (warmup, "output_dir"), (grpo, "output_dir")):
        if not docs[path].get(key):
            raise DemoError(f"{path}: {key} must be set: the demo's stages are chained by their paths.")
    warm_start = docs[warmup]["output_dir"]
    for path in (grpo, sft):
        model = str(docs[path].get("model_name_or_path", ""))
        if not _same_path(model, warm_start):
            raise DemoError(
                f"{path}: model_name_or_path is {model!r}, but the warm start is written to {warm_start!r} "
                f"(output_dir of {warmup}); set model_name_or_path: ./{Path(warm_start)} so the stage starts from it."
            )
    generator = docs[grpo].get("dataset_generator")
    for path in (warmup, sft):
        if docs[path].get("dataset_generator") != generator or docs[path].get("dataset_name") != docs[grpo].get(
            "dataset_name"
        ):
            raise DemoError(
                f"{path}: dataset_name and dataset_generator must equal those of {grpo}: every stage must train on "
                "the same generated problems, so that one held-out set measures them all."
            )
    grpo_run = Path(docs[grpo]["output_dir"])
    sft_run = docs[sft].get("output_dir")
    if not sft_run:
        raise DemoError(f"{sft}: output_dir must be set.")
    return DemoPlan(
        warmup=warmup,
        grpo=grpo,
        sft=sft,
        tiny_model=Path(docs[warmup]["model_name_or_path"]),
        warm_start=Path(warm_start),
        grpo_run=grpo_run,
        seed_run=grpo_run.with_name(f"{grpo_run.name}-seed{COMPARE_SEED}"),
        sft_run=Path(sft_run),
    )


def _aha(*args: str, who: str = "aha demo") -> None:
    """One stage: `aha <args>` in its own process (each stage sets up torch threads and memory afresh); `who` names
    the demo in the line that shows the command."""
    command = [sys.executable, "-m", "aha.cli", *args]
    print(f"\n{who}: $ aha {' '.join(args)}", flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _aha_side_by_side(stages: list[list[str]]) -> None:
    """Independent stages (`aha <args>` each) at once, one process per core; each one's output when it ends.

    Why: an evaluation of the tiny model is fastest on one torch thread (see SMALL_MODEL_PARAMETERS in
    aha.evaluation.generation), so two of them side by side take the time of one on a 2-core machine. Each stage is
    held to one thread (OMP/MKL) so a larger model cannot make two processes fight over the cores; output is held back
    so progress bars do not interleave. With fewer cores than stages they run one after the other.
    """
    if len(stages) < 2 or _usable_cores() < len(stages):
        for args in stages:
            _aha(*args)
        return
    for args in stages:
        print(f"\naha demo: $ aha {' '.join(args)}", flush=True)
    print(f"aha demo: {len(stages)} stages side by side; their output follows as each ends", flush=True)
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[list[str], Any, subprocess.Popen]] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="aha-demo-") as folder:
        try:
            for index, args in enumerate(stages):
                log = open(Path(folder) / f"stage-{index}.log", "w+")  # noqa: SIM115 (closed below)
                command = [sys.executable, "-m", "aha.cli", *args]
                running.append(
                    (args, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=one_thread))
                )
            for args, log, process in running:
                code = process.wait()
                log.seek(0)
                print(f"\naha demo: output of $ aha {' '.join(args)}", flush=True)
                sys.stdout.write(_without_progress_bars(log.read()))
                sys.stdout.flush()
                failed = failed or code
        finally:  # Ctrl-C or a failed start: no stage keeps running behind the user's back
            for _, log, process in running:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()
    if failed:
        raise SystemExit(failed)


def _without_progress_bars(text: str) -> str:
    """Drop tqdm's carriage-return redraws: keep the last state of each line."""
    return "".join(line.rsplit("\r", 1)[-1] for line in text.splitlines(keepends=True))


def has_model(folder: Path) -> bool:
    return (folder / MODEL_CONFIG).is_file()


def is_fresh(result: Path, model: Path) -> bool:
    """An evaluation file written after the model's weights were (a retrained model needs a new evaluation)."""
    weights = RunFolder(model).weights_file
    return result.is_file() and weights.is_file() and result.stat().st_mtime > weights.stat().st_mtime


def train_time(run: Path) -> tuple[float, int]:
    """(seconds the run spent in training steps (TRL's train_runtime), steps done), from its summary.json."""
    summary_file = RunFolder(run).summary_file
    try:
        summary: dict[str, Any] = json.loads(summary_file.read_text())
        seconds, steps = float(summary["train_summary"]["train_runtime"]), int(summary["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DemoError(
            f"{summary_file} has no train_summary.train_runtime and global_step ({err}); run that stage first "
            "(aha demo)."
        ) from err
    return seconds, steps


def same_time_sft_steps(grpo_run: Path, warm_start: Path) -> int:
    """Continued-SFT steps that take as long as GRPO trained: GRPO's training seconds x the warm start's SFT steps
    per second. The control continues the warm start with its batch and sequence settings, so its steps cost what
    the warm start's did; counting steps keeps the control's length out of the hands of the clock under load."""
    grpo_seconds, _ = train_time(grpo_run)
    warm_seconds, warm_steps = train_time(warm_start)
    return max(1, round(grpo_seconds * warm_steps / warm_seconds))


def warm_start(p: DemoPlan, tiny_preset: str) -> None:
    if not has_model(p.tiny_model):
        _aha("tiny", "--output", str(p.tiny_model), "--preset", tiny_preset)
    if has_model(p.warm_start):
        print(f"aha demo: warm start cached in {p.warm_start} (delete it to train it again)", flush=True)
    else:
        _aha("launch", p.warmup)


def evaluate(p: DemoPlan, eval_args: list[str]) -> None:
    stages = []
    if not is_fresh(RunFolder(p.grpo_run).eval_file(baseline=True), p.warm_start):
        stages.append(["eval", "--baseline", "--recipe", p.grpo, *eval_args])
    if not is_fresh(RunFolder(p.grpo_run).eval_file(), p.grpo_run):
        stages.append(["eval", "--model", str(p.grpo_run), *eval_args])
    _aha_side_by_side(stages)


def compare(p: DemoPlan, eval_args: list[str]) -> None:
    if not has_model(p.seed_run):
        _aha("launch", p.grpo, "--seed", str(COMPARE_SEED), "--output_dir", str(p.seed_run))
    if not has_model(p.sft_run):
        steps = same_time_sft_steps(p.grpo_run, p.warm_start)
        minutes = train_time(p.grpo_run)[0] / 60
        print(f"aha demo: continued SFT gets GRPO's {minutes:.2f} min of training: {steps} steps", flush=True)
        _aha("launch", p.sft, "--max_steps", str(steps))
    stages = []
    if not is_fresh(RunFolder(p.seed_run).eval_file(), p.seed_run):
        stages.append(["eval", "--model", str(p.seed_run), *eval_args])
    if not is_fresh(RunFolder(p.sft_run).eval_file(), p.sft_run):
        # scored exactly like the GRPO run: its prompt, held-out set, rewards, token budget and temperature
        stages.append(["eval", "--model", str(p.sft_run), "--recipe", p.grpo, *eval_args])
    _aha_side_by_side(stages)


def report(p: DemoPlan) -> None:
    compared = [str(run) for run in p.compare_runs if RunFolder(run).eval_file().is_file()]
    _aha("report", str(p.grpo_run), *[arg for run in compared for arg in ("--compare", run)])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aha demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", default=WARMUP_RECIPE, help="stage 1 recipe (default: %(default)s)")
    p.add_argument("--grpo", default=GRPO_RECIPE, help="stage 2 recipe (default: %(default)s)")
    p.add_argument("--sft", default=SFT_RECIPE, help="continued-SFT comparison recipe (default: %(default)s)")
    p.add_argument("--compare", action="store_true", help="also train and evaluate the seed and SFT comparisons")
    p.add_argument("--warm-start-only", action="store_true", help="stop after stage 1")
    p.add_argument("--tiny-preset", default="demo", help="`aha tiny --preset` for stage 0 (default: %(default)s)")
    p.add_argument("--eval-n", type=int, help="evaluate the first N held-out problems (default: all)")
    p.add_argument("--eval-samples", type=int, help="samples per problem (default: aha eval's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    p = plan(args.warmup, args.grpo, args.sft)
    eval_args = [*(["--n", str(args.eval_n)] if args.eval_n else [])]
    eval_args += ["--samples", str(args.eval_samples)] if args.eval_samples is not None else []
    start = time.perf_counter()
    try:
        warm_start(p, args.tiny_preset)
        if args.warm_start_only:
            return 0
        _aha("launch", p.grpo)
        evaluate(p, eval_args)
        if args.compare:
            compare(p, eval_args)
        report(p)
    except SystemExit as stop:  # a stage failed; its own output said why
        return int(stop.code or 1)
    minutes = (time.perf_counter() - start) / 60
    print(f"\naha demo: done in {minutes:.1f} min; report -> {RunFolder(p.grpo_run).report_file}", flush=True)
    return 0


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha demo`

    sys.exit(aha_main(["demo", *sys.argv[1:]]))
