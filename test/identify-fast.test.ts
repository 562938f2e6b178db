/**
 * `score` on the fast kernels (src/identify/fast-score.ts) against its float64 twin (score.ts): the deviations
 * agree within 1e-5 of the largest score (f32 activations and attention against float64; measured ≤ 2e-7), and every
 * pair of heads whose float64 scores differ by more than that tolerance is ordered the same way. Planted model
 * (Λ block mask, MHA, head_dim 16) and random tiny models (GQA, biases, token mask, tied Qwen2, several query
 * blocks of labelled rows), on the wasm kernels with the wasm backend (one and two workers) and on the reference
 * kernels with the reference backend.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend, probeBackend } from "../src/backend/registry.ts";
import type { Backend } from "../src/backend/types.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModelKernels, type KernelsName } from "../src/model/kernels.ts";
import { gateModelFromTensors, type GateModel } from "../src/identify/model.ts";
import { fastModelFromGate } from "../src/identify/fast-model.ts";
import { optimizeModelFromGate } from "../src/identify/fast-optimize.ts";
import { identifyHeads, identifyHeadsFast } from "../src/identify/identify.ts";
import type { Sample } from "../src/identify/forward.ts";
import type { StreamingWindow } from "../src/identify/window.ts";
import { plantedModel, recallSample, TRUE_RETRIEVAL } from "./helpers/planted-model.ts";
import { type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";
import { rng } from "./helpers/random.ts";

const TOL = 1e-5;
const native = await probeBackend("native");

function tiny(spec: TinySpec): GateModel {
  const m = writeTinyModel(spec);
  try {
    return gateModelFromTensors(parseConfig(m.config), (n) => m.weights.get(n)?.data);
  } finally {
    m.dispose();
  }
}

/** Fast-path scores of `m` on kernels `kn` with attention on `backend` (threads = workers of the wasm backend). */
async function fastScores(m: GateModel, kn: KernelsName, backend: "wasm" | "native" | "reference", threads: number, data: (s: number) => Sample, samples: number, window: StreamingWindow): Promise<Float64Array> {
  const kernels = await createModelKernels(kn, { modelThreads: threads, threads });
  const b: Backend = await createBackend(backend, { threads });
  try {
    return (await identifyHeadsFast(fastModelFromGate(m, kernels), b, { method: "score", data: { sample: data }, samples, window })).scores!;
  } finally {
    kernels.dispose();
    await b.dispose();
  }
}

function assertSameScores(fast: Float64Array, ref: Float64Array, what: string): void {
  const top = Math.max(...ref), tol = TOL * top;
  assert.ok(top > 0, `${what}: some head deviates`);
  for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(fast[i]! - ref[i]!) <= tol, `${what}: head ${i} fast ${fast[i]} vs float64 ${ref[i]} (tolerance ${tol})`);
  for (let i = 0; i < ref.length; i++) {
    for (let j = 0; j < ref.length; j++) {
      if (ref[i]! - ref[j]! > 2 * tol) assert.ok(fast[i]! > fast[j]!, `${what}: heads ${i} > ${j} in float64 but not in the fast path`);
    }
  }
}

test("identify fast score: the planted model's scores match float64 within 1e-5 of the top, same ranking and top heads", async () => {
  const model = plantedModel(), window = { sink: 4, recent: 16, blockSize: 8 }, T = 64;
  const data = (s: number) => recallSample(3000 + s, T);
  const ref = (await identifyHeads(model, { method: "score", data: { sample: data }, samples: 2, window })).scores!;
  const cases: [KernelsName, "wasm" | "native" | "reference", number][] = [["wasm", "wasm", 0], ["reference", "reference", 0]];
  for (const [kn, backend, threads] of cases) {
    const fast = await fastScores(model, kn, backend, threads, data, 2, window);
    assertSameScores(fast, ref, `planted, kernels ${kn}, backend ${backend}`);
    const top = Array.from(fast.keys()).sort((a, b) => fast[b]! - fast[a]!).slice(0, 4).sort((a, b) => a - b);
    assert.deepEqual(top, TRUE_RETRIEVAL);
  }
});

const RANDOM: [string, TinySpec, StreamingWindow][] = [
  ["GQA G=2, biases, token mask", { layers: 3, heads: 4, kvHeads: 2, attentionBias: true, mlpBias: true, seed: 21 }, { sink: 2, recent: 5, blockSize: 0 }],
  ["Qwen2 GQA G=4, tied, Λ blocks of 4 (labels over 3 query blocks)", { architecture: "Qwen2ForCausalLM", layers: 2, heads: 4, kvHeads: 1, tie: true, seed: 22 }, { sink: 3, recent: 6, blockSize: 4 }],
  ["MHA, Λ blocks of 4, two wasm workers", { layers: 2, heads: 4, kvHeads: 4, seed: 23 }, { sink: 3, recent: 6, blockSize: 4 }],
];

for (const [name, spec, window] of RANDOM) {
  test(`identify fast score: a random tiny model's scores match float64 within 1e-5 of the top (${name})`, async () => {
    const m = tiny(spec), T = 48, nLab = 10;
    const data = (s: number): Sample => {
      const r = rng(100 + s);
      return { ids: Int32Array.from({ length: T }, () => 3 + Math.floor(r() * 250)), labelStart: T - nLab };
    };
    const ref = (await identifyHeads(m, { method: "score", data: { sample: data }, samples: 2, window })).scores!;
    const threads = name.includes("two wasm workers") ? 2 : 0;
    assertSameScores(await fastScores(m, threads ? "wasm-parallel" : "wasm", "wasm", threads, data, 2, window), ref, name);
  });
}

test("identify fast score: native kernels and native backend (2 threads) match float64 within 1e-5 of the top", { skip: native.usable ? false : `native not usable here (${native.reason})` }, async () => {
  const model = plantedModel(), window = { sink: 4, recent: 16, blockSize: 8 }, T = 64;
  const data = (s: number) => recallSample(3000 + s, T);
  const ref = (await identifyHeads(model, { method: "score", data: { sample: data }, samples: 2, window })).scores!;
  assertSameScores(await fastScores(model, "native", "native", 2, data, 2, window), ref, "planted, native");
  const m = tiny({ layers: 3, heads: 4, kvHeads: 2, attentionBias: true, mlpBias: true, seed: 21 }), window0 = { sink: 2, recent: 5, blockSize: 0 };
  const data0 = (s: number): Sample => {
    const r = rng(100 + s);
    return { ids: Int32Array.from({ length: 48 }, () => 3 + Math.floor(r() * 250)), labelStart: 38 };
  };
  const ref0 = (await identifyHeads(m, { method: "score", data: { sample: data0 }, samples: 2, window: window0 })).scores!;
  assertSameScores(await fastScores(m, "native", "native", 2, data0, 2, window0), ref0, "random GQA, token mask, native");
});

test("identify fast: optimize needs an OptimizeModel (the norms) and wasm or native kernels, each refusal naming the fix", async () => {
  const m = tiny({ layers: 1, heads: 2, kvHeads: 2, seed: 5 }), data = { sample: () => ({ ids: Int32Array.of(1, 2), labelStart: 1 }) };
  const b = await createBackend("reference");
  const kernels = await createModelKernels("wasm"), ref = await createModelKernels("reference");
  try {
    await assert.rejects(identifyHeadsFast(fastModelFromGate(m, kernels), b, { method: "optimize", data }), /needs an OptimizeModel \(optimizeModelFromGate or loadOptimizeModel/);
    await assert.rejects(identifyHeadsFast(optimizeModelFromGate(m, fastModelFromGate(m, ref)), b, { method: "optimize", data }), /runs on model kernels "wasm" or "native".*--kernels reference/);
  } finally {
    kernels.dispose();
    await b.dispose();
  }
});
