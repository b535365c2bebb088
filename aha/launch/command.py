"""`aha launch`'s command line: parse, detect the topology, load and check the recipe for it, plan, pre-flight, run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from aha.launch import hardware
from aha.launch.errors import EXIT_PREFLIGHT, LaunchError
from aha.launch.plan import DEFAULT_MAIN_PORT, Plan, describe, make_plan
from aha.launch.preflight import missing_packages, preflight, required_packages
from aha.launch.processes import Runner
from aha.recipe import Recipe, RecipeError, accelerate_config_path, launch_section, load, read_yaml
from aha.topology import Topology, uses_vllm_server

DEFAULT_SERVER_TIMEOUT_S = 900.0  # when neither the flag nor the recipe's vllm_server_timeout says


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aha launch",
        allow_abbrev=False,
        description="Plan and run a recipe. Flags below are the launcher's; any other --key value overrides the "
        "recipe (e.g. --max_steps 5).",
    )
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny/grpo-arith.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit 0; start nothing")
    parser.add_argument("--nodes", type=int, help="nodes of the run (default: Slurm's, else the recipe's num_nodes)")
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        help="GPUs per node; the only way to run on another count than the recipe's gpus_per_node (the global batch "
        "changes with it)",
    )
    parser.add_argument("--accelerate-config", help="override the recipe's accelerate_config (ddp, zero2, zero3, ...)")
    parser.add_argument("--hosts", help="multi-node outside Slurm: host names, node 0 first, the vLLM node last")
    parser.add_argument("--node-rank", type=int, help="multi-node outside Slurm: this node's index in --hosts")
    parser.add_argument("--main-port", type=int, help=f"rendezvous port (default {DEFAULT_MAIN_PORT} or a free one)")
    parser.add_argument(
        "--server-timeout",
        type=float,
        help=f"seconds to wait for vLLM's /health (default: the recipe's vllm_server_timeout when it sets one, "
        f"else {DEFAULT_SERVER_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=120.0, help="seconds the ranks get to save after SIGTERM before SIGKILL"
    )
    parser.add_argument(
        "--health-interval", type=float, default=5.0, help="seconds between health checks of the vLLM server"
    )
    return parser


def _check_flags(flags: argparse.Namespace, overrides: Sequence[str]) -> None:
    bad = [arg for arg in overrides if arg.startswith("--") and "-" in arg[2:].split("=")[0]]
    if bad:
        raise LaunchError(
            bad[0], "is neither a launcher flag (see --help) nor a recipe key (recipe keys use underscores)."
        )
    for key in ("nodes", "gpus_per_node"):
        value = getattr(flags, key)
        if value is not None and value < (1 if key == "nodes" else 0):
            raise LaunchError(f"--{key.replace('_', '-')}", f"must be >= {1 if key == 'nodes' else 0}, got {value}.")
    if flags.accelerate_config and accelerate_config_path(flags.accelerate_config) is None:
        raise LaunchError(
            "--accelerate-config", f"{flags.accelerate_config!r} is neither a name in accelerate_configs/ nor a file."
        )


def _server_mode(path: str, overrides: Sequence[str]) -> bool:
    """Whether the recipe (with overrides) runs a vLLM server, read before the whole recipe is parsed."""
    config = read_yaml(path)
    values = dict(config)
    for index, arg in enumerate(overrides):
        key = arg[2:].split("=")[0] if arg.startswith("--") else None
        if key in ("use_vllm", "vllm_mode"):
            value = arg.split("=", 1)[1] if "=" in arg else (overrides[index + 1] if index + 1 < len(overrides) else "")
            values[key] = value.lower() == "true" if key == "use_vllm" else value
    if config.get("trainer") == "async_grpo":  # always a separate server (aha.async_grpo)
        return True
    return config.get("trainer") == "grpo" and uses_vllm_server(argparse.Namespace(**values))


def plan_from_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[Plan, Recipe, Topology]:
    """Parse, detect, load and check; raises RecipeError or LaunchError (exit 2)."""
    environ = os.environ if environ is None else environ
    flags, overrides = build_parser().parse_known_args(list(argv))
    _check_flags(flags, overrides)
    read_yaml(flags.recipe)  # a missing or broken file is reported before anything else
    launch = launch_section(flags.recipe, overrides)
    topology = hardware.detect(flags, launch, _server_mode(flags.recipe, overrides), environ)
    planned = ["--num_nodes", str(topology.nodes), "--gpus_per_node", str(topology.gpus_per_node)]
    if flags.accelerate_config:
        planned += ["--accelerate_config", flags.accelerate_config]
    try:
        # a dry run may plan a stage whose model an earlier stage builds (the warm start)
        recipe = load(flags.recipe, [*overrides, *planned], require_model=not flags.dry_run)
    except RecipeError as err:
        message = str(err).removeprefix(f"{err.key}: ") if err.key else str(err)
        raise RecipeError(err.key, f"{message} [plan: {topology.describe()}, from {topology.source}]") from err
    recipe.overrides = list(overrides)  # the user's; the plan's topology is the launcher's, not an override
    plan = make_plan(recipe, flags.recipe, overrides, topology, flags, environ)
    preflight(recipe, plan, topology, environ, flags.dry_run)
    if flags.dry_run:
        missing = missing_packages(required_packages(recipe, topology.cpu, plan.trainer.accelerate_config))
        plan.notes += [f"needs {m.package} for {m.key}, not installed here: {m.install}" for m in missing]
    return plan, recipe, topology


def server_timeout(flags: argparse.Namespace, recipe: Recipe) -> float:
    """--server-timeout, else the recipe's vllm_server_timeout when it sets one (YAML or override), else 900 s."""
    if flags.server_timeout is not None:
        return flags.server_timeout
    explicit = "vllm_server_timeout" in read_yaml(recipe.path) or any(
        o.startswith("--vllm_server_timeout") for o in recipe.overrides
    )
    return float(recipe.training.vllm_server_timeout) if explicit else DEFAULT_SERVER_TIMEOUT_S


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser().print_usage(sys.stderr)
        return EXIT_PREFLIGHT
    if argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    flags, _ = build_parser().parse_known_args(argv)
    plan, recipe, topology = plan_from_args(argv)  # RecipeError, LaunchError: aha.cli prints them and exits 2
    if flags.dry_run:
        print(plan.to_json())
        return 0
    for line in describe(plan, topology):
        print(f"aha launch: {line}", file=sys.stderr, flush=True)
    runner = Runner(plan, server_timeout(flags, recipe), flags.stop_timeout, flags.health_interval)
    return runner.run()
