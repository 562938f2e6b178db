/**
 * Deno.dlopen translation of ffi/symbols.ts ("buffer" parameters take typed arrays or null). Needs --allow-ffi
 * (and --allow-read / --allow-env for the library path lookup).
 */
import type { Binding, Library, SymbolTable } from "./symbols.ts";

// The part of the Deno namespace used here (src/ and ffi/ are type-checked without Deno's own types by tsc).
interface DenoFfi {
  dlopen(path: string, symbols: Record<string, { parameters: string[]; result: string }>): {
    symbols: Record<string, (...args: unknown[]) => unknown>;
    close(): void;
  };
  UnsafePointerView: new (pointer: object) => { getCString(): string };
}

export const binding: Binding = {
  async open<S extends SymbolTable>(path: string, SYMBOLS: S): Promise<Library<S>> {
    const deno = (globalThis as unknown as { Deno: DenoFfi }).Deno;
    const types = { i32: "i32", u32: "u32", u64: "u64", buffer: "buffer", f32: "f32", f64: "f64", cstring: "pointer", void: "void" } as const;
    const defs = Object.fromEntries(
      Object.entries(SYMBOLS).map(([name, s]) => [name, { parameters: s.args.map((a) => types[a]), result: types[s.result] }]),
    );
    const lib = deno.dlopen(path, defs);
    const fns: Record<string, unknown> = { close: () => lib.close() };
    for (const [name, s] of Object.entries(SYMBOLS)) {
      const f = lib.symbols[name]!;
      fns[name] = s.result === "cstring"
        ? () => {
          const p = f() as object | null;
          return p === null ? "" : new deno.UnsafePointerView(p).getCString();
        }
        : f;
    }
    return fns as Library<S>;
  },
};
