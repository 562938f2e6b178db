/**
 * koffi translation of ffi/symbols.ts, for Node (no built-in FFI before Node 26). koffi is an optional dependency and
 * is imported only here, at open time, so the package works without it.
 */
import type { Binding, Library, SymbolTable } from "./symbols.ts";

export const binding: Binding = {
  async open<S extends SymbolTable>(path: string, SYMBOLS: S): Promise<Library<S>> {
    const koffi = (await import("koffi")).default;
    // "void *" takes a typed array (a pointer to its bytes for the duration of the call) or null
    const types = {
      i32: "int32_t",
      u32: "uint32_t",
      u64: "uint64_t",
      buffer: "void *",
      f32: "float",
      f64: "double",
      cstring: "const char *",
      void: "void",
    } as const;
    const lib = koffi.load(path);
    const fns: Record<string, unknown> = { close: () => lib.unload() };
    for (const [name, s] of Object.entries(SYMBOLS)) {
      const f = lib.func(name, types[s.result], s.args.map((a) => types[a]));
      fns[name] = s.result === "cstring" ? () => String(f() ?? "") : f;
    }
    return fns as Library<S>;
  },
};
