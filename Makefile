# Every target that needs Python depends on the venv stamp, so on a fresh clone
# `make train SEED=42` and `make test` are the only two commands a user needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

# Run knobs (documented in README "Command line").
SEED        ?=
PROFILE     ?=
CONFIG      ?= configs/default.yaml
OUTPUT_DIR  ?=
RESUME      ?=
ARGS        ?=
NPROC       ?= 1
NNODES      ?= 1
NODE_RANK   ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
RDZV        ?= static
MAX_RESTARTS ?= 0
TESTS       ?= tests
PYTEST_ARGS ?=

# Variables that must exist before the interpreter (and CUDA) start: setting them inside
# train.py would be too late for this process. torchrun passes them on to every rank.
export PYTHONHASHSEED ?= 0
export CUBLAS_WORKSPACE_CONFIG ?= :4096:8
export PYTHONUNBUFFERED := 1

TRAIN_FLAGS = --config $(CONFIG) \
	$(if $(SEED),--seed $(SEED)) \
	$(if $(PROFILE),--profile $(PROFILE)) \
	$(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR)) \
	$(if $(RESUME),--resume $(RESUME)) \
	$(ARGS)

# A plain interpreter for one process; torchrun as soon as there is more than one
# process, more than one node, or restarts to supervise.
ifeq ($(NNODES),1)
TORCHRUN_TOPOLOGY = --standalone --nproc_per_node=$(NPROC)
else ifeq ($(RDZV),c10d)
TORCHRUN_TOPOLOGY = --nnodes=$(NNODES) --nproc_per_node=$(NPROC) --rdzv-backend=c10d \
	--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT) --rdzv-id=$(or $(RDZV_ID),template)
else
TORCHRUN_TOPOLOGY = --nnodes=$(NNODES) --node-rank=$(NODE_RANK) --nproc_per_node=$(NPROC) \
	--master-addr=$(MASTER_ADDR) --master-port=$(MASTER_PORT)
endif
ifeq ($(NPROC)$(NNODES)$(MAX_RESTARTS),110)
LAUNCH = $(PY)
else
LAUNCH = $(VENV)/bin/torchrun $(TORCHRUN_TOPOLOGY) --max-restarts=$(MAX_RESTARTS)
endif

.PHONY: help setup train verify benchmark compare bench-speed bench-invariance bench-health diagnose docker-build docker-train docker-test docker-shell hadolint bench-seeding test test-fast lint lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock requirements-dev.lock
	@test -n "$(PYTHON_BOOT)" || { echo "error: python3.11 not found" >&2; exit 1; }
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
		echo "warning: $(PYTHON_BOOT) is not Python 3.11; the pins were made for 3.11" >&2
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $(STAMP)

setup: $(STAMP) ## Create .venv from the lock (re-installs only when the lock changes)

train: $(STAMP) ## Train: make train SEED=42 [PROFILE=eval] [NPROC=2] [CONFIG=..] [ARGS="k=v"]
	$(LAUNCH) train.py $(TRAIN_FLAGS)

verify: $(STAMP) ## Train twice and compare losses and weights bitwise: make verify SEED=42 PROFILE=debug
	$(PY) -m tools.verify --nproc $(NPROC) -- $(TRAIN_FLAGS)

SEEDS       ?=
JOBS        ?= 1
benchmark: $(STAMP) ## Several seeds -> mean ± std report: make benchmark SEEDS="0 1 2 3 4" [PROFILE=eval] [JOBS=2]
	$(PY) -m tools.benchmark --seeds $(SEEDS) --profile $(or $(PROFILE),eval) --config $(CONFIG) \
		--output-dir $(or $(OUTPUT_DIR),runs) --jobs $(JOBS) --nproc $(NPROC) -- $(ARGS)

A           ?=
B           ?=
METRICS     ?=
compare: $(STAMP) ## Is B better than A? Seed-paired: make compare A="k=v .." B="k=v .." SEEDS="0 1 2 3 4"
	$(PY) -m tools.compare --a "$(A)" --b "$(B)" --seeds $(SEEDS) --profile $(or $(PROFILE),eval) \
		--config $(CONFIG) --output-dir $(or $(OUTPUT_DIR),runs/compare) --jobs $(JOBS) --nproc $(NPROC) \
		$(if $(METRICS),--metrics $(METRICS)) -- $(ARGS)

diagnose: $(STAMP) ## Print every seed stream per rank and check it against the plan: make diagnose NPROC=2
	$(LAUNCH) -m tools.diagnose $(if $(SEED),--seed $(SEED))

bench-seeding: $(STAMP) ## Measure per-sample augmentation seeding (us/sample, share of loading time)
	$(PY) -m tools.bench_seeding

bench-speed: $(STAMP) ## Template vs a plain PyTorch loop, per profile (samples/s, first step): writes runs/bench-speed/
	$(PY) -m tools.speed $(ARGS)

bench-invariance: $(STAMP) ## World-size-invariant mode vs DDP: ms/step and bytes per step at W=2 and W=1
	$(PY) -m tools.bench_invariance $(ARGS)

bench-health: $(STAMP) ## Cost of the fault checks: ms/step without them, production, debug; the vote at W=2
	$(PY) -m tools.bench_health $(ARGS)

test: $(STAMP) ## Run the test suite (what CI runs)
	$(PY) -m pytest $(TESTS) $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest $(TESTS) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, import-linter (the layer contracts) and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

# ----------------------------------------------------------------------------- container
IMAGE       ?= reproducible-ddp-template:latest
BASE_IMAGE  ?= pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
HOST_RUNS   ?= $(abspath $(or $(OUTPUT_DIR),runs))
HOST_DATA   ?= $(abspath datasets)
GPUS        ?= all
# The container never runs as root: the caller's ids, or 1000 when the caller is root.
CONTAINER_UID ?= $(if $(filter 0,$(shell id -u)),1000,$(shell id -u))
CONTAINER_GID ?= $(if $(filter 0,$(shell id -u)),1000,$(shell id -g))
# --ipc=host: DataLoader workers share batches through /dev/shm, which is 64 MB by default.
# --user: files written to the mounted run and dataset folders belong to the calling user.
DOCKER_RUN = docker run --rm --gpus $(GPUS) --ipc=host --user $(CONTAINER_UID):$(CONTAINER_GID) \
	-v $(HOST_RUNS):/workspace/runs -v $(HOST_DATA):/workspace/datasets
CONTAINER_FLAGS = --config $(CONFIG) $(if $(SEED),--seed $(SEED)) $(if $(PROFILE),--profile $(PROFILE)) \
	--output-dir runs $(if $(RESUME),--resume $(RESUME)) $(ARGS)

docker-build: ## Build the image (BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime)
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg USER_UID=$(CONTAINER_UID) \
		--build-arg USER_GID=$(CONTAINER_GID) --build-arg GIT_COMMIT=$(shell git rev-parse HEAD 2>/dev/null) \
		-t $(IMAGE) .

docker-train: ## Train in the container: make docker-train SEED=42 NPROC=8 PROFILE=eval
	mkdir -p $(HOST_RUNS) $(HOST_DATA)
	$(if $(filter 0,$(shell id -u)),chown $(CONTAINER_UID):$(CONTAINER_GID) $(HOST_RUNS) $(HOST_DATA))
	$(DOCKER_RUN) $(IMAGE) torchrun --standalone --nproc_per_node=$(NPROC) \
		--max-restarts=$(MAX_RESTARTS) train.py $(CONTAINER_FLAGS)

docker-test: ## Run the fast tests inside the container
	$(DOCKER_RUN) $(IMAGE) python -m pytest tests -m "not slow" -q

docker-shell: ## A shell in the container, with runs/ and datasets/ mounted
	mkdir -p $(HOST_RUNS) $(HOST_DATA)
	$(if $(filter 0,$(shell id -u)),chown $(CONTAINER_UID):$(CONTAINER_GID) $(HOST_RUNS) $(HOST_DATA))
	$(DOCKER_RUN) -it $(IMAGE) bash

hadolint: $(STAMP) ## Lint the Dockerfile
	$(VENV)/bin/hadolint Dockerfile

lock: ## Re-resolve requirements.in into the lock files (needs the network)
	rm -rf .lock-venv && $(PYTHON_BOOT) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in -r requirements-dev.in
	.lock-venv/bin/python scripts/write_lock.py
	rm -rf .lock-venv

clean: ## Remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
