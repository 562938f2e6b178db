#!/usr/bin/env bash
# The prepared GPU check, for a machine with an NVIDIA GPU and a short budget: at most 6 minutes in all (each step has
# its own time limit, cut to what is left of the 6 minutes). Needs nvcc and python3 with numpy; PyTorch for the
# benchmark peers (copy bandwidth, SDPA); compute-sanitizer for the memcheck step; no Node, Bun, Deno or npm.
#   bash cuda/gpu-check.sh [LOGDIR]        (LOGDIR: default $OUT, else a new temporary folder)
# Steps: device and toolchain; build libduo_cuda.so; quick conformance grid (gpu_check.py --quick); the cases beyond
# the grid with a 150-configuration fuzz and element offsets past 2^31 (gpu_cases.py); the model kernels' conformance
# at Llama-3-8B shapes and their matmul GB/s (model_check.py --bench); the benchmarks (gpu_check.py
# --no-conformance); the quick grid under compute-sanitizer memcheck. Output is unbuffered and copied to
# LOGDIR/<step>.log as it goes, so a run cut short still leaves its logs; LOGDIR/summary.log has one line per step.
# Exit status: 0 every step passed, 1 a check failed or timed out, 2 no device or toolchain, 3 the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
log=${1:-${OUT:-$(mktemp -d)}}
mkdir -p "$log"
budget=${GPU_CHECK_BUDGET_S:-360}  # seconds for all steps (the default fits a 15-minute GPU session with the machine start)
status=0
echo "cuda/gpu-check.sh: logs in $log" | tee "$log/summary.log"

# step NAME LIMIT COMMAND...: run with min(LIMIT, what is left of the budget) seconds, tee'd to LOGDIR/NAME.log
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  local left=$((budget - SECONDS))
  if ((left < 10)); then
    echo "=== $name: skipped (budget of ${budget}s spent)" | tee -a "$log/summary.log"
    status=1
    return 1
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s, at ${SECONDS}s)"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$log/$name.log"
  rc=${PIPESTATUS[0]}
  local verdict=ok
  ((rc == 124 || rc == 137)) && verdict="TIMED OUT"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAILED (exit $rc)"
  echo "=== $name: $verdict in $((SECONDS - start))s" | tee -a "$log/summary.log"
  ((rc == 0)) || status=1
  return "$rc"
}

if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$log/device.log"; then
  echo "cuda/gpu-check.sh: nvidia-smi found no GPU" | tee -a "$log/summary.log"
  exit 2
fi
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [[ ! -x $nvcc ]] || ! python3 -c "import numpy" 2>/dev/null; then
  echo "cuda/gpu-check.sh: needs nvcc (or NVCC=...) and python3 with numpy" | tee -a "$log/summary.log"
  exit 2
fi
"$nvcc" --version | tail -1 | tee -a "$log/device.log"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$log/device.log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null |
  tee -a "$log/device.log" || echo "torch: not importable (the benchmark peers are skipped)" | tee -a "$log/device.log"

step build 150 env NVCC="$nvcc" bash cuda/build.sh || exit 3
step quick 40 python3 cuda/tools/gpu_check.py --quick --no-bench
step cases 60 python3 cuda/tools/gpu_cases.py --fuzz 150 --big-offsets
step model 45 python3 cuda/tools/model_check.py --bench
step bench 100 python3 cuda/tools/gpu_check.py --no-conformance
if command -v compute-sanitizer >/dev/null; then
  step memcheck 60 compute-sanitizer --tool memcheck --print-limit 10 python3 cuda/tools/gpu_check.py --quick --no-bench
else
  echo "=== memcheck: skipped (compute-sanitizer not found)" | tee -a "$log/summary.log"
fi
echo
cat "$log/summary.log"
echo "cuda/gpu-check.sh: $( ((status == 0)) && echo passed || echo FAILED) in ${SECONDS}s"
exit $status
