// What reaching the wasm workers costs per decode call: one layer of the Llama-3-8B shape (32/8 heads, D = 128, bf16,
// 4 retrieval + 4 streaming KV heads, S = 16, R = 32) at a context of 1–50 tokens, where the kernels take tens of µs,
// run in this thread, in workers through the shared lane (src/backend/wasm-lane.ts), and in workers with every
// request a message. Each case is the best of 30 rounds of 50 calls, the cases interleaved so they see the same
// machine. Run: node --import tsx bench/wasm-transport.ts [--threads 1] (or bun / deno run -A).
import { createWasmBackend } from "../src/backend/wasm.ts";
import { laneUsable } from "../src/backend/wasm-lane.ts";
import { DuoAttention } from "../src/engine/duo.ts";
import { runtime } from "../src/runtime.ts";

const g = globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } };
const argv = g.Deno?.args ?? g.process?.argv.slice(2) ?? [];
const at = argv.indexOf("--threads");
const threads = at >= 0 ? Number(argv[at + 1]) : 1;
const shape = { numLayers: 1, numHeads: 32, numKvHeads: 8, headDim: 128 };
const heads = [[true, true, true, true, false, false, false, false]];
const q = new Float32Array(32 * 128).fill(0.01), k = new Float32Array(8 * 128).fill(0.02);

const cases = [
  ["in this thread", { threads: 0 }],
  ["workers, shared lane", { threads, sharedLane: true }],
  ["workers, messages", { threads, sharedLane: false }],
] as const;
const engines = [];
for (const [name, opts] of cases) {
  if (name === "workers, shared lane" && !laneUsable()) continue;
  const backend = await createWasmBackend(opts);
  const duo = await DuoAttention.create({ shape, heads, sinkSize: 16, recentSize: 32, kvDtype: "bf16", backend, maxContext: 4096 });
  engines.push({ name, backend, duo, seq: duo.sequence(), best: Infinity });
}
for (let round = 0; round < 30; round++) {
  for (const e of engines) {
    e.seq.reset();
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) await e.seq.attend(0, q, k, k);
    e.best = Math.min(e.best, (performance.now() - t0) / 50);
  }
}
const base = engines[0]!.best;
console.log(`${runtime().name} ${runtime().version}, ${threads} worker(s): µs per decode call (contexts 1–50)`);
for (const e of engines) {
  const extra = e === engines[0] ? "" : `  (+${((e.best - base) * 1000).toFixed(0)} µs over this thread)`;
  console.log(`  ${e.name.padEnd(22)} ${(e.best * 1000).toFixed(0).padStart(5)} µs${extra}`);
}
for (const e of engines) {
  await e.duo.dispose();
  await e.backend.dispose();
}
