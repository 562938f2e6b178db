// The native backend as a Backend and its C ABI (the numbers themselves: native-conformance.test.ts).
//   - probe names the instruction set; "auto" picks native where CUDA is not usable; a missing library or one of
//     another API version is a BACKEND_UNAVAILABLE DuoError naming the fix for "native", a fallback for "auto";
//   - the C ABI refuses bad arguments (buffers that are not live blocks, rows past a block, bad codes, slots and
//     heads out of range, NULL outputs) with a status and duo_last_error's reason, and writes nothing;
//   - alloc zero-fills, append writes the same bytes as the wasm build (int8 / int4 records too), memory() counts blocks, use after dispose is
//     DISPOSED; the ceiling kernels measure. (Bad ops, the same on every backend: backend-validate.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadNativeLibrary } from "../ffi/load.ts";
import { NATIVE_SYMBOLS } from "../ffi/symbols.ts";
import { DUO_API_VERSION, SEGMENT_WORDS, STATUS } from "../src/backend/abi.ts";
import { createNativeBackend, probeNative } from "../src/backend/native.ts";
import { createBackend, probeAll } from "../src/backend/registry.ts";
import { kvBufferBytes } from "../src/backend/layout.ts";
import type { Op } from "../src/backend/types.ts";
import { createWasmBackend } from "../src/backend/wasm.ts";
import { isQuantized } from "../src/dtype.ts";
import { isDuo } from "./helpers/errors.ts";
import { randomArray } from "./helpers/random.ts";

const probe = await probeNative({});
const skip = probe.usable ? false : `skipped: native backend not usable here (${probe.reason})`;

test("probe names the kernels' instruction set; auto picks native where CUDA is not usable; duo info's probes list it", { skip }, async () => {
  assert.ok(probe.usable && ["avx512", "avx2", "sse41", "neon", "scalar"].includes(probe.isa!), JSON.stringify(probe));
  const all = await probeAll();
  assert.deepEqual(all.map((p) => p.name), ["cuda", "native", "wasm", "reference", "null"]);
  if (!all[0]!.usable) {
    const b = await createBackend("auto", { threads: 1 });
    assert.equal(b.name, "native");
    await b.dispose();
  }
});

test("a missing library: backend \"native\" throws BACKEND_UNAVAILABLE naming the path; auto falls back with the reason", async () => {
  const nativeLibrary = "/nonexistent/dir/libduo.so";
  await assert.rejects(createBackend("native", { nativeLibrary }), isDuo("BACKEND_UNAVAILABLE", /library not found at \/nonexistent\/dir\/libduo\.so/));
  const probes = await probeAll({ nativeLibrary });
  const native = probes.find((p) => p.name === "native")!;
  assert.equal(native.usable, false);
  assert.match(native.reason!, /not found at \/nonexistent/);
  const b = await createBackend("auto", { nativeLibrary, threads: 0 });
  assert.notEqual(b.name, "native");
  await b.dispose();
});

/** A C compiler on this machine, if any (the test of another API version builds a stub library with it). */
const cc = ["clang-19", "cc", "gcc"].find((c) => spawnSync(c, ["--version"]).status === 0);

test("a library of another API version: BACKEND_UNAVAILABLE naming both versions and the rebuild", { skip: skip || (cc ? false : "skipped: no C compiler to build a stub library") }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-stub-"));
  // every symbol the binding looks up, each a function returning 3: duo_api_version says 3
  const c = Object.keys(NATIVE_SYMBOLS).map((name) => `int ${name}(void) { return 3; }`).join("\n");
  writeFileSync(join(dir, "stub.c"), c + "\n");
  const built = spawnSync(cc!, ["-shared", "-fPIC", "-o", join(dir, "libduo.so"), join(dir, "stub.c")]);
  assert.equal(built.status, 0, String(built.stderr));
  await assert.rejects(createNativeBackend({ nativeLibrary: join(dir, "libduo.so") }),
    isDuo("BACKEND_UNAVAILABLE", new RegExp(`C API version 3, this package needs ${DUO_API_VERSION} \\(rebuild: npm run build:native\\)`)));
});

test("C ABI: bad arguments are refused with a status and a reason, and write nothing", { skip }, async () => {
  const { lib } = await loadNativeLibrary();
  assert.equal(lib.duo_api_version(), DUO_API_VERSION);
  const D = 8, H = 2, ROWS = 4, bytes = ROWS * H * D * 4;
  const addr = new Uint32Array(2);
  const alloc = (n: number) => (assert.equal(lib.duo_alloc(n, addr), STATUS.OK), addr[0]! + addr[1]! * 2 ** 32);
  const buf = alloc(bytes);
  const zero = () => {
    const got = new Uint8Array(bytes);
    assert.equal(lib.duo_read(buf, 0, bytes, got), STATUS.OK);
    return got.every((x) => x === 0);
  };
  const src = new Float32Array(H * D).fill(1.5), heads = Int32Array.of(0, 1);
  const refused = (rc: number, status: number, words: string) => {
    assert.equal(rc, status, `status ${rc}, expected ${status} (${lib.duo_last_error()})`);
    assert.ok(lib.duo_last_error().includes(words), `${JSON.stringify(lib.duo_last_error())} lacks ${JSON.stringify(words)}`);
  };
  const append = (o: { dst?: number; dtype?: number; heads?: Int32Array; row?: number; layout?: number; rows?: number }) =>
    lib.duo_append(o.dst ?? buf, o.dtype ?? 0, H, D, src, H, o.heads ?? heads, Int32Array.of(o.row ?? 0), 1, o.layout ?? 0, o.rows ?? 0);
  refused(append({ dst: buf + 64 }), STATUS.E_HANDLE, "not a live block");
  refused(append({ row: ROWS }), STATUS.E_ARG, `rows[0] = ${ROWS} is past the buffer's ${ROWS} rows`);
  refused(append({ heads: Int32Array.of(0, 2) }), STATUS.E_ARG, "heads[1] = 2");
  refused(append({ dtype: 5 }), STATUS.E_ARG, "dtype");
  refused(append({ dtype: 3, layout: 1, rows: 64 }), STATUS.E_ARG, "token-major"); // int8 is NHD only
  refused(append({ layout: 1, rows: 100 }), STATUS.E_ARG, "buffer_rows");
  refused(append({ layout: 1, rows: 64 }), STATUS.E_ARG, "needs"); // 64 tiled rows do not fit the 4-row block
  assert.ok(zero(), "a refused append wrote into the buffer");
  assert.equal(append({ row: ROWS - 1 }), 0, lib.duo_last_error());
  assert.ok(!zero(), "a valid append writes");

  const seg = (o: Partial<Record<"k" | "rowStart" | "rowCount" | "rowHeads", number>> = {}) => {
    const w = new Int32Array(SEGMENT_WORDS);
    const k = o.k ?? buf;
    w.set([k % 2 ** 32 | 0, Math.floor(k / 2 ** 32), buf % 2 ** 32 | 0, Math.floor(buf / 2 ** 32), 0, 0, 0, o.rowHeads ?? H, o.rowStart ?? 0, o.rowCount ?? ROWS, 0, 0, 0, 0]);
    return w;
  };
  const q = randomArray(H * D, 3);
  const attend = (segments: Int32Array, o: { qHeads?: Int32Array; slots?: Int32Array; out?: Float32Array | null } = {}) => {
    const out = o.out === undefined ? new Float32Array(D).fill(NaN) : o.out;
    const rc = lib.duo_attend(q, 1, H, D, 1, 1, o.qHeads ?? Int32Array.of(0), o.slots ?? Int32Array.of(1), segments, 1, ROWS, 0, 0, 0, out, null, null);
    return { rc, untouched: out ? out.every(Number.isNaN) : true };
  };
  for (const [what, call, status, words] of [
    ["rows past the block", () => attend(seg({ rowStart: 1 })), STATUS.E_ARG, "needs"],
    ["a k buffer that is not a block", () => attend(seg({ k: buf + 128 })), STATUS.E_HANDLE, "not a live block"],
    ["a kv slot past the row heads", () => attend(seg(), { slots: Int32Array.of(2) }), STATUS.E_ARG, "kv_slots[0] = 2"],
    ["query heads past num_heads", () => attend(seg(), { qHeads: Int32Array.of(2) }), STATUS.E_ARG, "q_heads[0] = 2"],
    ["no output array", () => attend(seg(), { out: null }), STATUS.E_ARG, "must not be NULL"],
  ] as const) {
    const r = call();
    refused(r.rc, status, words);
    assert.ok(r.untouched, `${what}: a refused attend wrote output`);
  }
  const ok = attend(seg());
  assert.equal(ok.rc, STATUS.OK, lib.duo_last_error());
  assert.ok(!ok.untouched, "a valid attend writes its output");

  refused(lib.duo_free(buf + 64), STATUS.E_HANDLE, "not a live block");
  refused(lib.duo_read(buf, bytes - 4, 8, new Uint8Array(8)), STATUS.E_ARG, "outside the block");
  refused(lib.duo_alloc(0, addr), STATUS.E_ARG, "bytes must be > 0");
  refused(lib.duo_threads(0), STATUS.E_ARG, "duo_threads");
  refused(lib.duo_select_isa(new TextEncoder().encode("mmx\0")), STATUS.E_UNSUPPORTED, "mmx");
  assert.equal(lib.duo_free(buf), STATUS.OK);
  refused(lib.duo_free(buf), STATUS.E_HANDLE, "not a live block"); // freed twice
});

test("alloc zero-fills, append writes the bytes the wasm build writes, memory() counts blocks, ceilings measure", { skip }, async () => {
  const b = await createNativeBackend({ threads: 2 });
  const w = await createWasmBackend({ threads: 0 });
  const D = 16, H = 2, N = 5;
  const src = randomArray(N * 3 * D, 9, 1e3); // large values: f16 overflows to Inf for some
  src[7] = NaN;
  const finite = src.map((x) => (Number.isNaN(x) ? 0 : x)); // int8 / int4 records take finite values only
  for (const dtype of ["f32", "f16", "bf16", "int8", "int4"] as const) {
    const bytes = kvBufferBytes("NHD", N, H, D, dtype);
    const hb = b.alloc(0, bytes), hw = w.alloc(0, bytes);
    assert.ok((await b.read(0, hb, 0, bytes)).every((x) => x === 0), "alloc is zero-filled");
    const op = (dst: number): Op => ({ kind: "append", dst, dtype, rowHeads: H, headDim: D, src: isQuantized(dtype) ? finite : src, srcHeads: 3, heads: Int32Array.of(2, 0), rows: Int32Array.of(4, -1, 0, 1, 3) });
    await b.run(0, [op(hb)]);
    await w.run(0, [op(hw)]);
    assert.deepEqual(await b.read(0, hb, 0, bytes), await w.read(0, hw, 0, bytes), `${dtype} append bytes`);
  }
  const before = b.memory(0).allocated;
  const h = b.alloc(0, 1000);
  assert.equal(b.memory(0).allocated, before + 1024);
  b.free(0, h);
  assert.equal(b.memory(0).allocated, before);
  assert.equal(b.memory(0).capacity, Infinity);
  assert.ok((await b.measure(0, "read", 1 << 20, 2)) > 0 && (await b.measure(0, "mad", 1000, 2)) > 0);
  await b.dispose();
  await w.dispose();
});

test("host blocks of 16 KiB to 1 MiB (native/src/slab.c: shared huge-page chunks): zero-filled when handed out again, disjoint, counted, and the sizes at the edges", { skip }, async () => {
  const { lib } = await loadNativeLibrary();
  const addr = new Uint32Array(2), mem = new Float64Array(2);
  const alloc = (n: number) => (assert.equal(lib.duo_alloc(n, addr), STATUS.OK, lib.duo_last_error()), addr[0]! + addr[1]! * 2 ** 32);
  const allocated = () => (assert.equal(lib.duo_memory(mem), STATUS.OK), mem[0]!);
  const holds = (h: number, bytes: number, v: number) => {
    const got = new Uint8Array(bytes);
    assert.equal(lib.duo_read(h, 0, bytes, got), STATUS.OK, lib.duo_last_error());
    return got.every((x) => x === v);
  };
  const base = allocated();
  // the edges of the slab range (16 KiB, 1 MiB) and inside it; blocks of a class share a chunk (512 KiB: 4 per chunk)
  const sizes = [16 * 1024 - 64, 16 * 1024, 68 * 1024 + 8, 512 * 1024, 512 * 1024, 512 * 1024, 512 * 1024, 512 * 1024, 1 << 20, (1 << 20) + 64];
  const round = (n: number) => Math.ceil(n / 64) * 64;
  let live = sizes.map((bytes) => ({ bytes, h: alloc(bytes) }));
  assert.equal(allocated(), base + sizes.reduce((a, n) => a + round(n), 0), "duo_memory counts each block's bytes");
  for (const [i, x] of live.entries()) {
    assert.equal(x.h % 64, 0, `block ${i} is 64-byte aligned`);
    assert.ok(holds(x.h, x.bytes, 0), `block ${i} (${x.bytes} bytes) is zero-filled`);
    assert.equal(lib.duo_write(x.h, 0, x.bytes, new Uint8Array(x.bytes).fill(i + 1)), STATUS.OK);
  }
  for (const [i, x] of live.entries()) assert.ok(holds(x.h, x.bytes, i + 1), `block ${i} kept its bytes: no two blocks overlap`);
  for (const x of live.filter((_, i) => i % 2 === 0)) assert.equal(lib.duo_free(x.h), STATUS.OK); // every other, then ask again
  live = live.filter((_, i) => i % 2 === 1);
  const again = sizes.filter((_, i) => i % 2 === 0).map((bytes) => ({ bytes, h: alloc(bytes) }));
  for (const x of again) assert.ok(holds(x.h, x.bytes, 0), `a ${x.bytes}-byte block handed out again is zero-filled`);
  for (const [i, x] of live.entries()) assert.ok(holds(x.h, x.bytes, 2 * i + 2), `kept block ${i} is unchanged`);
  for (const x of [...live, ...again]) assert.equal(lib.duo_free(x.h), STATUS.OK);
  assert.equal(allocated(), base, "every block returned");
});

test("native specifics: a buffer of 4 GiB or more is UNSUPPORTED, one shard, use after dispose is DISPOSED (the shared bad-op checks: backend-validate.test.ts)", { skip }, async () => {
  const b = await createNativeBackend({ threads: 2 });
  assert.throws(() => b.alloc(0, 2 ** 33), isDuo("UNSUPPORTED", /less than 4 GiB/));
  const k = b.alloc(0, 64);
  await assert.rejects(b.read(1, k, 0, 8), isDuo("INVALID_ARGUMENT", /shard must be 0/));
  await b.dispose();
  await assert.rejects(b.run(0, []), isDuo("DISPOSED", /used after dispose/));
});

test("typed array views (subarrays at a byte offset) reach the library at their offset in every runtime's FFI", { skip }, async () => {
  const b = await createNativeBackend({ threads: 1 });
  const D = 8, big = Float32Array.from({ length: 100 }, (_, i) => i);
  const h = b.alloc(0, D * 4);
  await b.run(0, [{ kind: "append", dst: h, dtype: "f32", rowHeads: 1, headDim: D, src: big.subarray(16, 16 + D), srcHeads: 1, heads: Int32Array.of(0), rows: new Int32Array(8).subarray(3, 4) }]);
  assert.deepEqual(Array.from(new Float32Array((await b.read(0, h, 0, D * 4)).buffer)), [16, 17, 18, 19, 20, 21, 22, 23]);
  await b.dispose();
});
