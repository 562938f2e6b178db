#!/usr/bin/env bash
# Builds cuda/build/libduo_cuda.so: the CUDA kernels and the C ABI of cuda/include/duo.h, SASS for sm_80 and sm_90
# plus PTX for newer GPUs, cudart linked statically, only the duo_* symbols exported. No GPU is needed to build.
# Without nvcc it says so and exits 0 (the cuda backend then reports "library not built").
# Usage: bash cuda/build.sh [--force]      (NVCC=/path/to/nvcc to pick a compiler)
set -euo pipefail
cd "$(dirname "$0")"
out=build/libduo_cuda.so

nvcc=${NVCC:-$(command -v nvcc || true)}
if [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [[ -z $nvcc ]]; then
  echo "cuda/build.sh: nvcc not found: skipping libduo_cuda.so (the cuda backend will report \"library not built\")"
  exit 0
fi

sources=(src/*.cu)
if [[ ${1:-} != --force && -f $out ]] && [[ -z $(find src include build.sh exports.map -newer "$out" -print -quit) ]]; then
  echo "cuda/build.sh: $out is up to date"
  exit 0
fi

mkdir -p build/obj
# Warnings are errors, but register spills are not warnings here (-Xptxas -v reports them, summed up below): the
# decode kernel with 8 rows sits at 235-241 of 255 registers, and a spill is slower, never wrong, so a ptxas update
# that spills must not break the build.
flags=(-std=c++17 -O3 -Iinclude -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
  --threads 0 -Werror all-warnings -Xptxas -v)
start=$SECONDS
echo "cuda/build.sh: $($nvcc --version | tail -1)"
pids=()
for src in "${sources[@]}"; do
  obj=build/obj/$(basename "${src%.cu}").o
  # ptxas -v reports go to a log per source; errors still reach the terminal
  ( "$nvcc" "${flags[@]}" -c "$src" -o "$obj" 2>"${obj%.o}.ptxas.log" || { grep -v "^ptxas info" "${obj%.o}.ptxas.log" >&2; exit 1; } ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [[ $status != 0 ]]; then echo "cuda/build.sh: compilation failed" >&2; exit 1; fi
"$nvcc" -shared -cudart static -Xlinker --exclude-libs,ALL -Xlinker --version-script=exports.map -o "$out" build/obj/*.o

# The library must export exactly the functions declared in duo.h, and must not need libcudart at run time.
expected=$(grep -o 'DUO_API [^(]*(' include/duo.h | grep -o 'duo_[a-z_]*' | sort)
exported=$(nm -D --defined-only "$out" | awk '{print $3}' | sort)
if [[ $expected != "$exported" ]]; then
  echo "cuda/build.sh: exported symbols differ from duo.h:" >&2
  diff <(echo "$expected") <(echo "$exported") >&2 || true
  exit 1
fi
if ldd "$out" | grep -q libcudart; then echo "cuda/build.sh: $out links libcudart dynamically" >&2; exit 1; fi
registers=$(cat build/obj/*.ptxas.log | grep -o "Used [0-9]* registers" | awk '{print $2}' | sort -n | tail -1)
spilling=$(cat build/obj/*.ptxas.log | grep "bytes spill stores" | grep -cv " 0 bytes spill stores" || true)
echo "cuda/build.sh: kernels use at most ${registers:-?} registers per thread; $spilling function builds spill registers"
if ((spilling > 0)); then echo "cuda/build.sh: warning: register spills cost speed (details: cuda/build/obj/*.ptxas.log)"; fi
echo "cuda/build.sh: built $out ($(du -k "$out" | cut -f1) KiB, $(echo "$exported" | wc -l) symbols) in $((SECONDS - start))s"
