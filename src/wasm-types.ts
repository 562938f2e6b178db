/**
 * The WebAssembly type the public API names (BackendOptions.wasmModule, the model's modelWasm). TypeScript declares
 * the WebAssembly namespace only in its DOM and web-worker libs, so a consumer that type-checks for Node alone
 * (`lib: ["es2022"], types: ["node"]`) would fail on our declarations. Declared here as an interface, which merges
 * with the full one wherever a consumer has it; each entry point imports this module for its declarations.
 */
declare global {
  namespace WebAssembly {
    // deno-lint-ignore no-empty-interface
    interface Module {}
  }
}
export {};
