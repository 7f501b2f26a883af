#!/usr/bin/env bash
# Packs the Python packages that a lent GPU machine's image lacks into one file that a device call carries:
#
#     bash scripts/device_site.sh [OUT]        # here, with network; OUT defaults to .device/site.tgz
#
# The lent machine (Python 3.12, CUDA torch, transformers, tokenizers, accelerate, pyarrow, pandas ... in
# its image) reaches no package registry, so `make setup` cannot run there. What a round needs and the
# image lacks: ray (and jsonschema for it), datasets (dill, multiprocess); `make bench-gpu` adds trl and
# llm-blender. They are installed here for Python 3.12 on x86-64 into one folder (pip keeps the native
# binaries' executable bits), at the versions this project resolves to. ray's wheel (79 MB) alone is over
# the 64 MiB a device call may carry, so the parts of ray that a single-node local session never loads are
# left out: its Java jar, the dashboard's web UI build, rllib, serve and llm. scripts/device_check.sh
# unpacks the file on the machine into /tmp/site, on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.device/site.tgz}
py=${PYTHON:-python3}
pins=(ray==2.60.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
      datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
      trl==1.16.0 llm-blender==0.0.2 dataclasses-json==0.6.7 marshmallow==3.26.2)
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
done
"$py" -m pip install -q --no-deps --no-compile --target "$site/lib" --python-version 3.12 --implementation cp \
    "${plat[@]}" --only-binary=:all: "${pins[@]}"
rm -rf "$site"/lib/ray/jars "$site"/lib/ray/dashboard/client/build "$site"/lib/ray/rllib "$site"/lib/ray/serve \
    "$site"/lib/ray/llm "$site"/lib/bin
mkdir -p "$(dirname "$out")"
tar czf "$out" -C "$site/lib" .
size=$(du -m "$out" | cut -f1)
echo "$out: ${size} MiB (a device call carries 64 MiB in all, the working tree included)"
if [[ $out != /* ]]; then   # inside the checkout: keep it out of git (it travels as a carried, ignored path)
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    top="/${out%%/*}/"
    grep -qxF "$top" "$exclude" 2>/dev/null || echo "$top" >>"$exclude"
fi
