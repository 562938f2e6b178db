// The library through this runtime's FFI (bun:ffi, Deno.dlopen or koffi): loading, the API version, the no-device
// path, and the library's argument checks, which run before any device work, so these tests run on machines
// without a GPU. Every array argument is checked by planting a bad value at a known index and reading it back in the
// library's message: that proves the FFI hands over the right bytes (and byte offsets of subarrays).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoError } from "../src/errors.ts";
import { createBackend } from "../src/backend/registry.ts";
import { createCudaBackend, probeCuda } from "../src/backend/cuda.ts";
import { exists } from "../src/runtime.ts";
import { defaultLibraryPath, loadLibrary } from "../ffi/load.ts";
import { APPEND, ATTEND, DUO_API_VERSION, type DuoLibrary, SEG, STATUS } from "../ffi/symbols.ts";

const built = await exists(defaultLibraryPath());
const lib: DuoLibrary | null = built ? (await loadLibrary()).lib : null;
const deviceCount = lib ? lib.duo_device_count() : -1;
const noDevice = deviceCount <= 0;
const notBuilt = built ? false : "skipped: libduo_cuda.so not built (npm run build:cuda)";

function attendParams(over: Partial<Record<keyof typeof ATTEND, number>> = {}): Int32Array {
  const p = new Int32Array(ATTEND.PARAMS);
  const base = { TOKENS: 2, NUM_HEADS: 8, HEAD_DIM: 64, GROUP: 2, KV_HEADS: 2, SEGMENTS: 2, POSITIONS: 3, QPOS0: 5, SINK: -1, RECENT: -1, SPLITS: 0 };
  for (const [k, v] of Object.entries({ ...base, ...over })) p[ATTEND[k as keyof typeof ATTEND]] = v;
  return p;
}

function segmentTable(rows: number[][]): Int32Array {
  const t = new Int32Array(rows.length * SEG.FIELDS);
  rows.forEach((r, i) => t.set(r, i * SEG.FIELDS));
  return t;
}

// [k, v, dtype, row_heads, row_start, row_count, pos0, pos_index]
const goodSegments = [[1, 2, 2, 2, 0, 4, 0, -1], [3, 4, 2, 2, 0, 3, 0, 0]];

function attend(l: DuoLibrary, over: { params?: Int32Array; qHeads?: Int32Array; kvSlots?: Int32Array; segments?: Int32Array; positions?: Int32Array | null }) {
  const q = new Float32Array(2 * 8 * 64), out = new Float32Array(2 * 8 * 64);
  const status = l.duo_attend(over.params ?? attendParams(), q, over.qHeads ?? new Int32Array([0, 3]), over.kvSlots ?? new Int32Array([0, 1]),
    over.segments ?? segmentTable(goodSegments), over.positions === undefined ? new Int32Array([9, 3, 7]) : over.positions, out, null);
  return { status, message: l.duo_last_error() };
}

test("libduo_cuda.so loads through this runtime's FFI and reports the API version this package needs", { skip: notBuilt }, () => {
  assert.equal(lib!.duo_api_version(), DUO_API_VERSION);
  assert.equal(typeof lib!.duo_last_error(), "string");
  assert.equal(typeof lib!.duo_last_device_ms(), "number");
});

test("duo_device_count returns a count, or a negative status with the driver's reason", { skip: notBuilt }, () => {
  assert.ok(Number.isInteger(deviceCount));
  if (deviceCount < 0) {
    assert.equal(deviceCount, STATUS.ERR_NO_DEVICE);
    assert.match(lib!.duo_last_error(), /^cudaGetDeviceCount: cuda\w+: .+ \(\d+\)$/);
  }
});

test("probeCuda says why cuda is unusable here, or that it is usable", async () => {
  const probe = await probeCuda({});
  assert.equal(probe.name, "cuda");
  if (!built) assert.equal(probe.reason, "library not built (npm run build:cuda)");
  else if (noDevice) assert.match(probe.reason ?? "", /^no CUDA device \(.+\)$/);
  else assert.equal(probe.usable, true);
  const bad = await probeCuda({ device: -1 });
  assert.equal(bad.usable, false);
  assert.match(bad.reason ?? "", /device must be an integer >= 0, got -1/);
});

test("createBackend(\"cuda\") rejects with DuoError BACKEND_UNAVAILABLE when there is no device", async () => {
  if (!noDevice) {
    const b = await createBackend("cuda");
    assert.equal(b.name, "cuda");
    await b.dispose();
    return;
  }
  await assert.rejects(createBackend("cuda"), (e: unknown) => {
    assert.ok(e instanceof DuoError);
    assert.equal(e.code, "BACKEND_UNAVAILABLE");
    assert.match(e.message, built ? /cuda: no CUDA device \(/ : /cuda: library not built \(npm run build:cuda\)/);
    return true;
  });
  await assert.rejects(createCudaBackend({}), (e: unknown) => e instanceof DuoError && e.code === "BACKEND_UNAVAILABLE");
});

test("a missing library path is a DuoError BACKEND_UNAVAILABLE whose cause names the path tried", async () => {
  const path = "/nonexistent/duo/libduo_cuda.so";
  await assert.rejects(createCudaBackend({ cudaLibrary: path }), (e: unknown) => {
    assert.ok(e instanceof DuoError);
    assert.equal(e.code, "BACKEND_UNAVAILABLE");
    assert.equal(e.message, `library not found at ${path} (from the cudaLibrary option)`);
    assert.ok(e.cause instanceof Error);
    assert.match(e.cause.message, new RegExp(`^tried ${path} \\(the cudaLibrary option\\): .*No such file`));
    return true;
  });
  const probe = await probeCuda({ cudaLibrary: path });
  assert.deepEqual(probe, { name: "cuda", usable: false, reason: `library not found at ${path} (from the cudaLibrary option)` });
});

test("duo_alloc receives a 64-bit byte count exactly", { skip: notBuilt }, () => {
  const h = new Uint32Array(1);
  const status = lib!.duo_alloc(2 ** 40 + 3, h);
  assert.notEqual(status, STATUS.OK);
  assert.match(lib!.duo_last_error(), /1099511627779/);
});

test("duo_append checks params, heads and rows before touching the device", { skip: notBuilt }, () => {
  const l = lib!;
  const p = new Int32Array(APPEND.PARAMS);
  const set = (dtype: number) => p.set([77, dtype, 2, 64, 2, 3]); // dst, dtype, row_heads, head_dim, T, src_heads
  const src = new Float32Array(2 * 3 * 64);
  set(7);
  assert.equal(l.duo_append(p, src, new Int32Array([0, 1]), new Int32Array([0, 1])), STATUS.ERR_ARGUMENT);
  assert.match(l.duo_last_error(), /dtype must be 0 \(f32\), 1 \(f16\), 2 \(bf16\), 3 \(int8\) or 4 \(int4\), got 7/);
  p.set([77, 4, 2, 63, 2, 3]); // int4 with an odd head dim
  assert.equal(l.duo_append(p, src, new Int32Array([0, 1]), new Int32Array([0, 1])), STATUS.ERR_UNSUPPORTED);
  assert.match(l.duo_last_error(), /int4 packs two values per byte: head_dim must be even, got 63/);
  set(1);
  assert.equal(l.duo_append(p, src, new Int32Array([1, 5]), new Int32Array([0, 1])), STATUS.ERR_ARGUMENT);
  assert.match(l.duo_last_error(), /heads\[1\] must be in \[0, src_heads = 3\), got 5/);
  assert.equal(l.duo_append(p, src, new Int32Array([1, 2]), new Int32Array([0, -2])), STATUS.ERR_ARGUMENT);
  assert.match(l.duo_last_error(), /rows\[1\] must be a row >= 0 or -1 \(skip\), got -2/);
  assert.equal(l.duo_append(p, null, new Int32Array([1, 2]), new Int32Array([0, 1])), STATUS.ERR_ARGUMENT);
  assert.match(l.duo_last_error(), /src must be a host array with params\[DUO_APPEND_SRC_BUF\] = 0, or NULL with a device tensor there; got NULL with buffer 0/);
});

test("duo_attend checks params, q_heads, kv_slots, the segment table and positions before touching the device", { skip: notBuilt }, () => {
  const l = lib!;
  let r = attend(l, { params: attendParams({ HEAD_DIM: 96 }) });
  assert.deepEqual(r, { status: STATUS.ERR_UNSUPPORTED, message: "duo_attend: head_dim must be 64 or 128 (the sizes the kernels are built for), got 96" });
  r = attend(l, { params: attendParams({ SINK: 4 }) });
  assert.equal(r.status, STATUS.ERR_ARGUMENT);
  assert.match(r.message, /window must be sink >= 0 and recent >= 0, or both -1 \(no window\), got 4, -1/);
  r = attend(l, { qHeads: new Int32Array([0, 9]) });
  assert.match(r.message, /q_heads\[1\] must be in \[0, num_heads \/ group = 4\), got 9/);
  r = attend(l, { kvSlots: new Int32Array([0, -3]) });
  assert.match(r.message, /kv_slots\[1\] must be >= 0, got -3/);
  r = attend(l, { kvSlots: new Int32Array([0, 2]) });
  assert.match(r.message, /segment 0: kv_slots must be in \[0, row_heads = 2\), got 2/);
  r = attend(l, { segments: segmentTable([goodSegments[0]!, [3, 4, 5, 2, 0, 3, 0, 0]]) });
  assert.match(r.message, /segment 1: dtype must be 0 \(f32\), 1 \(f16\), 2 \(bf16\), 3 \(int8\) or 4 \(int4\), got 5/);
  r = attend(l, { segments: segmentTable([goodSegments[0]!, [3, 4, 2, 2, 0, 4, 0, 0]]) });
  assert.match(r.message, /segment 1: positions \[0, 0 \+ 4\) are past the 3 positions given/);
  r = attend(l, { positions: null });
  assert.match(r.message, /positions is NULL for 3 positions/);
  // a subarray with a byte offset: the library must see the view, not the start of its buffer
  const backing = new Int32Array(SEG.FIELDS + 2 * SEG.FIELDS);
  backing.set(segmentTable([goodSegments[0]!, [3, 4, 2, 0, 0, 3, 0, 0]]), SEG.FIELDS);
  r = attend(l, { segments: backing.subarray(SEG.FIELDS) });
  assert.match(r.message, /segment 1: row_heads must be >= 1, got 0/);
});
