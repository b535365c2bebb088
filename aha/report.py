"""`aha report RUN_DIR`: what a run did, as a page a person can read: curves, before/after, sample completions.

    aha report runs/demo
    aha report runs/demo --compare runs/demo-seed1 --compare runs/tiny-sft-same-time
    make report RUN=runs/demo

Reads the run folder that `aha train` wrote (TensorBoard events under `tensorboard/`, `summary.json`, TRL's
`completions/*.parquet` when the recipe logs completions, `aha-samples.jsonl` from the aha-signals hook) and the
evaluations `aha eval` wrote into it (`eval-baseline.json` / `samples-baseline.jsonl` for the base model, `eval.json`
/ `samples.jsonl` for the trained one). `--compare DIR` (repeatable) adds other run folders, each with its own
eval.json and summary.json: another seed of the recipe, or another method trained for the same wall time.
Writes, into the run folder:
  plots/*.png   rewards (the weighted sum and each reward function), completion length and truncation, the
                optimisation (loss, grad norm, KL when logged, entropy, zero-variance groups, clipping), the aha
                signals (reflection phrases, length), and the before/after evaluation
  report.md     the plots with what to look for, the before/after table, the compared runs (with --compare), the
                same held-out problems answered by the base model and the trained one, the stability check of a
                GRPO run (the recipe's guards against collapse, entropy/length/format at the start and end, a
                verdict), sample completions from the start, middle and end of training
  comparison.json  with --compare: the compared-runs table for scripts ({"keys", "columns": [{"label", "folder",
                "trainer", "seed", "steps", "train_minutes", "stopped_by", "metrics"}], "mismatches"})
  README.md     the model card of the trained model in that folder (recipe, metrics, curves); `--no-model-card`
                leaves an existing README.md alone
Missing pieces (no evaluation yet, no completions logged) are said in the report, not errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aha.reporting.card import CardFacts, model_card
from aha.reporting.comparison import Comparison, check_compare_dirs, compare_runs, comparison_json, comparison_markdown
from aha.reporting.evals import eval_description, eval_mismatches, eval_table
from aha.reporting.plots import Plot, draw, draw_eval, run_plots
from aha.reporting.problems import SameProblems, same_problems, same_problems_markdown
from aha.reporting.runs import (
    ReportError,
    Series,
    effective_recipe,
    event_files,
    read_json,
    read_scalars,
    recipe_text,
    train_tag,
)
from aha.reporting.samples import Sample, completion_samples, samples_markdown
from aha.reporting.stability import Stability, stability, stability_markdown
from aha.run_folder import (
    BASELINE_EVAL_FILE,
    COMPARISON_FILE,
    EVAL_FILE,
    MODEL_CARD_FILE,
    PLOTS_SUBDIR,
    REPORT_FILE,
    RunFolder,
    write_json_atomic,
    write_text_atomic,
)

# ----------------------------------------------------------------------------------------------------------------
# report.md and the model card


@dataclass
class RunReport:
    run_dir: Path
    summary: dict[str, Any]
    recipe_path: str | None
    recipe_yaml: str | None
    scalars: dict[str, Series]
    plots: list[tuple[Plot, Path]]
    eval_plot: Path | None
    baseline: dict[str, Any] | None
    trained: dict[str, Any] | None
    samples_source: str | None
    samples: dict[int, list[Sample]]
    same: SameProblems | None = None
    stability: Stability | None = None  # None: not a GRPO run
    comparison: Comparison | None = None  # None: no --compare

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    @property
    def recipe(self) -> dict[str, Any]:
        """The recipe's settings as the run used them."""
        return effective_recipe(self.recipe_yaml, self.summary)


def collect(run_dir: Path, compare: Sequence[str | Path] = ()) -> RunReport:
    """Read everything the report shows and draw the plots (into RUN_DIR/plots); `compare`: other run folders to
    put next to this one."""
    if not run_dir.is_dir():
        raise ReportError(f"run folder {str(run_dir)!r} does not exist; pass the output_dir of a run (runs/<name>).")
    compare_dirs = check_compare_dirs(compare)  # before the slow drawing: a typo fails at once
    summary = read_json(RunFolder(run_dir).summary_file) or {}
    files = event_files(run_dir, summary)
    scalars = read_scalars(files)
    if not summary and not scalars:
        raise ReportError(
            f"{run_dir} holds neither summary.json nor TensorBoard events: is it a run folder (a recipe's "
            "output_dir after `aha train`)?"
        )
    recipe_path, recipe_yaml = recipe_text(run_dir, summary)
    plots_dir = run_dir / PLOTS_SUBDIR
    plots = [(plot, draw(plot, scalars, plots_dir / f"{plot.name}.png")) for plot in run_plots(scalars)]
    baseline = read_json(run_dir / BASELINE_EVAL_FILE)
    trained = read_json(run_dir / EVAL_FILE)
    eval_plot = draw_eval(baseline, trained, plots_dir / "eval.png")
    source, samples = completion_samples(run_dir)
    return RunReport(
        run_dir,
        summary,
        recipe_path,
        recipe_yaml,
        scalars,
        plots,
        eval_plot,
        baseline,
        trained,
        source,
        samples,
        same=same_problems(run_dir, recipe_path),
        stability=stability(scalars, effective_recipe(recipe_yaml, summary)),
        comparison=compare_runs(run_dir, baseline, compare_dirs) if compare_dirs else None,
    )


def _final(scalars: dict[str, Series], name: str) -> float | None:
    points = scalars.get(train_tag(name))
    return points[-1][1] if points else None


def evaluation_markdown(report: RunReport) -> str:
    baseline, trained = report.baseline, report.trained
    if baseline is None and trained is None:
        return (
            "No evaluation yet. Measure the base model and the trained one on the held-out set:\n\n"
            f"```bash\naha eval --baseline --recipe {report.recipe_path or 'RECIPE'}\n"
            f"aha eval --model {report.run_dir}\n```"
        )
    parts = []
    for label, result in (("Base model", baseline), ("Trained", trained)):
        if result is not None:
            parts.append(f"- {label}: {eval_description(result)}")
    if baseline is None:
        parts.append(f"- Base model: not evaluated (`aha eval --baseline --recipe {report.recipe_path or 'RECIPE'}`)")
    if trained is None:
        parts.append(f"- Trained: not evaluated (`aha eval --model {report.run_dir}`)")
    if baseline is not None and trained is not None:
        for problem in eval_mismatches(baseline, trained):
            parts.append(f"- **Not comparable as is:** {problem}")
    parts.append("\n" + eval_table(baseline, trained))
    if report.eval_plot is not None:
        parts.append(f"\n![held-out evaluation]({report.relative(report.eval_plot)})")
    parts.append(
        "\nRates are shares of the held-out problems (± one standard error); pass@k and maj@k use the sampled "
        "completions, greedy pass@1 the greedy one (see `aha eval --help`)."
    )
    return "\n".join(parts)


def run_facts(report: RunReport) -> list[tuple[str, str]]:
    summary, recipe = report.summary, report.recipe
    facts = [
        ("run folder", str(report.run_dir)),
        ("recipe", report.recipe_path or str(summary.get("recipe", "unknown"))),
        ("base model", str(summary.get("model") or recipe.get("model_name_or_path", "unknown"))),
        ("dataset", str(summary.get("dataset") or recipe.get("dataset_name", "unknown"))),
        ("trainer", str(summary.get("trainer") or recipe.get("trainer", "unknown"))),
    ]
    if "global_step" in summary:
        facts.append(("steps", f"{summary['global_step']} of {summary.get('max_steps')}"))
    if "wall_time_s" in summary:
        minutes = summary["wall_time_s"] / 60
        facts.append(("wall time", f"{minutes:.1f} min on {summary.get('processes', 1)} process(es)"))
    if summary.get("resumed_from"):
        facts.append(("resumed from", str(summary["resumed_from"])))
    return facts


def report_markdown(report: RunReport) -> str:
    name = report.run_dir.name
    parts = [f"# Run report: {name}", ""]
    parts += [f"- {key}: `{value}`" for key, value in run_facts(report)]
    parts += ["", "## Before and after (held-out set)", "", evaluation_markdown(report), ""]
    if report.comparison is not None:
        parts += ["## Compared runs", "", comparison_markdown(report.comparison, report.recipe_path), ""]
    if report.same is not None:
        parts += ["## Same problems, before and after", "", same_problems_markdown(report.same), ""]
    parts += ["## Training curves", ""]
    if not report.plots:
        parts.append(f"No TensorBoard events under {report.run_dir} (the recipe needs `report_to: [tensorboard]`).")
    for plot, path in report.plots:
        parts += [f"### {plot.title}", "", plot.caption, "", f"![{plot.title}]({report.relative(path)})", ""]
    if report.stability is not None:
        used = RunFolder(report.run_dir).recipe_file()
        source = used.name if used is not None and used.parent == report.run_dir else report.recipe_path
        parts += ["## Stability", "", stability_markdown(report.stability, source), ""]
    parts += ["## Sample completions", "", samples_markdown(report.samples_source, report.samples), ""]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    parts.append(f"_Written by `aha report {report.run_dir}` at {stamp}._")
    return "\n".join(parts) + "\n"


def card_facts(report: RunReport) -> CardFacts:
    """The model card's facts for the trained model in the run folder."""
    final = [(k, _final(report.scalars, k)) for k in ("reward", "entropy", "completions/mean_length")]
    return CardFacts(
        name=report.run_dir.name,
        model_ref=str(report.run_dir),
        recipe_source=report.recipe_path or report.summary.get("recipe"),
        recipe=report.recipe,
        recipe_yaml=report.recipe_yaml,
        summary=report.summary,
        baseline=report.baseline,
        trained=report.trained,
        plots=[(plot.title, report.relative(path)) for plot, path in report.plots],
        last_logged=[(k, v) for k, v in final if v is not None],
        adapter=bool(report.recipe.get("use_peft")),
        links=[f"Full report: [{REPORT_FILE}]({REPORT_FILE})."],
    )


def write_report(run_dir: str | Path, *, card: bool = True, compare: Sequence[str | Path] = ()) -> RunReport:
    """Write report.md (and the model card unless `card` is False) into `run_dir`, and comparison.json when
    `compare` names other run folders; return what was collected."""
    report = collect(Path(run_dir), compare)
    folder = RunFolder(report.run_dir)
    write_text_atomic(folder.report_file, report_markdown(report))
    if report.comparison is not None:
        write_json_atomic(folder.comparison_file, comparison_json(report.comparison))
    if card:
        write_text_atomic(folder.model_card, model_card(card_facts(report)))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aha report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder (the recipe's output_dir), e.g. runs/demo")
    parser.add_argument("--no-model-card", action="store_true", help="leave README.md in the run folder alone")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="DIR",
        help="another run folder to put next to this one (repeatable): report.md's 'Compared runs' table and "
        f"RUN_DIR/{COMPARISON_FILE}",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = write_report(args.run_dir, card=not args.no_model_card, compare=args.compare)
    print(f"aha report: {len(report.plots) + (report.eval_plot is not None)} plots -> {report.run_dir / PLOTS_SUBDIR}")
    print(f"aha report: report -> {report.run_dir / REPORT_FILE}")
    if report.comparison is not None:
        print(f"aha report: comparison -> {report.run_dir / COMPARISON_FILE}")
    if not args.no_model_card:
        print(f"aha report: model card -> {report.run_dir / MODEL_CARD_FILE}")
    return 0


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha report`

    sys.exit(aha_main(["report", *sys.argv[1:]]))
