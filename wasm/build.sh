#!/usr/bin/env bash
# Builds the committed WebAssembly modules from wasm/src (toolchain and --check: wasm/toolchain.sh):
#   wasm/dist/duo.wasm          SIMD128 kernels (*_simd.c)    -- what the backend loads
#   wasm/dist/duo-relaxed.wasm  the same with relaxed SIMD (VF_MAD = f32x4.relaxed_madd) -- loaded where the runtime
#                               validates it (src/runtime.ts wasmRelaxedSimd)
#   wasm/dist/duo-scalar.wasm   their scalar twins (*_scalar.c) -- for the conformance tests
# Usage: bash wasm/build.sh            build into wasm/dist
#        bash wasm/build.sh --check    build into a temp dir; exit 1 if it differs from the committed wasm/dist
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script=wasm/build.sh
dist="$here/dist"
source "$here/toolchain.sh"

cflags=(--target=wasm32 -O3 -fno-unroll-loops -std=c11 -ffreestanding -fvisibility=hidden -mbulk-memory -Wall -Wextra -Werror)
ldflags=(--target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all
  -Wl,--max-memory=4294967296 -Wl,-z,stack-size=262144)
shared=(alloc.c append.c attend.c merge.c quant.c)

build() { # name, extra cflags, twin suffix
  local name=$1 flags=$2 twin=$3 objs=()
  for src in "${shared[@]}" attend_$twin.c convert_$twin.c quant_$twin.c bench_$twin.c; do
    # shellcheck disable=SC2086
    "$CC" "${cflags[@]}" $flags -c "$here/src/$src" -o "$obj/$name-${src%.c}.o"
    objs+=("$obj/$name-${src%.c}.o")
  done
  "$CC" "${ldflags[@]}" "${objs[@]}" -o "$out/$name.wasm"
}
build duo "-msimd128" simd
build duo-relaxed "-msimd128 -mrelaxed-simd" simd
build duo-scalar "" scalar

finish duo.wasm duo-relaxed.wasm duo-scalar.wasm
