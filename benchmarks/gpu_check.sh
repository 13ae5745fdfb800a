#!/usr/bin/env bash
# The GPU acceptance check (benchmarks/gpu_check.py): one table, exit status non-zero on any failure.
#   bash benchmarks/gpu_check.sh            on a machine with a CUDA GPU (a few minutes)
#   bash benchmarks/gpu_check.sh --dry-run  the same steps on the CPU at 64 px (what CI runs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export YOLO_OFFLINE=1
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
