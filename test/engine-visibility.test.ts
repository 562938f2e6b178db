// Which keys does each query see? Probed end to end through the engine: every key is the same vector (equal
// scores), and the value of position p is the one-hot e_p, so the output of a query is 1/|visible| on exactly its
// visible positions. Head 0 is a retrieval head, head 1 a streaming head. The same probe runs on the reference backend
// and, where it loads, on the native backend with 1 and 2 threads in f32, f16 and bf16 (one-hot values and the weights
// 1/n are exact or within 1e-6 in every dtype). The int8 / int4 caches must see exactly the same keys (reference, wasm,
// native and cuda, on a GPU or the emulation build): a constant key row and a one-hot value row survive both codecs
// (0 and 1 are exact), so quantization cannot change which keys are visible.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoAttention } from "../src/engine/duo.ts";
import { probeNative } from "../src/backend/native.ts";
import { probeWasm } from "../src/backend/wasm.ts";
import type { KvDtype } from "../src/dtype.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { upstreamVisible, windowVisible, type Visible } from "./helpers/attention.ts";

const D = 128; // one-hot values need D > number of tokens

interface On {
  backend: "reference" | "wasm" | "native" | "cuda";
  kvDtype: KvDtype;
  threads?: number;
  cudaLibrary?: string;
}

async function probe(mode: "upstream" | "window", S: number, R: number, chunks: number[], pageSize = 7,
  on: On = { backend: "reference", kvDtype: "f32" }): Promise<Map<number, number[][]>> {
  const duo = await DuoAttention.create({
    shape: { numLayers: 1, numHeads: 2, numKvHeads: 2, headDim: D },
    heads: [[true, false]], sinkSize: S, recentSize: R, prefill: mode, pageSize, threads: 0, ...on,
  });
  const seq = duo.sequence();
  const seen = new Map<number, number[][]>();
  let pos = 0;
  for (const T of chunks) {
    const q = new Float32Array(T * 2 * D).fill(0.5);
    const k = new Float32Array(T * 2 * D).fill(0.25);
    const v = new Float32Array(T * 2 * D);
    for (let i = 0; i < T; i++) for (let h = 0; h < 2; h++) v[((i * 2) + h) * D + pos + i] = 1;
    const out = await seq.attend(0, q, k, v);
    for (let i = 0; i < T; i++) {
      seen.set(pos + i, [0, 1].map((h) => {
        const row = out.subarray((i * 2 + h) * D, (i * 2 + h + 1) * D);
        const vis = [...row.keys()].filter((d) => row[d]! > 1e-6);
        // equal weights: every visible key carries exactly 1/|visible|
        for (const d of vis) assert.ok(Math.abs(row[d]! - 1 / vis.length) < 1e-6, `t=${pos + i} head ${h}: weight ${row[d]} != 1/${vis.length}`);
        return vis;
      }));
    }
    pos += T;
  }
  await duo.dispose();
  return seen;
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const expectSet = (vis: Visible, t: number) => range(0, t).filter((p) => vis(t, p));

function chunkStartOf(chunks: number[]): (t: number) => number {
  const starts: number[] = [];
  let c = 0;
  for (const T of chunks) for (let i = 0; i < T; i++, c++) starts.push(c - i);
  return (t) => starts[t]!;
}

test("SPEC §3.2 worked example (S=4, R=8, chunks 16/16/8, then decode) in upstream mode", async () => {
  const seen = await probe("upstream", 4, 8, [16, 16, 8, 1, 1]);
  const table: [number, number[]][] = [
    [0, [0]], [15, range(0, 15)],
    [16, [...range(0, 3), ...range(8, 16)]], [20, [...range(0, 3), ...range(8, 20)]], [31, [...range(0, 3), ...range(8, 31)]],
    [32, [...range(0, 3), ...range(24, 32)]], [39, [...range(0, 3), ...range(24, 39)]],
    [40, [...range(0, 3), ...range(32, 40)]], [41, [...range(0, 3), ...range(33, 41)]],
  ];
  for (const [t, keys] of table) {
    assert.deepEqual(seen.get(t)![1], keys, `streaming query ${t}`);
    assert.deepEqual(seen.get(t)![0], range(0, t), `retrieval query ${t} sees 0..t`);
  }
  // decode sees S + R + 1 keys
  assert.equal(seen.get(41)![1]!.length, 4 + 8 + 1);
});

test("window mode: query t sees exactly {0..S-1} ∪ {t-R..t} from the first token (same worked example)", async () => {
  const S = 4, R = 8;
  const seen = await probe("window", S, R, [16, 16, 8, 1, 1]);
  for (const [t, [ret, str]] of seen) {
    assert.deepEqual(str, expectSet(windowVisible(S, R), t), `streaming query ${t}`);
    assert.deepEqual(ret, range(0, t));
  }
  assert.equal(seen.get(40)![1]!.length, S + R + 1, "decode sees S + R + 1 keys");
  assert.equal(seen.get(39)![1]!.length, S + R + 1, "in window mode every query past S + R sees S + R + 1 keys");
});

// T < S, T = S + R, T = S + R + 1, chunks that straddle the sinks, S = 0, R = 0, tiny pages.
const grid: [number, number, number[]][] = [
  [4, 8, [2, 1, 3, 12, 1, 1]], // first chunks shorter than S, straddling the sinks
  [3, 5, [8, 1, 1, 1]], // T = S + R, then decode
  [3, 5, [9, 9, 1, 1]], // T = S + R + 1
  [2, 6, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], // token by token from the start
  [0, 4, [10, 5, 1]], // no sinks
  [4, 0, [10, 5, 1, 1]], // no recent window: sinks + self
  [5, 7, [30, 30, 2, 1]], // chunks much longer than the ring
];

const native = await probeNative({});
const ons: [On, string | false][] = [
  [{ backend: "reference", kvDtype: "f32" }, false],
  ...[1, 2].flatMap((threads) => (["f32", "f16", "bf16"] as const).map((kvDtype): [On, string | false] =>
    [{ backend: "native", kvDtype, threads }, native.usable ? false : `skipped: native backend not usable here (${native.reason})`])),
];

for (const mode of ["upstream", "window"] as const) for (const [on, skip] of ons) {
  const where = on.backend === "reference" ? "" : ` (native, ${on.threads} thread(s), ${on.kvDtype})`;
  test(`${mode} mode: visible keys over a grid of S, R and chunkings${where}`, { skip }, async () => {
    for (const [S, R, chunks] of grid) {
      const seen = await probe(mode, S, R, chunks, 3, on);
      const rule = mode === "window" ? windowVisible(S, R) : upstreamVisible(S, R, chunkStartOf(chunks));
      for (const [t, [ret, str]] of seen) {
        assert.deepEqual(str, expectSet(rule, t), `S=${S} R=${R} chunks=${chunks}: streaming query ${t}`);
        assert.deepEqual(ret, range(0, t), `retrieval query ${t}`);
      }
    }
  });
}

const quantSkip = {
  reference: false,
  wasm: (await probeWasm({})).usable ? false : "skipped: wasm backend not usable here",
  native: native.usable ? false : `skipped: native backend not usable here (${native.reason})`,
  cuda: cudaTarget.skip,
} as const;

for (const kvDtype of ["int8", "int4"] as const) {
  for (const backend of ["reference", "wasm", "native", "cuda"] as const) {
    const where = backend === "cuda" ? `cuda (${cudaTarget.label})` : backend;
    test(`${kvDtype} cache on ${where}: the same visible keys in both modes (worked example and part of the grid)`, { skip: quantSkip[backend] }, async () => {
      for (const mode of ["upstream", "window"] as const) {
        for (const [S, R, chunks] of [[4, 8, [16, 16, 8, 1, 1]], ...grid.slice(0, 3), grid[6]!] as [number, number, number[]][]) {
          const seen = await probe(mode, S, R, chunks, 3, { backend, kvDtype, threads: backend === "native" ? 2 : 0, cudaLibrary: cudaTarget.library });
          const rule = mode === "window" ? windowVisible(S, R) : upstreamVisible(S, R, chunkStartOf(chunks));
          for (const [t, [ret, str]] of seen) {
            assert.deepEqual(str, expectSet(rule, t), `${mode} S=${S} R=${R} chunks=${chunks}: streaming query ${t}`);
            assert.deepEqual(ret, range(0, t), `${mode}: retrieval query ${t}`);
          }
        }
      }
    });
  }
}
