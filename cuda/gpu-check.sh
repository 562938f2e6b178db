#!/usr/bin/env bash
# For a machine with an NVIDIA GPU (needs nvcc and python3 with numpy; PyTorch for the benchmark peers; no Node, Bun,
# Deno or npm): build libduo_cuda.so, run the conformance grid against a float64 reference and the benchmarks, and
# print a short table last. Exit status: 0 pass, 1 a conformance check failed, 2 no device / library, else build error.
# Usage: bash cuda/gpu-check.sh [--quick] [--no-bench] [--no-conformance] [--device N]
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
fi
if [[ -z ${NVCC:-} ]] && ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "cuda/gpu-check.sh: nvcc not found (install the CUDA toolkit, or set NVCC=/path/to/nvcc)" >&2
  exit 2
fi
bash cuda/build.sh
python3 -c "import numpy" 2>/dev/null || { echo "cuda/gpu-check.sh: python3 needs numpy" >&2; exit 2; }
exec python3 cuda/tools/gpu_check.py "$@"
