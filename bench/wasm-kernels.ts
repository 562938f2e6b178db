/**
 * Kernel micro-benchmark of the wasm backend (or, with --backend native, of the native library: the same C kernels
 * compiled for this CPU, threads instead of workers): decode attention of ONE layer of Llama-3-8B (32 query / 8 KV
 * heads, head dim 128, G = 4, all heads full attention over a paged cache of 1024-row pages) at growing contexts, with
 * 1 and 2 workers (threads), against the two ceilings of the machine measured in the same run by the same runtime and
 * worker count, with the benchmarked backend's own ceiling kernels:
 *
 *   limitGbps = min(readGBps, GFLOP/s ÷ (2·G FLOP per element / bytes per element))      (ANCHORS §4.1)
 *
 * and ratio = achieved KV GB/s ÷ limitGbps. Targets (issues): bf16, one worker, context ≥ 16K: ratio ≥ 0.70 (wasm),
 * ≥ 0.85 (native); two workers ≥ 1.7× one worker on 2 cores (wasm), two threads ≥ 1.8× one (native); quantized KV
 * (--dtypes bf16,int4,int8): decode time ≤ 1.15 × (KV bytes ÷ bf16's) × bf16's time for int4, ≤ 0.55 × for int8.
 *
 * The multiply-add ceiling kernel issues 4-lane vectors (wasm/src/bench_simd.c), as do most kernels; the native
 * library's tiled decode kernels issue 8-lane ones on AVX2 (bf16, f16) and AVX-512 (f16), 16-lane ones on AVX-512
 * (bf16, and the int4 / int8 kernels), attend_simd.c, so for those the FLOP ceiling is the measured one × 2 or × 4 (two
 * FMA pipes of every width on the x86 cores these sets target); the line says which ceiling bounds each case.
 *
 * Machines shared with other jobs make single timings swing by ±30 %, so every figure is the best of `--rounds`
 * rounds (default 5), and each round measures, for every worker count in turn, the ceilings and then every decode
 * case (at least 5 steps each), so that kernels, ceilings and worker counts see the same conditions: the best ceiling
 * (highest) and the best decode time (lowest) are what the hardware can do. Slow spells on a shared VM last seconds:
 * with 3 rounds of 3 steps at 64K, one of them could cover every sample of a case.
 *
 *   node --import tsx bench/wasm-kernels.ts [--backend wasm|native] [--contexts 16384,65536] [--threads 1,2]
 *     [--dtypes bf16,f16] [--rounds 5] [--json]
 *   bun bench/wasm-kernels.ts ...          deno run -A bench/wasm-kernels.ts ...
 */
import type { Op, Segment } from "../src/backend/types.ts";
import { createNativeBackend, type NativeBackend } from "../src/backend/native.ts";
import { createWasmBackend, type WasmBackend } from "../src/backend/wasm.ts";
import { measureWasmCeilings, type WasmCeilings } from "../src/backend/wasm-ceilings.ts";
import { headBytes, type KvDtype } from "../src/dtype.ts";
import { kvBufferBytes } from "../src/backend/layout.ts";
import { enableRelaxedSimd, runtime } from "../src/runtime.ts";

const HQ = 32, HKV = 8, D = 128, G = HQ / HKV, PAGE = 1024;

const args = (globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } });
const argv = args.Deno?.args ?? args.process?.argv.slice(2) ?? [];
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const contexts = opt("contexts", "16384,65536").split(",").map(Number);
const threadCounts = opt("threads", "1,2").split(",").map(Number);
const dtypes = opt("dtypes", "bf16,f16").split(",") as KvDtype[];
const rounds = Number(opt("rounds", "5"));
const json = argv.includes("--json");
const backendName = opt("backend", "wasm");
if (backendName !== "wasm" && backendName !== "native") throw new Error(`--backend must be wasm or native, got ${backendName}`);
const TARGET = backendName === "native" ? { ratio: 0.85, scale: 1.8 } : { ratio: 0.7, scale: 1.7 };
/** How many times wider than the ceiling kernel's 4 lanes the decode kernels of `dtype` multiply-add (see above). */
const madWidth = (kernels: string, dtype: KvDtype): number => {
  if (backendName !== "native") return 1;
  const avx512 = /avx512/.test(kernels), avx2 = /avx2/.test(kernels);
  if (dtype === "int4" || dtype === "int8" || dtype === "bf16") return avx512 ? 4 : avx2 && dtype === "bf16" ? 2 : 1;
  return dtype === "f16" && (avx512 || avx2) ? 2 : 1;
};
type KernelBackend = WasmBackend | NativeBackend;

let seed = 12345;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;

interface ShardCache {
  heads: number[];
  k: number[];
  v: number[];
}

/** Fill `pages` pages of K and V for the KV heads of every shard (round robin: shard s gets heads s, s+n, ...). */
async function fill(b: KernelBackend, dtype: KvDtype, pages: number): Promise<ShardCache[]> {
  const caches: ShardCache[] = [];
  for (let s = 0; s < b.shards; s++) {
    const heads = Array.from({ length: HKV }, (_, h) => h).filter((h) => h % b.shards === s);
    const n = heads.length, tiled = b.pageLayout(dtype, D, PAGE, G) === "T64";
    const bytes = kvBufferBytes(tiled ? "T64" : "NHD", PAGE, n, D, dtype);
    const src = new Float32Array(PAGE * HKV * D).map(rand);
    const c: ShardCache = { heads, k: [], v: [] };
    for (let p = 0; p < pages; p++) {
      const k = b.alloc(s, bytes), v = tiled ? k : b.alloc(s, bytes);
      const base = { dtype, rowHeads: n, headDim: D, src, srcHeads: HKV, heads: Int32Array.from(heads), rows: Int32Array.from({ length: PAGE }, (_, i) => i) };
      await b.run(s, [{ kind: "append", dst: k, ...base, layout: tiled ? "K64" : "NHD" }, { kind: "append", dst: v, ...base, layout: tiled ? "V64" : "NHD" }]);
      c.k.push(k);
      c.v.push(v);
    }
    caches.push(c);
  }
  return caches;
}

/** One decode step of the layer: every shard attends its heads over `pages` pages, all shards at once. */
function decodeStep(b: KernelBackend, caches: ShardCache[], dtype: KvDtype, pages: number): () => Promise<void> {
  const q = new Float32Array(HQ * D).map(rand), out = new Float32Array(HQ * D);
  const ops: Op[][] = caches.map((c) => {
    const segments: Segment[] = Array.from({ length: pages }, (_, p) => ({
      k: c.k[p]!, v: c.v[p]!, dtype, rowHeads: c.heads.length, rowStart: 0, rowCount: PAGE, positions: p * PAGE,
      layout: b.pageLayout(dtype, D, PAGE, G),
    }));
    return [{
      kind: "attend", q, T: 1, numHeads: HQ, headDim: D, group: G, qHeads: Int32Array.from(c.heads),
      kvSlots: Int32Array.from(c.heads, (_, j) => j), segments, qPos0: pages * PAGE - 1, window: null, out,
    }];
  });
  return async () => void (await Promise.all(ops.map((o, s) => b.run(s, o))));
}

/** One worker count's backend, its filled caches, and what the rounds found. */
interface Setup {
  threads: number;
  b: KernelBackend;
  caches: Map<KvDtype, ShardCache[]>;
  ceilings: WasmCeilings;
  /** fastest ms per "dtype context" */
  best: Map<string, number>;
}

interface Row {
  runtime: string;
  workers: number;
  dtype: KvDtype;
  context: number;
  ms: number;
  gbps: number;
  limitGbps: number;
  ratio: number;
  ceilings: WasmCeilings;
}

await enableRelaxedSimd(); // this script owns its process: the default (fused multiply-add) kernels on Node 20 too
const rt = runtime();
const rows: Row[] = [];
// One backend per worker count, all filled first; each round then measures every backend in turn, so that the
// one-worker and two-worker figures see the same machine (their ratio is a target).
const setups: Setup[] = [];
for (const threads of threadCounts) {
  const b = backendName === "native" ? await createNativeBackend({ threads }) : await createWasmBackend({ threads });
  const maxPages = Math.max(...contexts) / PAGE;
  const caches = new Map<KvDtype, ShardCache[]>();
  for (const dtype of dtypes) caches.set(dtype, await fill(b, dtype, maxPages));
  for (const dtype of dtypes) {
    const warm = decodeStep(b, caches.get(dtype)!, dtype, 1);
    for (let i = 0; i < 200; i++) await warm();
  }
  setups.push({ threads, b, caches, ceilings: { readGBps: 0, gflops: 0, workers: threads, kernels: b.kernels }, best: new Map() });
}
for (let round = 0; round < rounds; round++) {
  for (const { b, caches, ceilings, best } of setups) {
    const c = await measureWasmCeilings(b, 1);
    ceilings.readGBps = Math.max(ceilings.readGBps, c.readGBps);
    ceilings.gflops = Math.max(ceilings.gflops, c.gflops);
    for (const dtype of dtypes) {
      for (const context of contexts) {
        const pages = context / PAGE, step = decodeStep(b, caches.get(dtype)!, dtype, pages);
        await step();
        const key = `${dtype} ${context}`;
        for (let i = 0, reps = Math.max(5, Math.round(200 / pages)); i < reps; i++) {
          const t0 = performance.now();
          await step();
          best.set(key, Math.min(best.get(key) ?? Infinity, performance.now() - t0));
        }
      }
    }
  }
}
for (const { threads, b, ceilings, best } of setups) {
  if (!json) {
    console.log(`${rt.name} ${rt.version}, ${b.kernels} kernels, ${threads} worker(s): read ${ceilings.readGBps.toFixed(1)} GB/s, mad ${ceilings.gflops.toFixed(1)} GFLOP/s (best of ${rounds})`);
  }
  for (const dtype of dtypes) {
    for (const context of contexts) {
      const ms = best.get(`${dtype} ${context}`)!;
      const kvBytes = 2 * context * HKV * headBytes(dtype, D);
      const gbps = kvBytes / (ms * 1e6);
      const flopLimit = (madWidth(b.kernels, dtype) * ceilings.gflops) / ((2 * G * D) / headBytes(dtype, D));
      const limit = Math.min(ceilings.readGBps, flopLimit), bound = limit === ceilings.readGBps ? "read" : `mad × ${madWidth(b.kernels, dtype)}`;
      const row: Row = { runtime: `${rt.name} ${rt.version}`, workers: threads, dtype, context, ms, gbps, limitGbps: limit, ratio: gbps / limit, ceilings: ceilings };
      rows.push(row);
      if (json) console.log(JSON.stringify(row));
      else {
        console.log(`  decode ${dtype} ctx ${String(context).padStart(6)}: ${ms.toFixed(2).padStart(7)} ms  ${gbps.toFixed(2).padStart(6)} GB/s  limit ${limit.toFixed(2)} GB/s (${bound})  ratio ${(gbps / limit).toFixed(2)}`);
      }
    }
  }
  await b.dispose();
}

if (!json) {
  const one = rows.filter((r) => r.workers === 1), two = rows.filter((r) => r.workers === 2);
  for (const r of one) {
    const r2 = two.find((x) => x.dtype === r.dtype && x.context === r.context);
    const t = TARGET.ratio.toFixed(2), x = TARGET.scale.toFixed(1);
    const target = r.dtype === "bf16" && r.context >= 16384 ? (r.ratio >= TARGET.ratio ? ` (target ≥ ${t}: met)` : ` (target ≥ ${t}: NOT met)`) : "";
    const scale = r2 ? `; 2 workers ${(r.ms / r2.ms).toFixed(2)}× one worker${r.context >= 16384 ? ((r.ms / r2.ms) >= TARGET.scale ? ` (target ≥ ${x}×: met)` : ` (target ≥ ${x}×: NOT met)`) : ""}` : "";
    console.log(`${r.dtype} ${r.context}: 1 worker ratio ${r.ratio.toFixed(2)}${target}${scale}`);
  }
  // quantized decode time against bf16's, same worker count and context (issue 20's targets)
  for (const r of rows.filter((x) => x.dtype === "int4" || x.dtype === "int8")) {
    const base = rows.find((x) => x.dtype === "bf16" && x.workers === r.workers && x.context === r.context);
    if (!base) continue;
    const bytes = headBytes(r.dtype, D) / headBytes("bf16", D), max = r.dtype === "int4" ? 1.15 * bytes : 0.55;
    const t = r.ms / base.ms;
    console.log(`${r.dtype} ${r.context}, ${r.workers} worker(s): ${t.toFixed(2)}× bf16's time (bytes ${bytes.toFixed(3)}×; target ≤ ${max.toFixed(2)}×: ${t <= max ? "met" : "NOT met"})`);
  }
}
