#!/usr/bin/env bash
# The device check of a GPU machine: one epoch per model on the GPU and on the CPU, accuracy
# compared, figures written to docs/benchmarks/gpu.json (or $OUT/gpu.json where $OUT is set).
# Needs the project installed (make venv) and the yoochoose1_64 split (../shared/data or
# --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-docs/benchmarks}/gpu.json"
python=".venv/bin/python"
[ -x "$python" ] || python=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 "$python" bench/gpu_check.py --out "$out" "$@"
