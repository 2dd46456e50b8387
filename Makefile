# Every target that needs Python depends on the venv stamp, so on a fresh clone
# `make train SEED=42` and `make test` are the only two commands a user needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

# Run knobs (documented in docs/configuration.md "Command line").
SEED        ?=
PROFILE     ?=
CONFIG      ?= configs/default.yaml
OUTPUT_DIR  ?=
RESUME      ?=
INIT_FROM   ?=
CHECKPOINT  ?=
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
# make test runs the test files on 2 workers (pytest-xdist): the runs are mostly process start-up
# and waits, so 2 workers keep both cores of a small machine busy.
TEST_WORKERS ?= 2

# Variables that must exist before the interpreter (and CUDA) start: setting them inside
# train.py would be too late for this process. torchrun passes them on to every rank.
export PYTHONHASHSEED ?= 0
export CUBLAS_WORKSPACE_CONFIG ?= :4096:8
# albumentations asks PyPI for a newer release on import: no network at run time.
export NO_ALBUMENTATIONS_UPDATE ?= 1
export PYTHONUNBUFFERED := 1

TRAIN_FLAGS = --config $(CONFIG) \
	$(if $(SEED),--seed $(SEED)) \
	$(if $(PROFILE),--profile $(PROFILE)) \
	$(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR)) \
	$(if $(RESUME),--resume $(RESUME)) \
	$(if $(INIT_FROM),--init-from $(INIT_FROM)) \
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
# torchrun through tools/torchrun_agent.py: torchrun's own agent, ending a failed run with the
# worker's one-line error and exit code instead of a ChildFailedError traceback.
TORCHRUN = tools/torchrun_agent.py $(TORCHRUN_TOPOLOGY) --max-restarts=$(MAX_RESTARTS)
ifeq ($(NPROC)$(NNODES)$(MAX_RESTARTS),110)
LAUNCH = $(PY)
else
LAUNCH = $(PY) $(TORCHRUN)
endif
# What a run started by make says when it tells the user what to type (foundation/process.py):
# make's variables, not torchrun's flags.
MAKE_LAUNCH = TEMPLATE_LAUNCHED_BY=make $(LAUNCH)

.PHONY: help setup measure-default train evaluate convert-checkpoint predict tensorboard docs verify benchmark compare bench-speed bench-compile bench-invariance bench-recipe bench-tensor-parallel bench-sharding bench-health bench-sequential sweep sweep-dashboard gpu-check diagnose wheelhouse docker-base-standin docker-build docker-train docker-test docker-shell hadolint bench-seeding test test-fast lint lock clean

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

# This training's command in make's words, without ARGS (passed apart: train.py repeats them,
# changing a key where it suggests one): train.py prints what to type next after a stop, a fault
# or a finished run (`make train SEED=7 ARGS='...' RESUME=auto`, foundation/process.py). ARGS are
# repeated because they may choose the run folder (name=, seed=, profile=); the resumed run
# takes its own config.yaml for the rest (docs/faults.md "Resume"). Every node says its own.
TRAIN_COMMAND = make train$(if $(filter-out configs/default.yaml,$(CONFIG)), CONFIG=$(CONFIG))$(if \
	$(SEED), SEED=$(SEED))$(if $(PROFILE), PROFILE=$(PROFILE))$(if $(OUTPUT_DIR), OUTPUT_DIR=$(OUTPUT_DIR))$(if \
	$(filter-out 1,$(NPROC)), NPROC=$(NPROC))$(if $(filter-out 1,$(NNODES)), NNODES=$(NNODES) NODE_RANK=$(NODE_RANK) \
	MASTER_ADDR=$(MASTER_ADDR) MASTER_PORT=$(MASTER_PORT) RDZV=$(RDZV))$(if $(filter-out 0,$(MAX_RESTARTS)), \
	MAX_RESTARTS=$(MAX_RESTARTS))

train: $(STAMP) ## Train: make train SEED=42 [PROFILE=eval] [NPROC=2] [CONFIG=..] [ARGS="k=v"] [RESUME=auto]
	TEMPLATE_TRAIN_COMMAND="$(TRAIN_COMMAND)" TEMPLATE_TRAIN_ARGS="$(ARGS)" $(MAKE_LAUNCH) train.py $(TRAIN_FLAGS)

evaluate: $(STAMP) ## A checkpoint on the validation split: make evaluate CHECKPOINT=runs/.../last.pt [NPROC=..] [ARGS="data.root=.."]
	$(MAKE_LAUNCH) -m scripts.evaluate --checkpoint "$(CHECKPOINT)" $(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR)) $(ARGS)

IMAGES      ?=
convert-checkpoint: $(STAMP) ## A checkpoint file to a sharded directory or back: make convert-checkpoint CHECKPOINT=.. TO=..
	$(PY) -m scripts.convert_checkpoint "$(CHECKPOINT)" "$(TO)"

predict: $(STAMP) ## Classify a folder of images with a checkpoint, one line each: make predict CHECKPOINT=.. IMAGES=folder
	$(PY) -m scripts.predict --checkpoint "$(CHECKPOINT)" --images "$(IMAGES)" $(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR)) $(ARGS)

QUICK       ?=
verify: $(STAMP) ## Certify a config: the guarantee matrix, bitwise: make verify [CONFIG=..] [ARGS=..] [QUICK=1] [ONLY=resume]
	$(PY) -m scripts.verify $(if $(QUICK),--quick) $(if $(ONLY),--only "$(ONLY)") -- $(TRAIN_FLAGS)

SEEDS       ?=
VARY        ?=
JOBS        ?= 1
# Where the seeds run: the local pool, or one SLURM job array (SBATCH="--partition=gpu ...";
# WAIT=0 submits and returns, a later identical command reports what finished).
LAUNCHER    ?= local
SBATCH      ?=
WAIT        ?= 1
SEED_RUN_FLAGS = --jobs $(JOBS) --nproc $(NPROC) --launcher $(LAUNCHER) --sbatch="$(SBATCH)" \
	$(if $(filter 0,$(WAIT)),--no-wait)
benchmark: $(STAMP) ## Several seeds -> mean ± std report: make benchmark SEEDS="0 1 2 3 4" [PROFILE=eval] [JOBS=2] [LAUNCHER=slurm] [VARY="init order augment dropout all"]
	$(PY) -m scripts.benchmark --seeds $(SEEDS) --profile $(or $(PROFILE),eval) --config $(CONFIG) \
		--output-dir $(or $(OUTPUT_DIR),runs) $(SEED_RUN_FLAGS) $(if $(VARY),--vary $(VARY)) -- $(ARGS)

A           ?=
B           ?=
METRICS     ?=
NAME        ?=
SEQUENTIAL  ?=
MAX_SEEDS   ?= 10
ALPHA       ?= 0.05
compare: $(STAMP) ## Is B better than A? Seed-paired: make compare A="k=v .." B="k=v .." SEEDS="0 1 2 3 4" [NAME=..] [SEQUENTIAL=1 MAX_SEEDS=10 ALPHA=0.05]
	$(PY) -m scripts.compare --a "$(A)" --b "$(B)" --seeds $(SEEDS) --profile $(or $(PROFILE),eval) \
		--config $(CONFIG) --output-dir $(or $(OUTPUT_DIR),runs/compare) $(SEED_RUN_FLAGS) \
		$(if $(NAME),--name $(NAME)) \
		$(if $(filter-out 0,$(SEQUENTIAL)),--sequential --max-seeds $(MAX_SEEDS) --alpha $(ALPHA)) \
		$(if $(METRICS),--metrics $(METRICS)) -- $(ARGS)

SPACE       ?=
TRIALS      ?= 20
TUNE_SEEDS  ?= 0 1 2
HOLDOUT_SEEDS ?=
SLURM       ?=
WORKER      ?=
sweep: $(STAMP) ## Tune on Optuna, each trial the mean over seeds, confirmed on held-out seeds: make sweep SPACE=configs/sweeps/tiny.yaml TRIALS=6 TUNE_SEEDS="0 1" [HOLDOUT_SEEDS=..] [JOBS=2] [SLURM=1] [SEQUENTIAL=1]
	$(PY) -m scripts.sweep --space "$(SPACE)" --trials $(TRIALS) --seeds $(TUNE_SEEDS) \
		$(if $(HOLDOUT_SEEDS),--held-out-seeds $(HOLDOUT_SEEDS)) --profile $(or $(PROFILE),eval) \
		--config $(CONFIG) --output-dir $(or $(OUTPUT_DIR),runs/sweeps) $(if $(NAME),--name $(NAME)) \
		--jobs $(JOBS) --nproc $(NPROC) \
		$(if $(filter-out 0,$(SLURM)),--launcher slurm --journal --sbatch="$(SBATCH)") \
		$(if $(filter-out 0,$(WORKER)),--worker) $(if $(filter-out 0,$(SEQUENTIAL)),--sequential) -- $(ARGS)

SWEEP       ?=
PORT        ?= 8080
sweep-dashboard: $(STAMP) ## optuna-dashboard on a sweep's study, on 127.0.0.1 only: make sweep-dashboard SWEEP=runs/sweeps/tiny [PORT=8080]
	$(PY) -m scripts.sweep_dashboard --sweep "$(SWEEP)" --port $(PORT)

diagnose: $(STAMP) ## Seed streams and the job's own data and model per rank, against the plan: make diagnose NPROC=2 [CONFIG=..] [ARGS=..]
	$(MAKE_LAUNCH) -m scripts.diagnose $(TRAIN_FLAGS)

bench-seeding: $(STAMP) ## Measure per-sample augmentation seeding (us/sample, share of loading time)
	$(PY) -m benchmarks.bench_seeding

bench-speed: $(STAMP) ## Template vs a plain PyTorch loop, per profile (samples/s, first step): writes runs/bench/speed/
	$(PY) -m benchmarks.bench_speed $(ARGS)

bench-compile: $(STAMP) ## Compiled vs eager vs the plain loop, per model and layout (samples/s, compile time apart): writes runs/bench/compile/
	$(PY) -m benchmarks.bench_compile $(ARGS)

bench-invariance: $(STAMP) ## World-size-invariant mode vs DDP: bytes per rank per step at W=2,4,8; ms/step at W=1,2,4
	$(PY) -m benchmarks.bench_invariance $(ARGS)

bench-sequential: $(STAMP) ## The sequential comparison's false "different" rate [95 % CI] and power, 20,000 simulated comparisons (2 s)
	$(PY) -m benchmarks.bench_sequential $(ARGS)

DEVICE      ?= cuda
gpu-check: $(STAMP) ## Every GPU check in one call (<= 8 min), writes runs/gpu-check/gpu-check.json: make gpu-check [DEVICE=cpu QUICK=1]
	$(PY) -m scripts.gpu_check --device $(DEVICE) $(if $(QUICK),--quick) $(ARGS)

bench-recipe: $(STAMP) ## Cost of each reference-recipe feature: ms per optimizer step, and the EMA's evaluation: writes runs/bench/recipe/
	$(PY) -m benchmarks.bench_recipe $(ARGS)

bench-tensor-parallel: $(STAMP) ## Cost of tensor parallelism on this machine: samples/s, ms/step, parameters per rank for dp 2, 1x2, 4, 2x2
	$(PY) -m benchmarks.bench_tensor_parallel $(ARGS)

bench-sharding: $(STAMP) ## What sharding (FSDP2) saves and costs: MiB of parameters, gradients, optimizer state per rank and ms/step, DDP vs sharded at W=1,2,4
	$(PY) -m benchmarks.bench_sharding $(ARGS)

bench-health: $(STAMP) ## Cost of the fault checks: ms/step without them, production, debug; the vote at W=2
	$(PY) -m benchmarks.bench_health $(ARGS)

test: $(STAMP) ## Run the test suite (what CI runs), TEST_WORKERS=2 files at a time
	$(PY) -m pytest $(TESTS) -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest $(TESTS) -m "not slow" $(PYTEST_ARGS)

LOGDIR      ?= runs
tensorboard: $(STAMP) ## TensorBoard on the runs (the venv's own): make tensorboard [LOGDIR=runs/default/debug]
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

measure-default: $(STAMP) ## Measure the default job (make train SEED=42) into docs/measured/ for the README; then make docs
	$(PY) -m scripts.measure_default

docs: $(STAMP) ## Rewrite the config-key, dataset and model tables of docs/configuration.md from the code
	$(PY) -m scripts.docs

lint: $(STAMP) ## ruff, import-linter (the layer contracts) and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

# ----------------------------------------------------------------------------- container
IMAGE       ?= reproducible-ddp-template:latest
BASE_IMAGE  ?= pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
# The stand-in base is named after the lock and the script it was built from: a new lock or
# script, a new stand-in.
STANDIN_IMAGE ?= reproducible-ddp-template-base:standin-$(shell cat requirements.lock scripts/docker/standin_base.sh | sha256sum | cut -c1-12)
HOST_RUNS   ?= $(abspath $(or $(OUTPUT_DIR),runs))
HOST_DATA   ?= $(abspath datasets)
# auto: GPUs when the NVIDIA container runtime and a GPU are there; none; all; '"device=0,1"'.
GPUS        ?= auto
DOCKER_CHECK = scripts/docker/checks.sh
# The container never runs as root: the caller's ids, or 1000 when the caller is root.
CALLER_IDS  := $(shell id -u):$(shell id -g)
CONTAINER_UID ?= $(if $(filter 0,$(shell id -u)),1000,$(shell id -u))
CONTAINER_GID ?= $(if $(filter 0,$(shell id -u)),1000,$(shell id -g))
# --ipc=host: DataLoader workers share batches through /dev/shm, which is 64 MB by default.
# --user: files written to the mounted run and dataset folders belong to the calling user (a
# root caller gets them back after the run). OMP_NUM_THREADS passes through when you set it.
# Inductor's cache (trainer.compile) lives in the mounted runs folder, so the next container's
# compile of the same graphs reads it instead of starting over.
DOCKER_RUN = docker run --rm $(shell $(DOCKER_CHECK) gpus '$(GPUS)') --ipc=host \
	--user $(CONTAINER_UID):$(CONTAINER_GID) $(if $(OMP_NUM_THREADS),-e OMP_NUM_THREADS=$(OMP_NUM_THREADS)) \
	-e TORCHINDUCTOR_CACHE_DIR=/workspace/runs/.inductor-cache \
	-v $(HOST_RUNS):/workspace/runs -v $(HOST_DATA):/workspace/datasets
# The same launcher as `make train` (a plain interpreter for one process), so the same job
# computes the same bits in the container and on the host.
CONTAINER_LAUNCH = python $(if $(filter 110,$(NPROC)$(NNODES)$(MAX_RESTARTS)),,$(TORCHRUN))
CONTAINER_FLAGS = --config $(CONFIG) $(if $(SEED),--seed $(SEED)) $(if $(PROFILE),--profile $(PROFILE)) \
	--output-dir runs $(if $(RESUME),--resume $(RESUME)) $(ARGS)
# Mount points belong to the container's user while it runs; a root caller gets them back.
define with_mounts
	mkdir -p $(HOST_RUNS) $(HOST_DATA)
	$(if $(filter 0,$(shell id -u)),chown $(CONTAINER_UID):$(CONTAINER_GID) $(HOST_RUNS) $(HOST_DATA))
	$(1); status=$$?; $(if $(filter 0,$(shell id -u)),chown -R $(CALLER_IDS) $(HOST_RUNS) $(HOST_DATA);) exit $$status
endef

wheelhouse: ## Download the lock's wheels for the image into wheelhouse/ with your pip settings (proxy, CA, air-gapped)
	$(PYTHON_BOOT) scripts/docker/requirements.py download-wheelhouse requirements-dev.lock wheelhouse
	@echo "wheelhouse/: $$(ls wheelhouse/*.whl | wc -l) wheels; make docker-build now installs from it offline"

docker-base-standin: ## Build a CPU stand-in for the PyTorch base image (Debian + the lock's torch), tag printed
	@scripts/docker/standin_base.sh $(STANDIN_IMAGE)
	@echo "use it: make docker-build BASE_IMAGE=$(STANDIN_IMAGE)"

docker-build: ## Build the image (BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime); offline from wheelhouse/ if filled
	@if ls wheelhouse/*.whl >/dev/null 2>&1; then \
		$(PYTHON_BOOT) scripts/docker/requirements.py check-wheelhouse requirements-dev.lock wheelhouse; fi
	@$(DOCKER_CHECK) engine
	@$(DOCKER_CHECK) base $(BASE_IMAGE)
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg USER_UID=$(CONTAINER_UID) \
		--build-arg USER_GID=$(CONTAINER_GID) --build-arg GIT_COMMIT=$(shell git rev-parse HEAD 2>/dev/null) \
		-t $(IMAGE) .

docker-train: ## Train in the container: make docker-train SEED=42 NPROC=8 PROFILE=eval [GPUS=none]
	@$(DOCKER_CHECK) engine
	@$(DOCKER_CHECK) image $(IMAGE)
	$(call with_mounts,$(DOCKER_RUN) $(IMAGE) $(CONTAINER_LAUNCH) train.py $(CONTAINER_FLAGS))

docker-test: ## Run the fast tests inside the container
	@$(DOCKER_CHECK) engine
	@$(DOCKER_CHECK) image $(IMAGE)
	$(call with_mounts,$(DOCKER_RUN) $(IMAGE) python -m pytest tests -m "not slow" -q -p no:cacheprovider)

docker-shell: ## A shell in the container, with runs/ and datasets/ mounted
	@$(DOCKER_CHECK) engine
	@$(DOCKER_CHECK) image $(IMAGE)
	$(call with_mounts,$(DOCKER_RUN) -it $(IMAGE) bash)

hadolint: $(STAMP) ## Lint the Dockerfile
	$(VENV)/bin/hadolint Dockerfile

lock: ## Re-resolve requirements.in into the lock files (needs the network)
	rm -rf .lock-venv && $(PYTHON_BOOT) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in -r requirements-dev.in
	.lock-venv/bin/python scripts/write_lock.py
	rm -rf .lock-venv

clean: ## Remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
