#!/usr/bin/env bash
# Builds wasm/dist/duo-model.wasm (the model-runner kernels, src/model/kernels-wasm.ts) from wasm/model/*.c.
# Toolchain: clang-19 + wasm-ld-19 straight to wasm32, no emscripten, no libc (../shared/notes/TOOLCHAIN.md §2):
# compile with -O3 -c, then link without -O so that clang does not run the system's wasm-opt. The output has no
# imports; it exports its memory (up to 4 GiB), __heap_base and the kernels.
# The build is byte-reproducible; `--check` rebuilds into a temp dir and fails if the committed file differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
CC=${CC:-clang-19}
out=wasm/dist/duo-model.wasm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

objs=()
for src in wasm/model/*.c; do
  obj="$tmp/$(basename "${src%.c}").o"
  "$CC" --target=wasm32 -O3 -ffreestanding -fvisibility=hidden -msimd128 -nostdlib -Wall -Wextra -Werror \
    -ffile-prefix-map="$PWD"=. -c "$src" -o "$obj"
  objs+=("$obj")
done
"$CC" --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--export=__heap_base \
  -Wl,--max-memory=4294967296 -Wl,-z,stack-size=65536 "${objs[@]}" -o "$tmp/duo-model.wasm"

if [[ "${1:-}" == "--check" ]]; then
  if ! cmp -s "$tmp/duo-model.wasm" "$out"; then
    echo "wasm/model: $out differs from what wasm/model/*.c build to; run bash wasm/model/build.sh and commit it" >&2
    exit 1
  fi
  echo "wasm/model: $out is up to date ($(wc -c <"$out") bytes)"
else
  mkdir -p wasm/dist
  cp "$tmp/duo-model.wasm" "$out"
  echo "wasm/model: built $out ($(wc -c <"$out") bytes)"
fi
