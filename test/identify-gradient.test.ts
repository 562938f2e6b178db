import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../src/model/config.ts";
import { gateModelFromTensors, type GateModel } from "../src/identify/model.ts";
import { objective } from "../src/identify/objective.ts";
import { identifyHeads } from "../src/identify/identify.ts";
import type { Sample } from "../src/identify/forward.ts";
import { sinkEnd, windowStart, visible, type StreamingWindow } from "../src/identify/window.ts";
import { type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";
import { rng } from "./helpers/random.ts";

/** A tiny random model as identification sees it (weights in memory; the directory is removed at once). */
function tiny(spec: TinySpec): GateModel {
  const m = writeTinyModel(spec);
  try {
    return gateModelFromTensors(parseConfig(m.config), (n) => m.weights.get(n)?.data);
  } finally {
    m.dispose();
  }
}

function sample(T: number, nLab: number, seed: number): Sample {
  const r = rng(seed);
  return { ids: Int32Array.from({ length: T }, () => 3 + Math.floor(r() * 250)), labelStart: T - nLab };
}

function randomGates(n: number, seed: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => 0.15 + 0.7 * r());
}

const TOKEN: StreamingWindow = { sink: 2, recent: 5, blockSize: 0 };
const BLOCK: StreamingWindow = { sink: 3, recent: 6, blockSize: 4 }; // sb = 1, lb = 2 blocks of 4

const ARCHS: [string, TinySpec, StreamingWindow][] = [
  ["MHA, Λ block mask", { layers: 2, heads: 4, kvHeads: 4, seed: 11 }, BLOCK],
  ["GQA G=2, q/k/v/o and MLP biases, token mask", { layers: 3, heads: 4, kvHeads: 2, attentionBias: true, mlpBias: true, seed: 12 }, TOKEN],
  ["GQA G=4, Qwen2 (q/k/v biases), tied embeddings, linear RoPE ×4", { architecture: "Qwen2ForCausalLM", layers: 2, heads: 4, kvHeads: 1, tie: true, ropeScaling: { rope_type: "linear", factor: 4 }, seed: 13 }, BLOCK],
  ["GQA G=2, llama3 RoPE scaling, head_dim 16", { layers: 2, hidden: 32, heads: 4, kvHeads: 2, headDim: 16, ropeTheta: 500000, ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }, seed: 14 }, TOKEN],
];

for (const [name, spec, window] of ARCHS) {
  test(`identify: dL/dgate matches central differences within 1e-6 relative (${name})`, () => {
    const m = tiny(spec), N = m.config.numLayers * m.config.numKvHeads;
    const s = sample(40, 8, 3), gates = randomGates(N, 4);
    const { grad } = objective(m, s, gates, { window });
    const e = 1e-5;
    let worst = 0, scale = 0;
    for (let i = 0; i < N; i++) {
      const up = gates.slice(), down = gates.slice();
      up[i]! += e;
      down[i]! -= e;
      const fd = (objective(m, s, up, { window, gradient: false }).loss - objective(m, s, down, { window, gradient: false }).loss) / (2 * e);
      worst = Math.max(worst, Math.abs(fd - grad[i]!));
      scale = Math.max(scale, Math.abs(fd));
    }
    assert.ok(scale > 1e-4, `the gradient is not trivially small (max |dL/dgate| ${scale})`);
    assert.ok(worst / scale <= 1e-6, `max relative error ${worst / scale}`);
  });
}

test("identify: at gate = 1 the student is the teacher: zero loss and exactly zero distillation gradient", () => {
  const m = tiny({ layers: 3, heads: 4, kvHeads: 2, attentionBias: true, seed: 21 }), N = m.config.numLayers * m.config.numKvHeads;
  const r = objective(m, sample(50, 10, 5), new Float64Array(N).fill(1), { window: TOKEN, reg: 0 });
  assert.equal(r.distill, 0);
  assert.deepEqual(Array.from(r.grad), new Array(N).fill(0));
  // the L1 term alone: 0.05 · sign / N
  const withReg = objective(m, sample(50, 10, 5), new Float64Array(N).fill(1), { window: TOKEN });
  for (const g of withReg.grad) assert.equal(g, 0.05 / N);
});

test("identify: the Λ mask is upstream's block mask (sink blocks + the last ⌈R/B⌉ blocks, causal)", () => {
  const w = { sink: 128, recent: 256, blockSize: 128 };
  assert.equal(sinkEnd(w), 128);
  assert.equal(windowStart(w, 383), 128);
  assert.equal(windowStart(w, 384), 256); // the first query with a gap (SPEC §3.1)
  assert.ok(visible(w, 384, 127) && !visible(w, 384, 128) && visible(w, 384, 256) && !visible(w, 384, 385));
  assert.equal(sinkEnd({ sink: 64, recent: 256, blockSize: 128 }), 128); // S = 64 trains as one 128-block
  assert.equal(windowStart({ sink: 4, recent: 8, blockSize: 0 }, 20), 13); // token mask: R keys including itself
});

test("identify: the loss depends on exactly the cone of input rows: sinks and the last nLab + (R−1)·L rows", () => {
  const m = tiny({ layers: 3, heads: 4, kvHeads: 2, seed: 31 }), N = m.config.numLayers * m.config.numKvHeads;
  const T = 120, nLab = 10, L = 3;
  const r = objective(m, sample(T, nLab, 6), randomGates(N, 7), { window: { sink: 4, recent: 8, blockSize: 0 }, cone: false });
  const H = m.config.hiddenSize, nonzero: number[] = [];
  for (let t = 0; t < T; t++) if (r.dInput!.subarray(t * H, (t + 1) * H).some((x) => x !== 0)) nonzero.push(t);
  const first = T - nLab - (8 - 1) * L;
  const expected = [0, 1, 2, 3, ...Array.from({ length: T - first }, (_, i) => first + i)];
  assert.deepEqual(nonzero, expected);
});

test("identify: the cone-restricted student equals the full-sequence student (loss, dL/dgate, gates after 20 steps)", async () => {
  const m = tiny({ layers: 3, heads: 4, kvHeads: 2, attentionBias: true, seed: 41 }), N = m.config.numLayers * m.config.numKvHeads;
  const s = sample(96, 8, 8), gates = randomGates(N, 9);
  for (const window of [TOKEN, BLOCK]) {
    const cone = objective(m, s, gates, { window }), full = objective(m, s, gates, { window, cone: false });
    assert.ok(cone.rows.keys[0]!.length < 40, `the cone is smaller than the sequence (${cone.rows.keys[0]!.length} of 96 rows)`);
    assert.equal(cone.loss, full.loss);
    assert.deepEqual(Array.from(cone.grad), Array.from(full.grad));
  }
  const data = { sample: (step: number) => sample(64, 6, 100 + step) };
  const a = await identifyHeads(m, { data, steps: 20, window: BLOCK }), b = await identifyHeads(m, { data, steps: 20, window: BLOCK, cone: false });
  assert.deepEqual(Array.from(a.gates), Array.from(b.gates));
  assert.deepEqual(a.losses.map((x) => x.loss), b.losses.map((x) => x.loss));
  assert.ok(a.gates.some((g) => g < 1), "the gates moved");
});
