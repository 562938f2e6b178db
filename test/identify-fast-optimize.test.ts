/**
 * `optimize` on the fast kernels (src/identify/fast-optimize.ts: ModelKernels + attention backend + BackwardKernels,
 * f32) against its float64 twin (objective.ts): on random tiny models (MHA and GQA, biases, tied Qwen2, llama3 RoPE
 * scaling, Λ blocks and the token mask) the loss agrees within 1e-5 relative and every gate's dL/dα within 1e-5 of the largest |dL/dα|
 * (f32 activations against float64; measured ≤ 2e-7 for both), the cone equals the full-sequence student, and identifyHeadsFast's optimize
 * run follows the float64 run's gates.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend, probeBackend } from "../src/backend/registry.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModelKernels } from "../src/model/kernels.ts";
import { createBackwardKernels } from "../src/identify/backward-kernels.ts";
import { fastModelFromGate } from "../src/identify/fast-model.ts";
import { FastObjective, optimizeModelFromGate } from "../src/identify/fast-optimize.ts";
import type { Sample } from "../src/identify/forward.ts";
import { identifyHeads, identifyHeadsFast } from "../src/identify/identify.ts";
import { gateModelFromTensors, type GateModel } from "../src/identify/model.ts";
import { objective } from "../src/identify/objective.ts";
import type { StreamingWindow } from "../src/identify/window.ts";
import { runtime } from "../src/runtime.ts";
import { rng } from "./helpers/random.ts";
import { type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";

const native = await probeBackend("native");
const skips = {
  wasm: runtime().wasmSimd ? false : "skipped: this runtime has no WebAssembly SIMD",
  native: native.usable ? false : `skipped: native backend not usable here (${native.reason})`,
};

function tiny(spec: TinySpec): GateModel {
  const m = writeTinyModel(spec);
  try {
    return gateModelFromTensors(parseConfig(m.config), (n) => m.weights.get(n)?.data);
  } finally {
    m.dispose();
  }
}

function sample(seed: number, T: number, nLab: number): Sample {
  const r = rng(seed);
  return { ids: Int32Array.from({ length: T }, () => 3 + Math.floor(r() * 250)), labelStart: T - nLab };
}

/** The fast objective of `m` on kernels and backend `name`, run by `fn`, disposed after. */
async function withFast<R>(m: GateModel, name: "wasm" | "native", window: StreamingWindow, fn: (f: FastObjective) => Promise<R>): Promise<R> {
  const kernels = await createModelKernels(name, { threads: 2 }), backend = await createBackend(name, { threads: name === "wasm" ? 0 : 2 });
  try {
    const bk = await createBackwardKernels(kernels, { threads: 2 });
    return await fn(new FastObjective(optimizeModelFromGate(m, fastModelFromGate(m, kernels)), bk, backend, window));
  } finally {
    kernels.dispose();
    await backend.dispose();
  }
}

const CASES: [string, TinySpec, StreamingWindow][] = [
  ["GQA G=2, biases, Λ blocks of 4", { layers: 3, heads: 4, kvHeads: 2, attentionBias: true, mlpBias: true, seed: 31 }, { sink: 3, recent: 6, blockSize: 4 }],
  ["Qwen2 G=4, tied, token mask", { architecture: "Qwen2ForCausalLM", layers: 2, heads: 4, kvHeads: 1, tie: true, seed: 32 }, { sink: 2, recent: 5, blockSize: 0 }],
  ["MHA, Λ blocks of 4", { layers: 3, heads: 2, kvHeads: 2, seed: 33 }, { sink: 4, recent: 8, blockSize: 4 }],
  ["GQA G=2, llama3 RoPE scaling, head_dim 16", { layers: 2, hidden: 32, heads: 4, kvHeads: 2, headDim: 16, ropeTheta: 500000, ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }, seed: 34 }, { sink: 3, recent: 6, blockSize: 4 }],
];

function assertClose(fast: { loss: number; grad: Float64Array }, ref: { loss: number; grad: Float64Array }, what: string): void {
  assert.ok(Math.abs(fast.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `${what}: loss ${fast.loss} vs float64 ${ref.loss}`);
  const top = Math.max(...ref.grad.map(Math.abs));
  assert.ok(top > 1e-6, `${what}: the gradient is not trivially zero`);
  for (let i = 0; i < ref.grad.length; i++) {
    assert.ok(Math.abs(fast.grad[i]! - ref.grad[i]!) <= 1e-5 * top, `${what}: dL/dgate[${i}] ${fast.grad[i]} vs float64 ${ref.grad[i]} (top ${top})`);
  }
}

for (const name of ["wasm", "native"] as const) {
  for (const [label, spec, window] of CASES) {
    test(`identify fast optimize on ${name}: loss and dL/dα match float64 (${label}), cone = full sequence`, { skip: skips[name] }, async () => {
      const m = tiny(spec), N = m.config.numLayers * m.config.numKvHeads, r = rng(7);
      const gates = Float64Array.from({ length: N }, () => 0.15 + 0.7 * r());
      gates[0] = 1; // the clamp passes 1 inclusive
      if (N > 2) gates[N - 1] = 1.2; // outside [0, 1]: only the L1 term
      const s = sample(41, 44, 9);
      const ref = objective(m, s, gates, { window });
      await withFast(m, name, window, async (f) => {
        assertClose(await f.evaluate(s, gates), ref, `${name} ${label}`);
        assertClose(await f.evaluate(s, gates, { cone: false }), ref, `${name} ${label}, full-sequence student`);
      });
    });
  }

  test(`identify fast optimize on ${name}: dL/dα stays right when the backward's gradients are ~2^-120 (loss scaling keeps them out of subnormals: native flushed them to 0, wasm ran them ~100x slower)`, { skip: skips[name] }, async () => {
    // a final norm of 2^-60 scales dL/dH by 2^-120 and the gradient below it by 2^-120 more: f32 would underflow
    const m = tiny(CASES[0]![1]), N = m.config.numLayers * m.config.numKvHeads, window = CASES[0]![2], r = rng(9);
    m.norm.forEach((x, i) => (m.norm[i] = x * 2 ** -60));
    const gates = Float64Array.from({ length: N }, () => 0.15 + 0.7 * r()), s = sample(43, 44, 9);
    const ref = objective(m, s, gates, { window, reg: 0 });
    const top = Math.max(...ref.grad.map(Math.abs));
    assert.ok(top > 0 && top < 2 ** -110, `the float64 gradient is tiny: ${top}`);
    await withFast(m, name, window, async (f) => {
      const fast = await f.evaluate(s, gates, { reg: 0 });
      for (let i = 0; i < N; i++) assert.ok(Math.abs(fast.grad[i]! - ref.grad[i]!) <= 1e-5 * top, `dL/dgate[${i}] ${fast.grad[i]} vs float64 ${ref.grad[i]} (top ${top})`);
    });
  });

  test(`identify fast optimize on ${name}: at α = 1 the distillation loss and gradient vanish (only the L1 term)`, { skip: skips[name] }, async () => {
    const m = tiny(CASES[0]![1]), N = m.config.numLayers * m.config.numKvHeads, window = CASES[0]![2];
    await withFast(m, name, window, async (f) => {
      const r = await f.evaluate(sample(5, 40, 8), new Float64Array(N).fill(1));
      assert.ok(r.distill === 0, `distill ${r.distill}`);
      for (const g of r.grad) assert.ok(Math.abs(g - 0.05 / N) <= 1e-12, `grad ${g}, L1 term ${0.05 / N}`);
    });
  });
}

test("identifyHeadsFast optimize (wasm) follows the float64 run: gates after 6 steps within 2e-3, same loss curve within 1e-4 relative", { skip: skips.wasm }, async () => {
  const [, spec, window] = CASES[0]!, m = tiny(spec);
  const data = { sample: (step: number) => sample(500 + step, 40, 8) };
  const opts = { method: "optimize" as const, data, steps: 6, window, gateDtype: "f32" as const, lr: 0.05 };
  const ref = await identifyHeads(m, opts);
  const kernels = await createModelKernels("wasm"), backend = await createBackend("wasm", { threads: 0 });
  try {
    const fast = await identifyHeadsFast(optimizeModelFromGate(m, fastModelFromGate(m, kernels)), backend, opts);
    assert.equal(fast.method, "optimize");
    assert.equal(fast.steps, 6);
    for (let i = 0; i < ref.gates.length; i++) assert.ok(Math.abs(fast.gates[i]! - ref.gates[i]!) <= 2e-3, `gate ${i}: fast ${fast.gates[i]} vs float64 ${ref.gates[i]}`);
    assert.ok(ref.gates.some((g) => g < 0.9), "the gates moved");
    fast.losses.forEach((p, i) => assert.ok(Math.abs(p.loss - ref.losses[i]!.loss) <= 1e-4 * ref.losses[i]!.loss, `loss ${i}: ${p.loss} vs ${ref.losses[i]!.loss}`));
  } finally {
    kernels.dispose();
    await backend.dispose();
  }
});
