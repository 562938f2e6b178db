#!/usr/bin/env bash
# Builds the native CPU library, native/dist/linux-<arch>/libduo.so, from the SAME C sources as the wasm build
# (wasm/src: the drivers append.c, attend.c, merge.c, quant.c and the *_simd.c / *_scalar.c twins; wasm/model/kernels.c, the
# model kernels) plus native/src (the dispatcher, host memory, thread pool). The sources are compiled once per instruction set, every symbol suffixed
# with its name (-Dk_pv_m4=k_pv_m4_avx2, ...), and native/src/dispatch.c picks one set at load from the CPU:
#   x86-64:  avx512 (-march=x86-64-v4), avx2 (x86-64-v3: AVX2 + FMA), sse41 (x86-64-v2), scalar (x86-64)
#   aarch64: neon, scalar
# Reproducible (no build id, no paths, stripped): CI rebuilds and compares byte for byte, as for wasm/dist.
# The NEON mapping is also compile-checked from x86-64 (clang --target=aarch64-linux-gnu -fsyntax-only).
# Usage: bash native/build.sh            build into native/dist/linux-<arch>/
#        bash native/build.sh --check    build into a temp dir; exit 1 if it differs from the committed library
# Needs clang-19 and lld-19 (Debian: apt-get install clang-19 lld-19); CC=... overrides the compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
src="$root/wasm/src"
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "native/build.sh: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }
check=0
[[ "${1:-}" == "--check" ]] && check=1

case "$(uname -m)" in
  x86_64) arch=linux-x64; sets=(avx512:x86-64-v4:simd avx2:x86-64-v3:simd sse41:x86-64-v2:simd scalar:x86-64:scalar); base=x86-64 ;;
  aarch64) arch=linux-arm64; sets=(neon:armv8-a:simd scalar:armv8-a:scalar); base=armv8-a ;;
  *) echo "native/build.sh: no build for $(uname -m) (x86_64 and aarch64 only)" >&2; exit 2 ;;
esac
dist="$here/dist/$arch"
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
out="$dist"
((check)) && out="$obj/dist"
mkdir -p "$out"

cflags=(-O3 -fPIC -std=c11 -fvisibility=hidden -ffp-contract=off -Wall -Wextra -Werror "-ffile-prefix-map=$root=.")
# Every function the drivers and kernels define (kernels.h, quant.h) or export (duo.h) gets the set's suffix.
names=$(sed -nE 's/^(void|int|float|int32_t|uint32_t) (k_[a-z0-9_]+)\(.*/\2/p' "$src/kernels.h" "$src/quant.h"
        sed -nE 's/^DUO_EXPORT [a-z0-9_]+ \*?(duo_[a-z0-9_]+)\(.*/\1/p' "$src/duo.h")

# The model kernels (wasm/model/kernels.c): its exports and the MATMUL / EMBED instances.
model="$root/wasm/model/kernels.c"
model_names=$(sed -nE 's/^EXPORT void ([a-z0-9_]+)\(.*/\1/p; s/^(MATMUL|EMBED|MATMUL_Q|EMBED_Q)\(([a-z0-9_]+),.*/\2/p' "$model")
# The backward kernels of gate identification (wasm/model/backward.c): its exports and LINEAR_BWD instances.
backward="$root/wasm/model/backward.c"
backward_names=$(sed -nE 's/^EXPORT void ([a-z0-9_]+)\(.*/\1/p; s/^LINEAR_BWD\(([a-z0-9_]+),.*/\1/p' "$backward")

objs=()
for set in "${sets[@]}"; do
  IFS=: read -r name march twin <<<"$set"
  renames=()
  for n in $names; do renames+=("-D$n=${n}_$name"); done
  for f in append.c attend.c merge.c quant.c "attend_$twin.c" "convert_$twin.c" "quant_$twin.c" "bench_$twin.c"; do
    "$CC" "${cflags[@]}" "-march=$march" "${renames[@]}" -c "$src/$f" -o "$obj/$name-${f%.c}.o"
    objs+=("$obj/$name-${f%.c}.o")
  done
  if [[ $twin == simd ]]; then # the model kernels have no scalar twin: SIMD sets only
    renames=()
    for n in $model_names; do renames+=("-D$n=${n}_$name"); done
    "$CC" "${cflags[@]}" "-march=$march" "${renames[@]}" -c "$model" -o "$obj/$name-model.o"
    objs+=("$obj/$name-model.o")
    renames=()
    for n in $backward_names; do renames+=("-D$n=${n}_$name"); done
    "$CC" "${cflags[@]}" "-march=$march" "${renames[@]}" -c "$backward" -o "$obj/$name-backward.o"
    objs+=("$obj/$name-backward.o")
  fi
done
for f in "$here"/src/*.c; do
  b="$(basename "$f" .c)"
  "$CC" "${cflags[@]}" "-march=$base" -pthread -c "$f" -o "$obj/host-$b.o"
  objs+=("$obj/host-$b.o")
done
"$CC" -shared -fuse-ld=lld -pthread -s -Wl,--build-id=none -Wl,--version-script="$here/exports.map" -Wl,-O1 \
  "${objs[@]}" -o "$out/libduo.so"

# The other architecture's SIMD mapping compiles too (no link: no cross libc here).
other=aarch64-linux-gnu
[[ "$arch" == linux-arm64 ]] && other=x86_64-linux-gnu
for f in "$src/attend_simd.c" "$src/convert_simd.c" "$src/quant_simd.c" "$src/bench_simd.c" "$src/attend.c" "$model" "$backward"; do
  "$CC" --target=$other -ffreestanding -std=c11 -Wall -Wextra -Werror $([[ $other == x86* ]] && echo -march=x86-64-v3) \
    -fsyntax-only "$f"
done

if ((check)); then
  if ! cmp -s "$out/libduo.so" "$dist/libduo.so"; then
    echo "native/build.sh --check: native/dist/$arch/libduo.so differs from a fresh build of its sources (run: bash native/build.sh)" >&2
    exit 1
  fi
  echo "native/build.sh --check: native/dist/$arch/libduo.so matches the sources"
else
  ls -l "$out/libduo.so"
fi
