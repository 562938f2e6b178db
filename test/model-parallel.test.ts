// The tensor-parallel model kernels ("wasm-parallel", src/model/kernels-parallel.ts), 2 workers throughout:
//   - matmul and embed equal the single-instance wasm kernels bit for bit (rows split by output row, each row summed
//     as one instance sums it): f32/bf16/f16, row counts that 2 workers do not split evenly (1 row: a worker with
//     none), weights written in pieces that straddle the workers' boundary, token blocks through a small bus;
//   - LlamaModel logits (prefill and decode) equal those of kernels "wasm" bit for bit on tiny models: MHA with
//     attention and MLP biases (f32), GQA with tied embeddings and permuted heads (bf16), Qwen2 with q/k/v biases (f16);
//   - a model larger than one worker's instance (a lowered instanceBytes) is refused by one worker with the bytes per
//     worker, and loads across two;
//   - bad options and writes are DuoErrors; dispose terminates the workers; "auto" picks wasm-parallel only for a
//     large enough model with workers;
//   - `duo generate --kernels wasm-parallel --model-threads 2` prints the ids of --kernels wasm, and exits.
import { hostOps } from "../src/model/host-ops.ts";
import { test } from "node:test";
import { quantizeQ4_0, quantizeQ8_0 } from "../src/model/tensor-types.ts";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { join } from "node:path";
import { f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";
import { createModelKernels, type ModelKernels, PARALLEL_MIN_BYTES, type WeightDtype } from "../src/model/kernels.ts";
import { ParallelKernels, parallelUnusable } from "../src/model/kernels-parallel.ts";
import { LlamaModel, type LoadOptions } from "../src/model/llama.ts";
import { runtime } from "../src/runtime.ts";
import { runCli } from "./helpers/cli.ts";
import { isDuo, rejectsDuo, throwsDuo } from "./helpers/errors.ts";
import { rng } from "./helpers/random.ts";
import { type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";

const why = parallelUnusable();
const skip = why ? `skipped: ${why}` : false;

function data(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

function raw(values: Float32Array, dtype: WeightDtype): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.slice().buffer);
  return new Uint8Array(Uint16Array.from(values, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits).buffer);
}

/** Write `bytes` into m in three pieces cut at odd element boundaries. */
function writeInPieces(k: ModelKernels, m: ReturnType<ModelKernels["matrix"]>, bytes: Uint8Array, eb: number): void {
  const n = bytes.length / eb, cuts = [0, Math.floor(n / 3) | 1, Math.floor((2 * n) / 3) | 1, n].map((c) => Math.min(c, n));
  for (let i = 0; i < 3; i++) if (cuts[i + 1]! > cuts[i]!) k.write(m, cuts[i]! * eb, bytes.subarray(cuts[i]! * eb, cuts[i + 1]! * eb));
}

test("wasm-parallel matmul and embed equal the wasm kernels bit for bit (odd rows, pieces, token blocks)", { skip }, async () => {
  // an 8 KiB bus: 70 tokens of the widest case go in blocks of 32, and the 300-row tables in several pieces
  const parallel = await ParallelKernels.create({ modelThreads: 2, busBytes: 8192 });
  const par = hostOps(parallel), one = hostOps(await createModelKernels("wasm"));
  try {
    assert.equal(parallel.threads, 2);
    let cases = 0;
    for (const dtype of ["f32", "bf16", "f16"] as const) {
      const eb = dtype === "f32" ? 4 : 2;
      for (const [T, nin, nout] of [[1, 8, 1], [1, 37, 9], [3, 16, 3], [33, 24, 11], [70, 37, 11], [5, 7, 2]] as const) {
        for (const withBias of [false, true]) {
          const seed = 1000 * ++cases;
          const bytes = raw(data(nout * nin, seed), dtype), x = data(T * nin, seed + 1), b = data(nout, seed + 2);
          const mp = par.matrix(nout, nin, dtype), mo = one.matrix(nout, nin, dtype);
          writeInPieces(par, mp, bytes, eb);
          one.write(mo, 0, bytes);
          const yp = new Float32Array(T * nout), yo = new Float32Array(T * nout);
          par.matmul(yp, x, mp, T, withBias ? par.vector(b) : undefined);
          one.matmul(yo, x, mo, T, withBias ? one.vector(b) : undefined);
          assert.deepEqual(yp, yo, `${dtype} T=${T} nin=${nin} nout=${nout} bias=${withBias}`);
        }
      }
      const rows = 301, cols = 13, table = raw(data(rows * cols, cases), dtype);
      const tp = par.matrix(rows, cols, dtype), to = one.matrix(rows, cols, dtype);
      writeInPieces(par, tp, table, eb);
      one.write(to, 0, table);
      const ids = Int32Array.from({ length: 700 }, (_, i) => (i * 97) % rows); // both workers' rows, in blocks
      const ep = new Float32Array(ids.length * cols), eo = new Float32Array(ids.length * cols);
      par.embed(ep, ids, tp);
      one.embed(eo, ids, to);
      assert.deepEqual(ep, eo, `${dtype} embedding`);
    }
    assert.equal(cases, 36);
    // llama.cpp block types: rows are whole 32-element blocks (34 / 18 bytes), split between the workers by rows
    for (const [dtype, quantize, bb] of [["q8_0", quantizeQ8_0, 34], ["q4_0", quantizeQ4_0, 18]] as const) {
      const T = 3, nin = 64, nout = 9;
      const bytes = quantize(data(nout * nin, 77)), x = data(T * nin, 78);
      const mp = par.matrix(nout, nin, dtype), mo = one.matrix(nout, nin, dtype);
      writeInPieces(par, mp, bytes, bb);
      one.write(mo, 0, bytes);
      const yp = new Float32Array(T * nout), yo = new Float32Array(T * nout);
      par.matmul(yp, x, mp, T);
      one.matmul(yo, x, mo, T);
      assert.deepEqual(yp, yo, `${dtype} matmul`);
      throwsDuo(() => par.write(par.matrix(1, 32, dtype), 1, bytes.subarray(0, bb)), "INVALID_ARGUMENT", /splits its/);
    }
    // the small ops run in the caller's own instance: the same code as kernels "wasm"
    const x = data(2 * 37, 5), w = data(37, 6), yp = new Float32Array(74), yo = new Float32Array(74);
    par.rmsnorm(yp, x, par.vector(w), 2, 1e-5);
    one.rmsnorm(yo, x, one.vector(w), 2, 1e-5);
    assert.deepEqual(yp, yo);
  } finally {
    par.dispose();
    one.dispose();
    await parallel.closed();
  }
});

async function logits(dir: string, kernels: "wasm" | ModelKernels, ids: number[], decode: number[], options: LoadOptions = {}): Promise<Float32Array[]> {
  const model = await LlamaModel.load(dir, { backend: "reference", kvDtype: "f32", prefillChunk: 4, ...options, kernels });
  try {
    const out = [await model.forward(ids)];
    for (const id of decode) out.push(await model.forward([id]));
    return out;
  } finally {
    await model.dispose();
  }
}

// the GQA model streams one KV head per layer, listed after the retrieval head: its attention weights are permuted
// at load (weights.ts) and written to the kernels in one piece each
const SPECS: [string, TinySpec, LoadOptions][] = [
  ["Llama MHA f32, attention and MLP biases", { heads: 4, kvHeads: 4, intermediate: 45, dtype: "f32", attentionBias: true, mlpBias: true, seed: 31 }, {}],
  ["Llama GQA bf16, tied embeddings, permuted heads", { layers: 3, heads: 4, kvHeads: 2, intermediate: 47, dtype: "bf16", tie: true, seed: 32 },
    { heads: [[false, true], [true, false], [false, true]], sinkSize: 1, recentSize: 2 }],
  ["Qwen2 GQA f16, q/k/v biases", { architecture: "Qwen2ForCausalLM", heads: 4, kvHeads: 2, dtype: "f16", seed: 33 }, {}],
];

test("LlamaModel logits with wasm-parallel (2 workers) equal those with wasm bit for bit", { skip }, async () => {
  for (const [label, spec, options] of SPECS) {
    const m = writeTinyModel(spec);
    try {
      const ids = [1, 40, 77, 5, 260, 9, 31, 100, 7], decode = [12, 250];
      const want = await logits(m.dir, "wasm", ids, decode, options);
      const par = await ParallelKernels.create({ modelThreads: 2 });
      const got = await logits(m.dir, par, ids, decode, options);
      await par.closed(); // the model disposed its kernels
      got.forEach((g, i) => assert.deepEqual(g, want[i], `${label}: call ${i} (${i === 0 ? "prefill" : "decode"})`));
    } finally {
      m.dispose();
    }
  }
});

test("a model larger than one worker's wasm instance is refused by one worker and loads across two", { skip }, async () => {
  const m = writeTinyModel({ hidden: 64, heads: 4, kvHeads: 2, intermediate: 192, dtype: "f32", seed: 34 });
  try {
    const fileBytes = statSync(join(m.dir, "model.safetensors")).size;
    const instanceBytes = Math.floor(0.6 * fileBytes); // the weights need more than one instance's share
    const alone = await ParallelKernels.create({ modelThreads: 1, instanceBytes });
    await rejectsDuo(LlamaModel.load(m.dir, { backend: "reference", prefillChunk: 4, kernels: alone }), "CAPACITY",
      /per model worker over 1 workers.*one worker's wasm instance holds \d+ bytes.*modelThreads: 2 would hold it/);
    await alone.closed(); // the failed load disposed it
    const ids = [1, 40, 77, 5, 260], decode = [12];
    const want = await logits(m.dir, "wasm", ids, decode);
    const pair = await ParallelKernels.create({ modelThreads: 2, instanceBytes });
    const model = await LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32", prefillChunk: 4, kernels: pair });
    try {
      const { weights, capacity } = model.kernels.memory();
      assert.ok(weights > instanceBytes && capacity === 2 * instanceBytes, `holds ${weights} bytes of weights, one instance ${instanceBytes}`);
      const got = [await model.forward(ids), await model.forward(decode)];
      got.forEach((g, i) => assert.deepEqual(g, want[i], `call ${i}`));
    } finally {
      await model.dispose();
    }
  } finally {
    m.dispose();
  }
});

test("wasm-parallel: bad options and writes are DuoErrors; dispose terminates the workers", { skip }, async () => {
  await rejectsDuo(createModelKernels("wasm-parallel", { modelThreads: 0 }), "INVALID_ARGUMENT", /modelThreads must be an integer in \[1, 256\], got 0/);
  await rejectsDuo(ParallelKernels.create({ modelThreads: 2, instanceBytes: -1 }), "INVALID_ARGUMENT", /instanceBytes must be an integer/);
  const k = await ParallelKernels.create({ modelThreads: 2 });
  const m = k.matrix(3, 5, "bf16");
  throwsDuo(() => k.write(m, 20, new Uint8Array(12)), "INVALID_ARGUMENT", /overruns a \[3, 5\] bf16 matrix \(30 bytes/);
  throwsDuo(() => k.write(m, 0, new Uint8Array(3)), "INVALID_ARGUMENT", /write of 3 bytes/);
  throwsDuo(() => k.reserve(2 ** 34, 0), "CAPACITY", /over 2 workers.*modelThreads: \d+ would hold it/);
  k.dispose();
  await k.closed();
  throwsDuo(() => k.activations(5), "DISPOSED", /disposed/);
  k.dispose(); // twice is fine
});

test("auto picks wasm-parallel for a model of PARALLEL_MIN_BYTES with 2+ workers, wasm otherwise", { skip: runtime().wasmSimd ? false : "skipped: no WebAssembly SIMD" }, async () => {
  const pick = async (opts: Parameters<typeof createModelKernels>[1]) => {
    const k = await createModelKernels("auto", opts);
    k.dispose();
    if (k instanceof ParallelKernels) await k.closed();
    return k.name;
  };
  assert.equal(await pick({}), "wasm");
  assert.equal(await pick({ weightBytes: PARALLEL_MIN_BYTES - 1, modelThreads: 2 }), "wasm");
  assert.equal(await pick({ weightBytes: PARALLEL_MIN_BYTES, modelThreads: 0 }), "wasm");
  assert.equal(await pick({ weightBytes: PARALLEL_MIN_BYTES, modelThreads: 2 }), why ? "wasm" : "wasm-parallel");
  await assert.rejects(createModelKernels("wasm-parallel", { modelThreads: 1.5 }), isDuo("INVALID_ARGUMENT", /modelThreads/));
  // LlamaModel.load: a tiny model stays on "wasm" under auto; an explicit "wasm-parallel" keeps its workers with an
  // in-thread attention backend (threads: 0)
  const m = writeTinyModel({ seed: 36 });
  try {
    const cases: [LoadOptions, string][] = [[{ modelThreads: 2 }, "wasm"]];
    if (!why) cases.push([{ kernels: "wasm-parallel", threads: 0, modelThreads: 2 }, "wasm-parallel"]);
    for (const [options, want] of cases) {
      const model = await LlamaModel.load(m.dir, { backend: "wasm", ...options });
      assert.equal(model.kernels.name, want, JSON.stringify(options));
      await model.dispose();
    }
  } finally {
    m.dispose();
  }
});

test("duo generate --kernels wasm-parallel --model-threads 2: the ids of --kernels wasm, and the process exits", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", seed: 35 });
  try {
    const run = (kernels: string[]) => runCli(["generate", "--model", m.dir, "--prompt", "the cat", "--max-tokens", "4", "--print-ids",
      "--backend", "reference", "--kv-dtype", "f32", ...kernels]);
    const [one, par] = await Promise.all([run(["--kernels", "wasm"]), run(["--kernels", "wasm-parallel", "--model-threads", "2"])]);
    assert.equal(par.code, 0, par.stderr);
    assert.match(par.stderr, /model math: wasm-parallel kernels/);
    assert.equal(par.stdout.trim().split(" ").length, 4, par.stdout);
    assert.equal(par.stdout, one.stdout);
  } finally {
    m.dispose();
  }
});
