/**
 * `duo-attention/wasm`: the entry for browsers, edge functions and bundlers. Same API as the package root; the
 * difference is how the kernels arrive — compile `duo.wasm` yourself (or let your platform do it) and pass the
 * module, so nothing reads files:
 *
 *   import { DuoAttention } from "duo-attention/wasm";
 *   import wasmModule from "duo-attention/dist/duo.wasm";        // e.g. a Cloudflare Workers / Vite wasm import
 *   const duo = await DuoAttention.create({ shape, heads, backend: "wasm", wasmModule, threads: 0 });
 *
 * `threads: 0` runs the kernels in the calling thread (edge runtimes have no workers); in a browser with
 * cross-origin isolation, `threads: navigator.hardwareConcurrency` spreads heads over workers.
 */
export * from "./index.ts";
