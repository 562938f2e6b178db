// A tiny random Llama model on the CUDA backend (attention, and the model math through Backend.modelKernels, on a GPU
// or the host emulation build: helpers/cuda-target.ts) gives the reference run's greedy tokens and logits; and a
// layer's MLP half with the logits runs on device activations alone, only the argmax token crossing back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type CudaBackend, createCudaBackend } from "../src/backend/cuda.ts";
import { f32ToBf16Bits } from "../src/dtype.ts";
import type { Matrix } from "../src/model/kernels.ts";
import { ReferenceKernels } from "../src/model/kernels-reference.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { argmax } from "../src/model/sampler.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { randomArray } from "./helpers/random.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

const { library, label, skip } = cudaTarget;

test(`cuda model (${label}): a tiny Llama on the CUDA backend (attention and model math on the device) gives the reference's greedy tokens for 8 steps`, { skip }, async () => {
  // head dim 64 (the CUDA attention kernels take 64 and 128); one streaming KV head per layer with a small window
  const m = writeTinyModel({ layers: 2, hidden: 128, heads: 4, kvHeads: 2, headDim: 64, intermediate: 96, dtype: "bf16", seed: 5 });
  const opts = { kvDtype: "f32" as const, heads: [[true, false], [false, true]], sinkSize: 2, recentSize: 4 };
  const ref = await LlamaModel.load(m.dir, { ...opts, backend: "reference" });
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const cuda = await LlamaModel.load(m.dir, { ...opts, backend }); // kernels: the backend's own (Backend.modelKernels)
  try {
    assert.equal(cuda.kernels.name, "cuda");
    let ids = [1, 30, 71, 12, 99, 5, 140, 8, 77, 23, 61, 4]; // 12 prompt tokens: more than one matmul token tile
    for (let step = 0; step < 8; step++) {
      const [lr, lc] = [await ref.forward(ids), await cuda.forward(ids)];
      const scale = lr.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      let worst = 0;
      for (let i = 0; i < lr.length; i++) worst = Math.max(worst, Math.abs(lc[i]! - lr[i]!));
      // f32 accumulation (CUDA) against f64 (reference) through two layers: within 1e-5 of the largest logit (the
      // emulation build: about 4e-7)
      assert.ok(worst <= 1e-5 * scale, `step ${step}: logits differ by ${worst} (largest |logit| ${scale})`);
      const next = argmax(lr), sorted = [...lr].sort((a, b) => b - a);
      // the greedy choice is decided: the reference's top two are further apart than the two runs' logits
      assert.ok(sorted[0]! - sorted[1]! > 2 * worst, `step ${step}: top-2 margin ${sorted[0]! - sorted[1]!} within the error ${worst}; pick another seed`);
      assert.equal(argmax(lc), next, `step ${step}`);
      ids = [next];
    }
  } finally {
    await ref.dispose();
    await cuda.dispose();
    await backend.dispose();
    m.dispose();
  }
});

test(`cuda model (${label}): a layer's MLP half and the logits run on device activations, only the argmax token crosses back`, { skip }, async () => {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const k = await backend.modelKernels(), ref = new ReferenceKernels();
  try {
    const T = 3, H = 64, I = 96, V = 300, eps = 1e-5;
    const weight = (rows: number, cols: number, seed: number): [Matrix, Matrix] => {
      const bytes = new Uint8Array(Uint16Array.from(randomArray(rows * cols, seed, 0.2), f32ToBf16Bits).buffer);
      const [mc, mr] = [k.matrix(rows, cols, "bf16"), ref.matrix(rows, cols, "bf16")];
      k.write(mc, 0, bytes);
      ref.write(mr, 0, bytes);
      return [mc, mr];
    };
    const [o, gate, upW, downW, head] = [weight(H, H, 1), weight(I, H, 2), weight(I, H, 3), weight(H, I, 4), weight(V, H, 5)];
    const norm = randomArray(H, 6, 1), x0 = randomArray(T * H, 7, 2), a0 = randomArray(T * H, 8, 2);
    const [normC, normR] = [k.vector(norm), ref.vector(norm)];

    // device: every intermediate in one activations buffer, as views
    const all = k.activations(T * (4 * H + 2 * I) + V);
    let at = 0;
    const take = (n: number) => k.view(all, (at += n) - n, n);
    const [x, a, h, s, g, u, logits] = [take(T * H), take(T * H), take(T * H), take(T * H), take(T * I), take(T * I), take(V)];
    k.upload(x, x0);
    k.upload(a, a0);
    k.matmul(s, a, o[0], T); // x += a·Woᵀ
    k.add(x, s);
    k.rmsnorm(h, x, normC, T, eps); // x += down(silu(gate(h))·up(h))
    k.matmul(g, h, gate[0], T);
    k.matmul(u, h, upW[0], T);
    k.swiglu(g, g, u);
    k.matmul(s, g, downW[0], T);
    k.add(x, s);
    const last = k.view(x, (T - 1) * H, H), hl = k.view(h, 0, H);
    k.rmsnorm(hl, last, normC, 1, eps);
    k.matmul(logits, hl, head[0], 1);
    const token = k.argmax(logits);

    // host reference, the same steps
    const X = x0.slice(), S = new Float32Array(T * H), Hh = new Float32Array(T * H), G = new Float32Array(T * I), Uu = new Float32Array(T * I);
    ref.matmul(S, a0, o[1], T);
    X.forEach((v, i) => (X[i] = v + S[i]!));
    ref.rmsnorm(Hh, X, normR, T, eps);
    ref.matmul(G, Hh, gate[1], T);
    ref.matmul(Uu, Hh, upW[1], T);
    ref.swiglu(G, G, Uu);
    ref.matmul(S, G, downW[1], T);
    X.forEach((v, i) => (X[i] = v + S[i]!));
    const hl1 = new Float32Array(H), L = new Float32Array(V);
    ref.rmsnorm(hl1, X.subarray((T - 1) * H), normR, 1, eps);
    ref.matmul(L, hl1, head[1], 1);

    const got = new Float32Array(V);
    k.download(logits, got);
    const scale = L.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (let i = 0; i < V; i++) assert.ok(Math.abs(got[i]! - L[i]!) <= 1e-5 * scale, `logit ${i}: cuda ${got[i]} ref ${L[i]}`);
    assert.equal(token, argmax(L));
    const residual = new Float32Array(T * H);
    k.download(x, residual);
    for (let i = 0; i < T * H; i++) assert.ok(Math.abs(residual[i]! - X[i]!) <= 1e-5 * (1 + Math.abs(X[i]!)), `x[${i}]: cuda ${residual[i]} ref ${X[i]}`);
  } finally {
    k.dispose();
    await backend.dispose();
  }
});
