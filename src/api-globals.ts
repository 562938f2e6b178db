/**
 * Global types the public API names that not every consumer's TypeScript lib declares, so that our declarations
 * type-check under a Node-only config (`lib: ["es2022"], types: ["node"]`: no WebAssembly namespace, which only the
 * DOM and web-worker libs have) and under a browser config without esnext (`lib: ["es2022", "dom"]`: no
 * Symbol.dispose / Symbol.asyncDispose, which DuoAttention and Sequence implement for `using`). Declared as
 * interface members, which merge with the full declarations wherever a consumer has them. Each entry point imports
 * this module for its declarations.
 */
declare global {
  namespace WebAssembly {
    // deno-lint-ignore no-empty-interface
    interface Module {}
  }
  interface SymbolConstructor {
    readonly dispose: unique symbol;
    readonly asyncDispose: unique symbol;
  }
}
export {};
