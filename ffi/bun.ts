/**
 * bun:ffi translation of ffi/symbols.ts. Typed arrays are handed to every call as they are (FFIType.ptr takes the
 * address at call time and accepts null); ptr() is never cached (it reads stale memory once a caller is
 * JIT-compiled: oven-sh/bun#32054).
 */
import type { Binding, Library, SymbolTable } from "./symbols.ts";

export const binding: Binding = {
  async open<S extends SymbolTable>(path: string, SYMBOLS: S): Promise<Library<S>> {
    const ffi = await import("bun:ffi"); // dynamic: other runtimes never load bun:ffi, bundlers keep it external
    const T = ffi.FFIType;
    const types = { i32: T.i32, u32: T.u32, u64: T.u64, buffer: T.ptr, f32: T.f32, f64: T.f64, cstring: T.cstring, void: T.void } as const;
    const defs = Object.fromEntries(
      Object.entries(SYMBOLS).map(([name, s]) => [name, { args: s.args.map((a) => types[a]), returns: types[s.result] }]),
    );
    const lib = ffi.dlopen(path, defs);
    const fns: Record<string, unknown> = { close: () => lib.close() };
    for (const [name, s] of Object.entries(SYMBOLS)) {
      const f = lib.symbols[name] as (...a: unknown[]) => unknown;
      // cstring results arrive as CString objects (or null): make them plain strings
      fns[name] = s.result === "cstring" ? () => String(f() ?? "") : f;
    }
    return fns as Library<S>;
  },
};
