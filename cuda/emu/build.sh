#!/usr/bin/env bash
# Builds the host emulation of the CUDA backend: the unmodified kernels and C ABI of cuda/src compiled as C++ with
# -DDUO_EMU against cuda/emu/include (no nvcc, no GPU), linked with the emulator runtime (fibers, cuda/emu/runtime.cpp).
# The library exports the same duo_* functions as libduo_cuda.so; load it with DUO_CUDA_LIB=<path> (the CUDA tests
# find it by themselves). See cuda/emu/README.md for what it checks and what it cannot.
# Usage: bash cuda/emu/build.sh [asan]     (CXX=clang++-19 to pick a compiler; x86-64 Linux)
#   default: cuda/build/libduo_cuda_emu.so;  asan: cuda/build/libduo_cuda_emu_asan.so with ASan + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX:-$(command -v g++ || command -v clang++-19 || command -v clang++)}
if [[ $(uname -m) != x86_64 ]]; then echo "cuda/emu/build.sh: the fiber switch is x86-64 only" >&2; exit 1; fi

flags=(-std=c++17 -fPIC -fvisibility=hidden -fno-strict-aliasing -DDUO_EMU -Iemu/include -Iinclude -Isrc
  -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unknown-pragmas -g)
name=libduo_cuda_emu
if [[ ${1:-} == asan ]]; then
  # -fsanitize=address,undefined: device memory is malloc'd to the exact byte, so any kernel read past a buffer,
  # use after free, and undefined behaviour in host or kernel code stops the process with a report
  flags+=(-O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  name=libduo_cuda_emu_asan
else
  flags+=(-O2)
fi
obj=build/obj-emu-${1:-default}
out=build/$name.so
mkdir -p "$obj"
start=$SECONDS
pids=()
for src in src/*.cu; do
  "$cxx" "${flags[@]}" -x c++ -c "$src" -o "$obj/$(basename "${src%.cu}").o" & pids+=($!)
done
"$cxx" "${flags[@]}" -c emu/runtime.cpp -o "$obj/runtime.o" & pids+=($!)
"$cxx" -c emu/fiber_x86_64.S -o "$obj/fiber.o" & pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [[ $status != 0 ]]; then echo "cuda/emu/build.sh: compilation failed" >&2; exit 1; fi
"$cxx" "${flags[@]}" -shared -Wl,--no-undefined -Wl,--version-script=exports.map -o "$out" "$obj"/*.o -lpthread

# The same exports as libduo_cuda.so: exactly the functions declared in duo.h.
expected=$(grep -o 'DUO_API [^(]*(' include/duo.h | grep -o 'duo_[a-z_]*' | sort)
exported=$(nm -D --defined-only "$out" | awk '$2 == "T" {print $3}' | sort)
if [[ $expected != "$exported" ]]; then
  echo "cuda/emu/build.sh: exported symbols differ from duo.h:" >&2
  diff <(echo "$expected") <(echo "$exported") >&2 || true
  exit 1
fi
echo "cuda/emu/build.sh: built cuda/$out ($(echo "$exported" | wc -l) symbols) with $($cxx --version | head -1) in $((SECONDS - start))s"
