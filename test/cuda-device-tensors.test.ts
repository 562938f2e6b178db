// Device tensors (backend/types.ts DeviceTensor, duo.h API 3): attention reading q / k / v and writing its output in
// the model kernels' device memory. On the CUDA backend (a GPU or the host emulation build: helpers/cuda-target.ts):
// Sequence.attendInto on device tensors gives the host path's outputs bit for bit; a tiny Llama generates the
// reference's greedy tokens with no activation crossing between host and device (the kernel set's transfer counter);
// bad handles and offsets are refused by the TypeScript checks and by the library, the cache unchanged. On the CPU
// backends (always run): device tensors are refused with a DuoError naming what the backend takes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type CudaBackend, createCudaBackend } from "../src/backend/cuda.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend, DeviceTensor } from "../src/backend/types.ts";
import { DuoAttention } from "../src/engine/duo.ts";
import { DuoError } from "../src/errors.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { APPEND, ATTEND, DTYPE, SEG, STATUS } from "../ffi/symbols.ts";
import { loadLibrary } from "../ffi/load.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { randomArray } from "./helpers/random.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

const { library, label, skip } = cudaTarget;
const L = 2, H = 4, Hkv = 2, D = 64;
const shape = { numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: D };
// layer 0: KV head 0 retrieves, head 1 streams; layer 1 the other way round
const engineOpts = { shape, heads: [[true, false], [false, true]], sinkSize: 2, recentSize: 8, pageSize: 64 };

test("device tensors: the CPU backends refuse them with a DuoError naming what they take, the cache unchanged", async () => {
  const backend: Backend = new ReferenceBackend(); // the contract's run, which takes ops naming device tensors
  const fake: DeviceTensor = { handle: 1, offset: 0, length: H * D };
  const op = { kind: "attend" as const, q: fake, T: 1, numHeads: H, headDim: D, group: 2, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), segments: [], qPos0: 0, window: null, out: new Float32Array(H * D) };
  await assert.rejects(backend.run(0, [op]), (e: unknown) => e instanceof DuoError && e.code === "UNSUPPORTED" && /q is a device tensor .*takes host Float32Arrays/.test(e.message));
  const duo = await DuoAttention.create({ ...engineOpts, backend: "reference" });
  try {
    const seq = duo.sequence();
    await seq.attend(0, randomArray(H * D, 1), randomArray(Hkv * D, 2), randomArray(Hkv * D, 3));
    const k: DeviceTensor = { handle: 1, offset: 0, length: Hkv * D };
    await assert.rejects(seq.attendInto(0, randomArray(H * D, 4), k, randomArray(Hkv * D, 5), new Float32Array(H * D)),
      (e: unknown) => e instanceof DuoError && e.code === "UNSUPPORTED" && /k is a device tensor .*the reference backend takes host Float32Arrays/.test(e.message));
    assert.equal(seq.length(0), 1, "the refused call left the cache as it was");
    // host arrays through attendInto: the same as attend
    const q = randomArray(H * D, 6), kk = randomArray(Hkv * D, 7), v = randomArray(Hkv * D, 8), out = new Float32Array(H * D);
    const other = duo.sequence();
    await other.attend(0, randomArray(H * D, 1), randomArray(Hkv * D, 2), randomArray(Hkv * D, 3));
    await seq.attendInto(0, q, kk, v, out);
    assert.deepEqual(out, await other.attend(0, q, kk, v));
  } finally {
    await duo.dispose();
  }
});

for (const kvDtype of ["f32", "bf16", "int4"] as const) {
  test(`cuda (${label}): attendInto on device tensors gives the host path's ${kvDtype} outputs bit for bit (prefill and decode)`, { skip }, async () => {
    const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
    const kn = await backend.modelKernels();
    const duo = await DuoAttention.create({ ...engineOpts, kvDtype, backend });
    try {
      const [host, dev] = [duo.sequence(), duo.sequence()];
      const T = 40, q = kn.activations(T * H * D), k = kn.activations(T * Hkv * D), v = kn.activations(T * Hkv * D);
      const out = kn.activations(1 + T * H * D), o = kn.view(out, 1, T * H * D); // at an offset: a view
      let seed = 1;
      for (const n of [T, 1, 1, 9]) {
        for (let l = 0; l < L; l++) {
          const [qh, kh, vh] = [randomArray(n * H * D, seed++, 2), randomArray(n * Hkv * D, seed++), randomArray(n * Hkv * D, seed++)];
          const [qd, kd, vd, od] = [kn.view(q, 0, n * H * D), kn.view(k, 0, n * Hkv * D), kn.view(v, 0, n * Hkv * D), kn.view(o, 0, n * H * D)];
          kn.upload(qd, qh);
          kn.upload(kd, kh);
          kn.upload(vd, vh);
          const want = await host.attend(l, qh, kh, vh);
          await dev.attendInto(l, qd, kd, vd, od);
          const got = new Float32Array(n * H * D);
          kn.download(od, got);
          assert.deepEqual(got, want, `layer ${l}, ${n} tokens`);
        }
      }
      assert.equal(dev.length(0), host.length(0));
    } finally {
      await duo.dispose();
      kn.dispose();
      await backend.dispose();
    }
  });
}

test(`cuda (${label}): an int4 cache takes device k / v without the host's finiteness check (duo.h: their records are unspecified)`, { skip }, async () => {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const kn = await backend.modelKernels();
  const duo = await DuoAttention.create({ ...engineOpts, kvDtype: "int4", backend });
  try {
    const seq = duo.sequence();
    const k = randomArray(Hkv * D, 1);
    k[3] = 1e6; // past int4's f16 min: the host check refuses it
    await assert.rejects(seq.attend(0, randomArray(H * D, 2), k, randomArray(Hkv * D, 3)), /k\[3\] is 1000000/);
    const [q, kd, v, out] = [kn.activations(H * D), kn.activations(Hkv * D), kn.activations(Hkv * D), kn.activations(H * D)];
    kn.upload(kd, k);
    await seq.attendInto(0, q, kd, v, out); // not read on the host: accepted
    assert.equal(seq.length(0), 1);
  } finally {
    await duo.dispose();
    kn.dispose();
    await backend.dispose();
  }
});

test(`cuda (${label}): bad device tensors are refused (unknown handle, past the end, wrong length), the cache unchanged`, { skip }, async () => {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const kn = await backend.modelKernels();
  const duo = await DuoAttention.create({ ...engineOpts, backend });
  try {
    const seq = duo.sequence();
    const [q, k, v, out] = [kn.activations(H * D), kn.activations(Hkv * D), kn.activations(Hkv * D), kn.activations(H * D)];
    kn.upload(q, randomArray(H * D, 1));
    await seq.attendInto(0, q, k, v, out);
    const bad: [string, DeviceTensor, RegExp, string][] = [
      ["a handle of no kernel set", { handle: 99999, offset: 0, length: H * D }, /device tensor buffer 99999 is neither/, "INVALID_ARGUMENT"],
      ["past the end", { handle: q.handle, offset: 1, length: H * D }, /q elements \[1, 257\) are past the end of buffer/, "CAPACITY"],
      ["past 2^32", { handle: q.handle, offset: 2 ** 32 + 5, length: H * D }, /past the end of buffer/, "CAPACITY"],
      ["a negative offset", { handle: q.handle, offset: -1, length: H * D }, /q.offset must be an integer >= 0/, "INVALID_ARGUMENT"],
    ];
    for (const [what, t, msg, code] of bad) {
      await assert.rejects(seq.attendInto(0, t, k, v, out), (e: unknown) => e instanceof DuoError && e.code === code && msg.test(e.message), what);
      assert.equal(seq.length(0), 1, `${what}: the cache is unchanged`);
    }
    await assert.rejects(seq.attendInto(0, q, k, v, kn.view(out, 0, H * D - 1)), /out has 255 elements/);
    // the backend's own check of an op: a device out and lse must not overlap
    const ol = kn.activations(H * D + H);
    const op = { kind: "attend" as const, q, T: 1, numHeads: H, headDim: D, group: 2, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), segments: [], qPos0: 0, window: null, out: kn.view(ol, 0, H * D), lse: kn.view(ol, H * D - 1, H) };
    await assert.rejects(backend.run(0, [op]), /out \(elements \[0, 256\) of buffer \d+\) and lse \(elements \[255, 259\)\) overlap/);
    await backend.run(0, [{ ...op, lse: kn.view(ol, H * D, H) }]);
    const released = kn.activations(Hkv * D);
    kn.release(released);
    await assert.rejects(seq.attendInto(0, q, released, v, out), /device tensor buffer \d+ is neither/);
    assert.equal(seq.length(0), 1);
    await seq.attendInto(0, q, k, v, out); // and the sequence goes on
    assert.equal(seq.length(0), 2);
  } finally {
    await duo.dispose();
    kn.dispose();
    await backend.dispose();
  }
});

test(`cuda (${label}): the library checks device tensor handles and offsets itself (64-bit offsets), and writes device out / lse as host ones`, { skip }, async () => {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend; // initialises the library
  const { lib } = await loadLibrary(library);
  const kn = await backend.modelKernels();
  try {
    const T = 1, Hq = 2, G = 2;
    const qa = kn.activations(Hq * D), kv = backend.alloc(0, 4 * 64 * D), outa = kn.activations(Hq * D);
    const p = new Int32Array(ATTEND.PARAMS);
    Object.entries({ TOKENS: T, NUM_HEADS: Hq, HEAD_DIM: D, GROUP: G, KV_HEADS: 1, SEGMENTS: 1, POSITIONS: 0, QPOS0: 0, SINK: -1, RECENT: -1, SPLITS: 0 })
      .forEach(([f, x]) => (p[ATTEND[f as keyof typeof ATTEND]] = x));
    const seg = new Int32Array(SEG.FIELDS);
    seg[SEG.K] = kv;
    seg[SEG.V] = kv;
    seg[SEG.DTYPE] = DTYPE.f32;
    seg[SEG.ROW_HEADS] = 1;
    seg[SEG.ROW_COUNT] = 1;
    seg[SEG.POS_INDEX] = -1;
    const call = (q: number, qLo: number, qHi: number, out: number) => {
      p[ATTEND.Q_BUF] = q;
      p[ATTEND.Q_OFF_LO] = qLo;
      p[ATTEND.Q_OFF_HI] = qHi;
      p[ATTEND.OUT_BUF] = out;
      return lib.duo_attend(p, null, Int32Array.of(0), Int32Array.of(0), seg, null, null, null);
    };
    assert.equal(call(qa.handle, 0, 0, outa.handle), STATUS.OK);
    assert.equal(call(12345, 0, 0, outa.handle), STATUS.ERR_HANDLE);
    assert.match(lib.duo_last_error(), /q: unknown buffer handle 12345/);
    assert.equal(call(qa.handle, 1, 0, outa.handle), STATUS.ERR_CAPACITY);
    assert.equal(call(qa.handle, 0, 1, outa.handle), STATUS.ERR_CAPACITY); // offset 2^32: the high word counts
    assert.match(lib.duo_last_error(), /elements \[4294967296, 4294967424\) are past the end/);
    assert.equal(call(qa.handle, 0, 0, 0), STATUS.ERR_ARGUMENT); // out: neither a host array nor a device tensor
    [p[ATTEND.LSE_BUF], p[ATTEND.LSE_OFF_LO]] = [outa.handle, Hq * D - 1]; // lse's first element is out's last
    assert.equal(call(qa.handle, 0, 0, outa.handle), STATUS.ERR_CAPACITY); // and past the end
    const both = kn.activations(Hq * D + Hq);
    [p[ATTEND.LSE_BUF], p[ATTEND.LSE_OFF_LO]] = [both.handle, Hq * D - 1];
    assert.equal(call(qa.handle, 0, 0, both.handle), STATUS.ERR_ARGUMENT);
    assert.match(lib.duo_last_error(), /out and lse overlap/);
    p[ATTEND.LSE_OFF_LO] = Hq * D;
    assert.equal(call(qa.handle, 0, 0, both.handle), STATUS.OK);
    p[ATTEND.LSE_BUF] = 0;
    const a = new Int32Array(APPEND.PARAMS);
    Object.entries({ DST: kv, DTYPE: DTYPE.f32, ROW_HEADS: 1, HEAD_DIM: D, TOKENS: 1, SRC_HEADS: 1, SRC_BUF: qa.handle, SRC_OFF_LO: Hq * D - D + 1 })
      .forEach(([f, x]) => (a[APPEND[f as keyof typeof APPEND]] = x));
    assert.equal(lib.duo_append(a, null, Int32Array.of(0), Int32Array.of(0)), STATUS.ERR_CAPACITY);
    a[APPEND.SRC_OFF_LO] = Hq * D - D;
    assert.equal(lib.duo_append(a, null, Int32Array.of(0), Int32Array.of(0)), STATUS.OK);
    assert.equal(lib.duo_append(a, new Float32Array(D), Int32Array.of(0), Int32Array.of(0)), STATUS.ERR_ARGUMENT); // both

    // device out and lse give what host out and lse get (the covered query heads only); and with no visible key
    // (an empty segment), zeros and lse = -inf in the covered rows, the others untouched
    const full = kn.activations(2 * Hq * D + 2 * Hq), before = randomArray(2 * Hq * D + 2 * Hq, 9);
    const [o2, l2] = [kn.view(full, 0, 2 * Hq * D), kn.view(full, 2 * Hq * D, 2 * Hq)];
    kn.upload(qa, randomArray(Hq * D, 10, 2));
    const withLse = (T2: number, rows: number, out: Float32Array | null, lse: Float32Array | null, dev: boolean) => {
      const p2 = Int32Array.from(p);
      p2[ATTEND.TOKENS] = T2;
      p2[ATTEND.NUM_HEADS] = 2 * Hq; // two KV heads' worth of query heads; the call covers KV head 1 only
      [p2[ATTEND.Q_BUF], p2[ATTEND.OUT_BUF], p2[ATTEND.LSE_BUF]] = [0, 0, 0];
      const s2 = Int32Array.from(seg);
      s2[SEG.ROW_COUNT] = rows;
      if (dev) {
        [p2[ATTEND.OUT_BUF], p2[ATTEND.OUT_OFF_LO], p2[ATTEND.LSE_BUF], p2[ATTEND.LSE_OFF_LO]] = [o2.handle, o2.offset, l2.handle, l2.offset];
      }
      return lib.duo_attend(p2, randomArray(T2 * 2 * Hq * D, 11, 2), Int32Array.of(1), Int32Array.of(0), s2, null, out, lse);
    };
    for (const rows of [1, 0]) {
      kn.upload(full, before);
      const [oh, lh] = [before.slice(0, 2 * Hq * D), before.slice(2 * Hq * D)];
      assert.equal(withLse(1, rows, oh, lh, false), STATUS.OK);
      assert.equal(withLse(1, rows, null, null, true), STATUS.OK);
      const got = new Float32Array(2 * Hq * D + 2 * Hq);
      kn.download(full, got);
      assert.deepEqual(got.subarray(0, 2 * Hq * D), oh, `${rows} rows: out`);
      assert.deepEqual(got.subarray(2 * Hq * D), lh, `${rows} rows: lse`);
      assert.deepEqual(got.subarray(0, Hq * D), before.subarray(0, Hq * D), "query heads 0..1 are not covered: untouched");
      if (rows === 0) assert.deepEqual([...lh.subarray(Hq)], [-Infinity, -Infinity]);
    }
    backend.free(0, kv);
  } finally {
    kn.dispose();
    await backend.dispose();
  }
});

test(`cuda (${label}): a tiny Llama generates the reference's greedy tokens with q / k / v, the attention output and the logits staying on the device`, { skip }, async () => {
  const m = writeTinyModel({ layers: 2, hidden: 128, heads: 4, kvHeads: 2, headDim: 64, intermediate: 96, dtype: "bf16", seed: 5 });
  const opts = { kvDtype: "f32" as const, heads: [[true, false], [false, true]], sinkSize: 2, recentSize: 4 };
  const ref = await LlamaModel.load(m.dir, { ...opts, backend: "reference" });
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const cuda = await LlamaModel.load(m.dir, { ...opts, backend });
  try {
    const kn = cuda.kernels as import("../src/model/kernels-cuda.ts").CudaKernels;
    assert.ok(kn.attendsIn(backend) && cuda.greedyOnKernels);
    const prompt = [1, 30, 71, 12, 99, 5, 140, 8, 77, 23, 61, 4];
    const want = await collect(ref.generate(prompt, { maxTokens: 8, ignoreEos: true }));
    const before = { ...kn.transfers };
    const got = await collect(cuda.generate(prompt, { maxTokens: 8, ignoreEos: true }));
    assert.deepEqual(got, want);
    assert.deepEqual(kn.transfers, before, "no activation was uploaded or downloaded: prefill, 7 decode steps");
    // the logits path (temperature, forward) still downloads them: once per forward, and nothing else
    await cuda.forward([3]);
    assert.deepEqual(kn.transfers, { uploads: before.uploads, downloads: before.downloads + 1 });
  } finally {
    await ref.dispose();
    await cuda.dispose();
    await backend.dispose();
    m.dispose();
  }
});

async function collect(g: AsyncIterable<{ id: number }>): Promise<number[]> {
  const ids: number[] = [];
  for await (const t of g) ids.push(t.id);
  return ids;
}
