#!/usr/bin/env bash
# On the GPU machine (no network), from the repository root with .whl/ carried along:
#   bash benchmarks/gpu/run.sh [check.py options]     e.g. --out results/gpu_check.json
# Installs the wheels of fetch_wheels.sh into a temporary folder, puts it and the repository on PYTHONPATH,
# and runs the GPU check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
site="${GPU_CHECK_SITE:-/tmp/site}"
cd "$root"
shopt -s nullglob
wheels=("${WHEEL_DIR:-$root/.whl}"/*.whl)
if ((${#wheels[@]})); then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
else
    echo "no wheels in ${WHEEL_DIR:-$root/.whl} (run benchmarks/gpu/fetch_wheels.sh first); using the installed packages" >&2
fi
mkdir -p "$site"
ln -sfn "$root/deploy" "$site/rtdetr_deploy"  # the deploy package's import name, as pip install maps it
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=PASSIVE
exec python3 -m benchmarks.gpu.check "$@"
