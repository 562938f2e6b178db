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
flags=(-std=c++17 -O3 -Iinclude -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
  --threads 0 -Werror all-warnings -Xptxas -warn-spills,-warn-lmem-usage)
start=$SECONDS
echo "cuda/build.sh: $($nvcc --version | tail -1)"
pids=()
for src in "${sources[@]}"; do
  obj=build/obj/$(basename "${src%.cu}").o
  "$nvcc" "${flags[@]}" -c "$src" -o "$obj" &
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
echo "cuda/build.sh: built $out ($(du -k "$out" | cut -f1) KiB, $(echo "$exported" | wc -l) symbols) in $((SECONDS - start))s"
