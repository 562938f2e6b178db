#!/usr/bin/env bash
# Builds wasm/dist/duo-model.wasm, the model-runner kernels (src/model/kernels-wasm.ts), from wasm/model/*.c with the
# toolchain of wasm/build.sh (wasm/toolchain.sh: clang-19 straight to wasm32, no libc, zero imports). The module
# exports its memory (up to 4 GiB), __heap_base (where the TS side starts laying out weights) and the kernels.
# Usage: bash wasm/model/build.sh            build into wasm/dist
#        bash wasm/model/build.sh --check    build into a temp dir; exit 1 if it differs from the committed file
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script=wasm/model/build.sh
dist="$here/../dist"
source "$here/../toolchain.sh"

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

finish duo-model.wasm
