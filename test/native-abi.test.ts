// src/backend/abi.ts (the wire format of the CPU kernels' C ABI, spoken by wasm-exec.ts and native.ts) must say
// exactly what wasm/src/duo.h says: the API version, status / dtype / flag / layout codes, the duo_segment words; the
// model's weight codes of kernels-native.ts must be native/src/host.h's. Every build reports the same version: the
// committed wasm modules, and the native library where it loads. Needs no native library for the header checks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readBytes, readText } from "../src/runtime.ts";
import { DTYPE_CODE, DUO_API_VERSION, DUO_DTYPE_MASK, DUO_NONFINITE, LAYOUT_CODE, SEG, SEGMENT_WORDS, STATUS } from "../src/backend/abi.ts";
import { probeNative } from "../src/backend/native.ts";
import { WEIGHT_CODE } from "../src/model/kernels-native.ts";

const path = (p: string) => decodeURIComponent(new URL(p, import.meta.url).pathname);
const duoH = await readText(path("../wasm/src/duo.h"));
const hostH = await readText(path("../native/src/host.h"));
const enums = (text: string) => new Map([...text.matchAll(/\b(DUO_[A-Z0-9_]+)\s*=\s*(-?\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
const duo = enums(duoH);

test("abi.ts: API version, status, dtype, flag and layout codes equal wasm/src/duo.h's", () => {
  assert.equal(DUO_API_VERSION, Number(/#define DUO_API_VERSION (\d+)/.exec(duoH)?.[1]));
  for (const [key, value] of Object.entries(STATUS)) assert.equal(value, duo.get(`DUO_${key}`), `DUO_${key}`);
  assert.deepEqual(DTYPE_CODE, { f32: duo.get("DUO_F32"), f16: duo.get("DUO_F16"), bf16: duo.get("DUO_BF16"), int8: duo.get("DUO_INT8"), int4: duo.get("DUO_INT4") });
  assert.equal(DUO_DTYPE_MASK, duo.get("DUO_DTYPE_MASK"));
  assert.equal(DUO_NONFINITE, duo.get("DUO_NONFINITE"));
  assert.ok(Object.values(DTYPE_CODE).every((c) => (c & DUO_DTYPE_MASK) === c && (c & DUO_NONFINITE) === 0), "every dtype code fits the mask, clear of the flag");
  assert.deepEqual(LAYOUT_CODE, { NHD: duo.get("DUO_NHD"), K64: duo.get("DUO_K64"), V64: duo.get("DUO_V64"), T64: duo.get("DUO_T64") });
});

test("abi.ts: the duo_segment words follow duo.h's struct (duo_ptr = two words)", () => {
  const body = /typedef struct \{([\s\S]*?)\} duo_segment;/.exec(duoH)?.[1] ?? "";
  const words: Record<string, number> = {};
  let at = 0;
  for (const [, type, names] of body.matchAll(/^\s*(duo_ptr|int32_t)\s+([^;]+);/gm)) {
    for (const name of names!.split(",").map((n) => n.trim())) {
      words[name] = at;
      at += type === "duo_ptr" ? 2 : 1;
    }
  }
  assert.equal(at, SEGMENT_WORDS);
  assert.deepEqual(SEG, { K: words.k, V: words.v, POSITIONS: words.positions, DTYPE: words.dtype, ROW_HEADS: words.row_heads,
    ROW_START: words.row_start, ROW_COUNT: words.row_count, POS0: words.pos0, LAYOUT: words.layout, BUFFER_ROWS: words.buffer_rows });
});

test("kernels-native.ts: the weight codes equal native/src/host.h's DUO_W_*", () => {
  const host = enums(hostH);
  for (const [dtype, code] of Object.entries(WEIGHT_CODE)) assert.equal(code, host.get(`DUO_W_${dtype.toUpperCase()}`), dtype);
  assert.equal(Object.keys(WEIGHT_CODE).length, host.get("DUO_W_COUNT"));
});

test("every build reports the one API version: duo.wasm, duo-relaxed.wasm, duo-scalar.wasm, and libduo.so where it loads", async () => {
  for (const name of ["duo", "duo-relaxed", "duo-scalar"]) {
    let instance: WebAssembly.Instance;
    try {
      instance = (await WebAssembly.instantiate(await readBytes(path(`../wasm/dist/${name}.wasm`)), {})).instance;
    } catch (e) {
      if (name === "duo-relaxed") continue; // a runtime without relaxed SIMD cannot compile it (wasm.ts then loads duo.wasm)
      throw e;
    }
    assert.equal((instance.exports.duo_api_version as () => number)(), DUO_API_VERSION, name);
  }
  const native = await probeNative({});
  if (native.usable) {
    const { lib } = await (await import("../ffi/load.ts")).loadNativeLibrary();
    assert.equal(lib.duo_api_version(), DUO_API_VERSION, "libduo.so");
  }
});
