#!/usr/bin/env bash
# The GPU benchmarks in one command, on a machine with one CUDA GPU and no hub access:
#
#     bash scripts/bench_gpu.sh [OUT_DIR [STEP ...]]     # or: make bench-gpu
#
# Runs the STEPs (default: all, about 16 minutes on an H200, most of it process and CUDA start-up), each
# under its own time limit, each one's output kept in OUT_DIR/<name>.log (default bench_gpu/):
#   env         the GPU, driver and package versions (always)
#   profile     our trainer's per-step times and a torch.profiler table of one warm step (32k shape)
#   levers      each of the trainer's levers (chunked head, length groups, no attention mask) on and off,
#               cumulative, at the 32k shape: which of them pays on this device
#   trainer     our DPO trainer vs TRL's DPOTrainer, bf16 compute on fp32 weights, at the README's
#               32k-vocabulary shape (hidden 512, 8 layers, sequences up to 512 tokens), more pairs
#   pairrm      our PairRM judge (fp16 default, bf16) vs llm-blender's Blender.rank at batch 1 and 8,
#               a random DeBERTa-v2 the size of PairRM's backbone (hidden 1024, 24 layers, 16 heads),
#               8 prompts x K=6
#   trainer_1b  the trainer comparison on a ~1B-parameter model (hidden 2048, 16 layers), 1024 tokens
# A benchmark that fails or runs out of time is reported and the next one still runs. Needs torch with
# CUDA, transformers, trl, datasets and llm-blender in PYTHON's environment (`make setup GPU=1`, plus
# `pip install trl llm-blender`). vLLM's generation benchmark is apart: scripts/bench_generation.py.
# SMOKE=1 runs every step on the CPU at toy sizes, to check the script itself on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench_gpu}
shift || true
steps=" ${*:-profile levers trainer pairrm trainer_1b} "
py=${PYTHON:-python3}
mkdir -p "$out"
if [ "${SMOKE:-0}" = 1 ]; then
    dev=(--device cpu --dtype float32); pr_dev=(--device cpu)
    trainer=(--hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab 2000 --max-length 64 --pairs 4 --batch 2 --reps 1)
    pairrm=(--hidden 32 --layers 1 --heads 2 --prompts 2 --k 3 --repeats 1)
    big=("${trainer[@]}"); limit=(120 120 120 120 120)
else
    dev=(--device cuda --dtype bfloat16); pr_dev=(--device cuda --threads 0)
    # 3 epochs: a one-time cost inside the timed region (8-10 s per run on the first H200) must not hide the steps
    trainer=(--hidden 512 --layers 8 --heads 8 --kv-heads 2 --max-length 512 --pairs 128 --batch 8 --epochs 3 --reps 3)
    pairrm=(--hidden 1024 --layers 24 --heads 16 --prompts 8 --k 6 --our-batch 64 --repeats 2)
    big=(--hidden 2048 --layers 16 --heads 16 --kv-heads 8 --max-length 1024 --pairs 64 --batch 8 --epochs 2 --reps 2)
    limit=(120 240 240 240 240)
fi

step() {   # step NAME SECONDS ARGS...: one benchmark, its log in $out/NAME.log, its exit status reported
    local name=$1 secs=$2; shift 2
    [[ $steps == *" $name "* ]] || return 0
    echo "== $name (limit ${secs}s): $py $*"
    local t0=$SECONDS
    timeout "$secs" "$py" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    grep -v -e "it/s\]" -e "^\s*$" "$out/$name.log" | tail -n 40
    echo "== $name: exit $rc after $((SECONDS - t0))s$([ $rc = 124 ] && echo ' (time limit)')"
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"
    PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$py" - <<'EOF'
import importlib, platform
from judges.blender_compat import import_llm_blender   # llm-blender needs its patch on transformers 5
print("python", platform.python_version())
for m in ("torch", "transformers", "trl", "datasets", "llm_blender", "accelerate", "tokenizers", "safetensors"):
    try:
        mod = import_llm_blender() if m == "llm_blender" else importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:   # a missing package is reported here, and the step that needs it fails below
        print(m, "NOT IMPORTABLE:", type(e).__name__, str(e)[:200])
import torch
print("cuda available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} >"$out/env.log" 2>&1
cat "$out/env.log"
step profile "${limit[0]}" scripts/bench_trainer.py "${dev[@]}" "${trainer[@]}" --pairs 64 --reps 1 --profile
step levers "${limit[1]}" scripts/bench_trainer.py "${dev[@]}" "${trainer[@]}" --pairs 64 --reps 1 --levers
step trainer "${limit[2]}" scripts/bench_trainer.py "${dev[@]}" "${trainer[@]}"
step pairrm "${limit[3]}" scripts/bench_pairrm.py "${pr_dev[@]}" "${pairrm[@]}"
step trainer_1b "${limit[4]}" scripts/bench_trainer.py "${dev[@]}" "${big[@]}"
