#!/usr/bin/env bash
# Builds wasm/dist/duo-model.wasm, the model-runner kernels (src/model/kernels-wasm.ts), from wasm/model/*.c with the
# toolchain and flags of wasm/build.sh: clang-19 straight to wasm32, no emscripten, no libc, zero imports; compile
# with -O3 -c and link without -O (a link step with -O makes clang run whatever wasm-opt is on PATH). The module
# exports its memory (up to 4 GiB), __heap_base (where the TS side starts laying out weights) and the kernels.
# Usage: bash wasm/model/build.sh            build into wasm/dist
#        bash wasm/model/build.sh --check    build into a temp dir; exit 1 if it differs from the committed file
# Needs clang-19 and wasm-ld-19 (Debian: apt-get install clang-19 lld-19); CC=... overrides the compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "wasm/model/build.sh: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }

check=0
[[ "${1:-}" == "--check" ]] && check=1
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
dist="$here/../dist"
out="$dist"
((check)) && out="$obj"
mkdir -p "$out"

cflags=(--target=wasm32 -O3 -std=c11 -ffreestanding -fvisibility=hidden -msimd128 -Wall -Wextra -Werror)
ldflags=(--target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--export=__heap_base -Wl,--strip-all
  -Wl,--max-memory=4294967296 -Wl,-z,stack-size=65536)
objs=()
for src in "$here"/*.c; do
  o="$obj/$(basename "${src%.c}").o"
  "$CC" "${cflags[@]}" -c "$src" -o "$o"
  objs+=("$o")
done
"$CC" "${ldflags[@]}" "${objs[@]}" -o "$out/duo-model.wasm"

if ((check)); then
  if ! cmp -s "$out/duo-model.wasm" "$dist/duo-model.wasm"; then
    echo "wasm/model/build.sh --check: wasm/dist/duo-model.wasm differs from a fresh build of wasm/model (run: bash wasm/model/build.sh)" >&2
    exit 1
  fi
  echo "wasm/model/build.sh --check: wasm/dist/duo-model.wasm matches the sources"
  exit 0
fi
ls -l "$out/duo-model.wasm"
