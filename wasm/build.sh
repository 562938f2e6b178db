#!/usr/bin/env bash
# Builds the committed WebAssembly modules from wasm/src with clang (no emscripten, no libc, zero imports):
#   wasm/dist/duo.wasm          SIMD128 kernels (*_simd.c)    -- what the backend loads
#   wasm/dist/duo-relaxed.wasm  the same with relaxed SIMD (VF_MAD = f32x4.relaxed_madd) -- loaded where the runtime
#                               validates it (src/runtime.ts wasmRelaxedSimd)
#   wasm/dist/duo-scalar.wasm   their scalar twins (*_scalar.c) -- for the conformance tests
# Usage: bash wasm/build.sh            build into wasm/dist
#        bash wasm/build.sh --check    build into a temp dir; exit 1 if it differs from the committed wasm/dist
# Needs clang-19 and wasm-ld-19 (Debian: apt-get install clang-19 lld-19); CC=... overrides the compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "wasm/build.sh: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }

check=0
[[ "${1:-}" == "--check" ]] && check=1
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
out="$here/dist"
((check)) && out="$obj/dist"
mkdir -p "$out"

# Compile with -O3 -c and link without -O: a link step with -O makes clang run whatever wasm-opt is on PATH
# (binaryen 108 on Debian 12), which would make the output depend on that tool.
cflags=(--target=wasm32 -O3 -fno-unroll-loops -std=c11 -ffreestanding -fvisibility=hidden -mbulk-memory -Wall -Wextra -Werror)
ldflags=(--target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all
  -Wl,--max-memory=4294967296 -Wl,-z,stack-size=262144)
shared=(alloc.c append.c attend.c merge.c)

build() { # name, extra cflags, twin suffix
  local name=$1 flags=$2 twin=$3 objs=()
  for src in "${shared[@]}" attend_$twin.c convert_$twin.c bench_$twin.c; do
    # shellcheck disable=SC2086
    "$CC" "${cflags[@]}" $flags -c "$here/src/$src" -o "$obj/$name-${src%.c}.o"
    objs+=("$obj/$name-${src%.c}.o")
  done
  "$CC" "${ldflags[@]}" "${objs[@]}" -o "$out/$name.wasm"
}
build duo "-msimd128" simd
build duo-relaxed "-msimd128 -mrelaxed-simd" simd
build duo-scalar "" scalar

status=0
if ((check)); then
  for f in duo.wasm duo-relaxed.wasm duo-scalar.wasm; do
    if ! cmp -s "$out/$f" "$here/dist/$f"; then
      echo "wasm/build.sh --check: wasm/dist/$f differs from a fresh build of wasm/src (run: bash wasm/build.sh)" >&2
      status=1
    fi
  done
  ((status == 0)) && echo "wasm/build.sh --check: wasm/dist/duo.wasm, duo-relaxed.wasm and duo-scalar.wasm match wasm/src"
else
  ls -l "$out/duo.wasm" "$out/duo-relaxed.wasm" "$out/duo-scalar.wasm"
fi
exit $status
