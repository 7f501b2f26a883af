#!/usr/bin/env bash
# The GPU checks on a lent GPU machine, as ONE device call (that machine reaches no package registry, so
# neither `make setup` nor `make setup GPU=1` can run there; its image's python3 has CUDA torch,
# transformers, tokenizers, accelerate, safetensors, pyarrow and pandas, and the rest travels):
#
#   1. here, once:     bash scripts/device_site.sh          # .device/site.tgz, ~42 MiB: ray, datasets, trl, ...
#   2. the device call, from the checkout the session started in (the call sends that checkout), with this
#      branch's files in it:
#        run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=600)
#
# On the machine: unpacks .device/site.tgz into /tmp/site (on PYTHONPATH), records the GPU and versions, runs
# what `make gpu-check` runs (python3 scripts/gpu_check.py: builds the random models, 1-2 min, then round 1,
# ~4 min estimated), then `make bench-gpu`'s script (scripts/bench_gpu.sh) for each of BENCH_STEPS (default
# "pairrm trainer") that still fits in the call, each under its own 240 s limit. Everything stops by
# BUDGET_S (default 570 s, inside the call's 600). Under $OUT (at most 8 files come back): env.txt,
# gpu_check.txt (the table), gpu_check_logs.tgz (driver and stage logs), bench_gpu/<step>.log.
# A session's 15 device minutes hold one such call (the machine's start takes 1-2 of them).
set -u
cd "$(dirname "$0")/.."
budget=${BUDGET_S:-570}
out=${OUT:-device_out}
py=${PYTHON:-python3}
mkdir -p "$out" /tmp/site
left() { echo $((budget - SECONDS)); }

tar xzf .device/site.tgz -C /tmp/site || { echo "error: no .device/site.tgz: run scripts/device_site.sh here and carry .device" >&2; exit 2; }
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
    RAY_AUTH_MODE=token WANDB_MODE=disabled PYTHONUNBUFFERED=1   # the token: made on first use (pipelines/ray_env.py)
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$py" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "transformers", "tokenizers", "accelerate", "datasets", "pyarrow", "fsspec", "ray", "trl"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:   # reported here; the step that needs it fails below with its own message
        print(m, "NOT IMPORTABLE:", type(e).__name__, str(e)[:300])
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== gpu-check (limit $(($(left) - 30))s)"
t0=$SECONDS
timeout -k 20 "$(($(left) - 30))" "$py" scripts/gpu_check.py >"$out/gpu_check.txt" 2>&1
rc=$?
grep -v -e "it/s\]" -e "^\s*$" "$out/gpu_check.txt" | tail -n 40
echo "== gpu-check: exit $rc after $((SECONDS - t0))s$([ $rc = 124 ] && echo ' (time limit)')"
tar czf "$out/gpu_check_logs.tgz" -C runs/gpu_check round.log run/logs 2>/dev/null

for step in ${BENCH_STEPS:-pairrm trainer}; do
    if [ "$(left)" -lt 250 ]; then   # bench_gpu.sh gives a step 240 s
        echo "== bench-gpu $step: skipped: $(left)s left of the call's ${budget}s"
        continue
    fi
    PYTHON="$py" bash scripts/bench_gpu.sh "$out/bench_gpu" "$step"
done
exit $rc
