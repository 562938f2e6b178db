// The browser demo: one full-attention engine and one DuoAttention engine on the same wasm backend, fed the same
// K/V; every `step` tokens it times a decode step (one token through every layer) on each and reads the KV bytes
// each holds, and redraws the two charts. Query parameters: max (tokens, default 16384), step (default 1024),
// layers (default 4), retrieval (fraction of KV heads, default 0.5: the paper's Llama-3-8B setting).
import { createBackend, DuoAttention, HeadSchedule, syntheticSchedule } from "duo-attention/wasm";
import { drawChart } from "./chart.js";

const params = new URLSearchParams(location.search);
const num = (name, dflt) => (params.has(name) ? Number(params.get(name)) : dflt);
const MAX = num("max", 16384), STEP = num("step", 1024), FRACTION = num("retrieval", 0.5);
// Llama-3-8B's attention shape (32 query heads, 8 KV heads of 128), for a few of its 32 layers.
const shape = { numLayers: num("layers", 4), numHeads: 32, numKvHeads: 8, headDim: 128 };
const COLORS = { full: "#d1495b", duo: "#2e86ab" };
const $ = (id) => document.getElementById(id);

/** Seeded inputs in [-1, 1) (post-RoPE q/k/v stand-ins). */
let seed = 1;
function random(n) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  return a;
}

/** One decode step through every layer of `seq`; milliseconds. */
async function decodeStep(seq, q, k, v) {
  const t0 = performance.now();
  for (let layer = 0; layer < shape.numLayers; layer++) await seq.attend(layer, q, k, v);
  return performance.now() - t0;
}

const mib = (bytes) => bytes / 2 ** 20;

async function main() {
  // Workers need cross-origin isolation (COOP/COEP headers) for shared memory; without it, run in this thread.
  const threads = globalThis.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 2, 4) : 0;
  const backend = await createBackend("wasm", { threads });
  const common = { shape, backend, sinkSize: 64, recentSize: 256, kvDtype: "bf16" };
  const heads = syntheticSchedule(shape.numLayers, shape.numKvHeads, FRACTION);
  const full = await DuoAttention.create({ ...common, heads: HeadSchedule.full(shape.numLayers, shape.numKvHeads) });
  const duo = await DuoAttention.create({ ...common, heads });
  $("setup").textContent = `${shape.numLayers} layers of Llama-3-8B's attention (32 query / 8 KV heads of 128), bf16 KV; ` +
    `DuoAttention keeps ${Math.round(FRACTION * 100)}% of KV heads as retrieval heads, the rest hold 64 sink + 256 recent tokens; ` +
    `wasm backend, ${threads ? `${threads} workers (cross-origin isolated)` : "in this thread"}`;

  const seqFull = full.sequence(), seqDuo = duo.sequence();
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
  const q1 = random(Hq * D), k1 = random(Hkv * D), v1 = random(Hkv * D);
  const points = { time: { full: [], duo: [] }, memory: { full: [], duo: [] } };
  for (let grown = STEP; grown <= MAX; grown += STEP) {
    // grow the context: the same K/V into both caches, layer by layer
    for (let layer = 0; layer < shape.numLayers; layer++) {
      const k = random(STEP * Hkv * D), v = random(STEP * Hkv * D);
      await seqFull.fill(layer, k, v);
      await seqDuo.fill(layer, k, v);
    }
    // best of 3 decode steps each (they append to the context too), alternating which engine goes first
    let tFull = Infinity, tDuo = Infinity;
    for (let rep = 0; rep < 3; rep++) {
      if (rep % 2) tDuo = Math.min(tDuo, await decodeStep(seqDuo, q1, k1, v1));
      tFull = Math.min(tFull, await decodeStep(seqFull, q1, k1, v1));
      if (!(rep % 2)) tDuo = Math.min(tDuo, await decodeStep(seqDuo, q1, k1, v1));
    }
    const context = seqDuo.length(0);
    const bytesFull = seqFull.bytes().total, bytesDuo = seqDuo.bytes().total;
    points.time.full.push([context, tFull]);
    points.time.duo.push([context, tDuo]);
    points.memory.full.push([context, mib(bytesFull)]);
    points.memory.duo.push([context, mib(bytesDuo)]);

    $("context").textContent = context.toLocaleString("en");
    $("speed").textContent = `${(tFull / tDuo).toFixed(2)}× faster`;
    $("speed-detail").textContent = `DuoAttention ${tDuo.toFixed(2)} ms, full ${tFull.toFixed(2)} ms`;
    $("memory").textContent = `${(bytesFull / bytesDuo).toFixed(2)}× less`;
    $("memory-detail").textContent = `DuoAttention ${mib(bytesDuo).toFixed(1)} MiB, full ${mib(bytesFull).toFixed(1)} MiB`;
    drawChart($("chart-time"), {
      title: "decode step, all layers (ms, best of 3)", xLabel: "context (tokens)", yLabel: "ms",
      series: [{ name: "full", color: COLORS.full, points: points.time.full }, { name: "duo", color: COLORS.duo, points: points.time.duo }],
    });
    drawChart($("chart-memory"), {
      title: "KV cache held (MiB)", xLabel: "context (tokens)", yLabel: "MiB",
      series: [{ name: "full", color: COLORS.full, points: points.memory.full }, { name: "duo", color: COLORS.duo, points: points.memory.duo }],
    });
    await new Promise((r) => requestAnimationFrame(() => r())); // let the page paint this step
  }
  await full.dispose();
  await duo.dispose();
  await backend.dispose();
  return points;
}

main().then(
  (points) => {
    globalThis.demoResult = points;
    document.body.dataset.state = "done";
  },
  (e) => {
    $("setup").textContent = `failed: ${e.message}`;
    document.body.dataset.error = e.message;
    document.body.dataset.state = "error";
  },
);
