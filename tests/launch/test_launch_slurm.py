"""scripts/slurm/train.slurm under a simulated Slurm job: a stand-in `srun` runs the script's command once per node
with that node's SLURM_NODEID, so each node's `aha launch` plans its own role (here with --dry-run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, write_recipe
from tests.launch.conftest import REWARD

SCRIPT = REPO / "scripts" / "slurm" / "train.slurm"

# Records its arguments (one call per line); runs the command once per node unless a container image is asked for.
FAKE_SRUN = """#!/bin/bash
echo "$*" >> "$SRUN_RECORD"
[[ "$*" == *--container-image=* ]] && exit 0
while [[ "$1" == --* ]]; do shift; done  # srun's own options
for ((node = 0; node < SLURM_JOB_NUM_NODES; node++)); do
    SLURM_NODEID=$node "$@" > "$SRUN_RECORD.node$node" || exit $?
done
"""
FAKE_APPTAINER = """#!/bin/bash
echo "$*" >> "$SRUN_RECORD.apptainer"
"""


def test_script_is_valid_bash_without_site_specific_lines():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    directives = [line for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert not [d for d in directives if any(k in d for k in ("--partition", "--account", "--qos", "-p ", "-A "))]
    code = [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not re.search(r"\b(grep|awk|sed|yq|cut)\b", "\n".join(code))  # the planner reads the recipe, not shell
    # bash < 4.4 under `set -u` fails on "${EMPTY[@]}": the arrays that may be empty are expanded guarded
    for array in ("CONTAINER", "WRAP"):
        bare = [line for line in code if f'"${{{array}[@]}}"' in line and f"${{{array}[@]+" not in line]
        assert not bare, bare


@pytest.fixture
def slurm_job(tmp_path, tiny_model):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("apptainer", FAKE_APPTAINER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    recipe = write_recipe(
        tmp_path,
        "tiny/grpo-arith.yaml",
        drop=("reward_weights", "reward_options"),
        model_name_or_path=str(tiny_model),
        output_dir=str(tmp_path / "run"),
        reward_funcs=[REWARD],
        gpus_per_node=8,
        use_cpu=False,
        use_vllm=True,
        vllm_mode="server",
        per_device_train_batch_size=8,
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "AHA": str(Path(sys.executable).parent / "aha"),
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_CPUS_ON_NODE": "96",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SRUN_RECORD": str(tmp_path / "srun"),
    }
    for name in ("AHA_IMAGE", "AHA_SIF", "AHA_HF_CACHE", "HF_HUB_OFFLINE"):
        env.pop(name, None)
    return recipe, env, tmp_path / "srun"


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_each_node_plans_its_role(slurm_job):
    recipe, env, record = slurm_job
    done = run_script(env, str(recipe), "--vllm_server_data_parallel_size", "8", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    srun_args = record.read_text().split()
    assert "--kill-on-bad-exit=1" in srun_args and "--ntasks-per-node=1" in srun_args
    assert "--cpus-per-task=96" in srun_args  # every CPU of the node, not srun's default of one per task
    plans = [json.loads(Path(f"{record}.node{node}").read_text()) for node in (0, 1)]
    assert [p["role"] for p in plans] == ["trainer", "vllm"]
    assert all(p["nodes"] == ["gpu07", "gpu08"] for p in plans)
    assert plans[0]["trainer"]["num_processes"] == 8
    assert plans[0]["vllm"]["host"] == "gpu08"


@pytest.mark.e2e
def test_a_bad_recipe_stops_before_srun(slurm_job):
    recipe, env, record = slurm_job
    # 2 nodes x 8 GPUs: the last node serves with tensor x data parallel 1 x 1, not its 8 GPUs
    done = run_script(env, str(recipe))
    assert done.returncode == 2
    assert "vllm_server_tensor_parallel_size" in done.stderr
    assert not record.exists()  # no node was started


def test_pyxis_image_mode_starts_the_image_on_every_node(slurm_job, tmp_path):
    recipe, env, record = slurm_job
    env = {**env, "AHA_IMAGE": "/shared/aha.sqsh", "AHA_HF_CACHE": "/shared/hf"}
    env["SLURM_SUBMIT_DIR"] = str(tmp_path)  # runs/ is created here
    done = run_script(env, str(recipe))
    assert done.returncode == 0, done.stderr
    preflight, launch = (line.split() for line in record.read_text().splitlines())
    image = [
        "--container-image=/shared/aha.sqsh",
        f"--container-mounts=/shared/hf:/cache/huggingface,{tmp_path}/runs:/opt/aha/runs",
        "--container-workdir=/opt/aha",
    ]
    assert preflight == ["--nodes=1", "--ntasks=1", *image, "/opt/venv/bin/aha", "launch", str(recipe), "--dry-run"]
    assert launch == [
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=96",
        "--kill-on-bad-exit=1",
        *image,
        "/opt/venv/bin/aha",
        "launch",
        str(recipe),
    ]
    assert (tmp_path / "runs").is_dir()


def test_apptainer_image_mode_wraps_the_command(slurm_job, tmp_path):
    recipe, env, record = slurm_job
    env = {**env, "AHA_SIF": "/shared/aha.sif", "SLURM_SUBMIT_DIR": str(tmp_path)}
    done = run_script(env, str(recipe))
    assert done.returncode == 0, done.stderr
    calls = Path(f"{record}.apptainer").read_text().splitlines()
    wrap = f"exec --nv --pwd /opt/aha --bind {tmp_path}/runs:/opt/aha/runs /shared/aha.sif /opt/venv/bin/aha launch"
    # the pre-flight on the batch node, then once per node under srun
    assert calls == [f"{wrap} {recipe} --dry-run", f"{wrap} {recipe}", f"{wrap} {recipe}"]
    assert "--kill-on-bad-exit=1" in record.read_text()
