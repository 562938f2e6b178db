# Sourced by wasm/build.sh and wasm/model/build.sh: the compiler, the --check switch, a scratch dir, and the final
# comparison or listing. clang-19 straight to wasm32 (no emscripten, no libc, zero imports); objects are compiled with
# -O3 -c and linked without -O: a link step with -O makes clang run whatever wasm-opt is on PATH (binaryen 108 on
# Debian 12), which would make the output depend on that tool.
# Needs clang-19 and wasm-ld-19 (Debian: apt-get install clang-19 lld-19); CC=... overrides the compiler.
# Before sourcing: `script` (the caller's path for messages) and `dist` (where the committed .wasm files live);
# pass the caller's arguments. After: $CC, $check (1 with --check), $obj (scratch), $out (where to link).
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "$script: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }
check=0
[[ "${1:-}" == "--check" ]] && check=1
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
out="$dist"
((check)) && out="$obj/dist"
mkdir -p "$out"

# finish FILE...: with --check, exit 1 if a fresh build of a file differs from the committed one; else list them.
finish() {
  if ((check == 0)); then
    for f in "$@"; do ls -l "$out/$f"; done
    return 0
  fi
  local status=0
  for f in "$@"; do
    if ! cmp -s "$out/$f" "$dist/$f"; then
      echo "$script --check: wasm/dist/$f differs from a fresh build of its sources (run: bash $script)" >&2
      status=1
    fi
  done
  ((status == 0)) && echo "$script --check: wasm/dist/$* match the sources"
  return $status
}
