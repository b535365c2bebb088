# aha on GPU nodes: one image for every node of a run (Docker, Slurm through enroot/pyxis or apptainer, SkyPilot).
#
#   make docker-build                                   # docker build -t aha:latest .
#   docker run --rm --gpus all --ipc=host -v ~/.cache/huggingface:/cache/huggingface aha:latest check RECIPE
#   docker run ... --entrypoint make aha:latest train RECIPE=recipes/...   # the Makefile works inside the image
#
# Needs BuildKit (the default builder since Docker 23; `DOCKER_BUILDKIT=1` on 20.10) for the build-only secret below.
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a build needs no registry for it.
# `make docker-smoke` builds this file on a local Debian base and runs it without a GPU (docs/docker.md).
#
# Versions come from pyproject.toml only: the image installs this repo with its `gpu` extra, never a second list.
#
# Base image: nvidia/cuda:13.0.3-devel-ubuntu24.04, because
# - torch 2.13.0 (pinned in pyproject.toml; vllm 0.31.0 pins the same) is built for CUDA 13.0 on PyPI: its wheel
#   requires cuda-toolkit==13.0.3 (and nvidia-cudnn-cu13, nvidia-nccl-cu13), which pip installs as wheels. The base
#   image's CUDA 13.0.3 toolkit matches it, so kernels compiled at run time target the same CUDA as torch.
# - devel rather than runtime/base: DeepSpeed builds its fused ops on first use, and Triton and FlashInfer (vLLM's
#   sampler and attention) compile kernels at run time; they need nvcc, a C/C++ compiler and the Python headers.
#   vLLM's own image uses a devel base for the same reason. The same need keeps this a single stage: a slimmer final
#   stage would have to carry the compilers anyway, and the pip wheels (torch, CUDA libraries, vLLM) are the bulk.
# - Ubuntu 24.04 ships Python 3.12, inside pyproject's requires-python (>=3.11,<3.13), with no third-party apt source.
#   PYTHON names the interpreter's apt packages and binary: python3.11 on a Debian bookworm base (make docker-smoke).
# - Host: an NVIDIA driver that supports CUDA 13.0 (>= 580) and the NVIDIA Container Toolkit (or enroot/apptainer).
ARG CUDA_IMAGE=nvidia/cuda:13.0.3-devel-ubuntu24.04
FROM ${CUDA_IMAGE}
ARG PYTHON=python3.12

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# Python, make (the image runs `make train`), compilers for run-time kernel builds, and the rdma-core user-space
# libraries: with them NCCL uses InfiniBand/RoCE between nodes, without them it falls back to TCP sockets.
# Versions of apt packages are left to the base image's Ubuntu release (DL3008): pinning Debian revisions breaks the
# build each time Ubuntu publishes a security update, and the Python stack is pinned by pyproject.toml.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "${PYTHON}" "${PYTHON}-venv" "${PYTHON}-dev" build-essential make git ca-certificates \
        libibverbs1 librdmacm1 ibverbs-providers \
    && rm -rf /var/lib/apt/lists/*

# A non-root user, uid 1000 (the first user on most hosts, so bind-mounted caches and run folders stay writable).
# Ubuntu 24.04 images already hold uid 1000 as `ubuntu`; it is replaced. The user owns the HF cache and the project
# folder /opt/aha, where runs/ and artifacts/ are written when no host folder is mounted there.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && groupadd --gid 1000 aha \
    && useradd --create-home --uid 1000 --gid 1000 --shell /bin/bash aha \
    && mkdir -p /cache/huggingface /opt/aha \
    && chown -R aha:aha /cache /opt/aha

# The virtual environment the Makefile is pointed at (MAKEFLAGS below). Owned by root: the stack is read-only at
# run time, so a run cannot drift from the pins.
ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:${PATH}
RUN "${PYTHON}" -m venv /opt/venv

WORKDIR /opt/aha

# Layer 1, the pinned stack (several GB of CUDA wheels): rebuilt only when pyproject.toml changes. The project
# itself is stubbed so that `pip install .[gpu]` resolves exactly pyproject.toml's pins; the real source replaces it
# below.
# DL3013 asks for `pkg==version` in pip installs: here the versions are pyproject.toml's exact pins, on purpose not
# restated.
# pip_cert, a build-only secret (never in a layer): the CA bundle of a machine whose TLS to the package index goes
# through a proxy, `docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt`. Absent: pip's own.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip_cert \
    mkdir aha rewards \
    && touch aha/__init__.py rewards/__init__.py README.md \
    && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-cache-dir '.[gpu]' \
    && rm -rf aha rewards README.md build ./*.egg-info

# flash-attn is optional: recipes run with the default attention (sdpa). Building it from source takes hours, so it
# only comes as a prebuilt wheel for torch 2.13 / CUDA 13 / cp312 / x86_64, passed as a URL:
#   docker build --build-arg FLASH_ATTN_WHEEL=https://.../flash_attn-...-cp312-cp312-linux_x86_64.whl .
# Unpinned by design (DL3013): the wheel file named here is the pin.
ARG FLASH_ATTN_WHEEL=""
# hadolint ignore=DL3013
RUN if [ -n "${FLASH_ATTN_WHEEL}" ]; then pip install --no-cache-dir --no-deps "${FLASH_ATTN_WHEEL}"; fi

# Layer 2, the project: source, Makefile, recipes/, accelerate_configs/, scripts/. Editable, so a checkout
# bind-mounted over /opt/aha runs its own code on the image's stack. The Makefile's install stamp is written after
# the install, newer than pyproject.toml, so `make train` inside the image never reinstalls.
# The build backend (setuptools) is fetched for the install, hence the same secret.
COPY --chown=aha:aha . .
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-cache-dir --no-deps --editable . \
    && touch /opt/venv/.installed-base \
    && aha --help >/dev/null

# HF_HOME on a volume: mount a host or shared-filesystem cache here (prefetched once with `aha download RECIPE`), then
# nodes can run with HF_HUB_OFFLINE=1.
# Fast hub transfers: the pinned huggingface_hub (1.x) downloads through hf_xet, whose high-performance mode is
# HF_XET_HIGH_PERFORMANCE=1. HF_HUB_ENABLE_HF_TRANSFER is not set: huggingface_hub 1.x no longer uses hf_transfer
# and only warns about that variable.
# MAKEFLAGS: every `make` in the image uses /opt/venv (the Makefile's VENV), whatever folder it runs in.
ENV HF_HOME=/cache/huggingface \
    HF_XET_HIGH_PERFORMANCE=1 \
    PYTHONUNBUFFERED=1 \
    MAKEFLAGS="VENV=/opt/venv"
VOLUME ["/cache/huggingface"]

# numeric (aha's uid and gid): Kubernetes' runAsNonRoot can only verify a numeric user
USER 1000:1000
ENTRYPOINT ["aha"]
CMD ["--help"]
