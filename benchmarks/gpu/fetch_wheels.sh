#!/usr/bin/env bash
# Download the wheels of benchmarks/gpu/wheels.txt for the GPU machine (CPython 3.12, manylinux x86-64) into .whl/
# at the repository root (git-ignored), then print their total size. Run on a machine with network access:
#   bash benchmarks/gpu/fetch_wheels.sh
# The GPU machine has no network: run.sh installs these with pip --no-index.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${WHEEL_DIR:-$root/.whl}"
list="$root/benchmarks/gpu/wheels.txt"
mkdir -p "$dest"
# pip matches manylinux_2_N tags exactly, so every glibc level a wheel may be tagged with is listed.
platforms=()
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
    manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
mapfile -t pins < <(grep -v '^\s*#' "$list" | grep -v '^\s*$')
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "${pins[@]}"
python3 - "$dest" "${pins[@]}" <<'PY'
import re
import sys
from pathlib import Path

dest, pins = Path(sys.argv[1]), sys.argv[2:]
wheels = {re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower() + "==" + w.name.split("-")[1]: w for w in dest.glob("*.whl")}
wanted = {re.sub(r"[-_.]+", "-", p.split("==")[0]).lower() + "==" + p.split("==")[1] for p in pins}
missing = sorted(wanted - set(wheels))
extra = sorted(set(wheels) - wanted)
total = sum(wheels[k].stat().st_size for k in wanted if k in wheels)
print(f"{len(wanted) - len(missing)} wheels in {dest}, {total / 2**20:.1f} MiB in total (limit 64 MiB)")
if extra:
    print("not in wheels.txt (delete them before carrying .whl/):", ", ".join(extra))
if missing:
    sys.exit(f"missing: {', '.join(missing)}")
if total > 64 * 2**20:
    sys.exit("the wheels exceed the 64 MiB that may travel to the GPU machine")
PY
