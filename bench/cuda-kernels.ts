/**
 * Kernel benchmark of the cuda backend through the Backend contract (so the FFI and host staging are included in
 * the wall time): decode attention of ONE layer of Llama-3-8B (32 query / 8 KV heads, head dim 128, G = 4, all heads
 * full attention over 1024-row pages) at growing contexts, and a causal prefill block. For each: the kernels' device
 * time (CUDA events), the wall time of run(), and KV GB/s (decode) or TFLOP/s (prefill) from both.
 * The physical ceilings (copy bandwidth, torch SDPA) are measured by cuda/gpu-check.sh, which needs no JS runtime.
 *
 *   node --import tsx bench/cuda-kernels.ts [--contexts 16384,131072] [--prefill 4096] [--dtype bf16] [--json]
 *   bun bench/cuda-kernels.ts ...          deno run -A bench/cuda-kernels.ts ...
 */
import { type CudaBackend, createCudaBackend, probeCuda } from "../src/backend/cuda.ts";
import type { Handle, Op, Segment } from "../src/backend/types.ts";
import { headBytes, type KvDtype } from "../src/dtype.ts";
import { now, runtime } from "../src/runtime.ts";

const HQ = 32, HKV = 8, D = 128, G = HQ / HKV, PAGE = 1024;

const args = globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } };
const argv = args.Deno?.args ?? args.process?.argv.slice(2) ?? [];
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const contexts = opt("contexts", "16384,131072").split(",").map(Number);
const prefillT = Number(opt("prefill", "4096"));
const dtype = opt("dtype", "bf16") as KvDtype;
const json = argv.includes("--json");

let seed = 12345;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** Pages of K and V (every KV head in every row) holding `tokens` tokens; one segment per page. */
async function pages(b: CudaBackend, tokens: number, page: number): Promise<{ segments: Segment[]; handles: Handle[] }> {
  const src = new Float32Array(page * HKV * D).map(rand);
  const heads = Int32Array.from({ length: HKV }, (_, h) => h);
  const segments: Segment[] = [], handles: Handle[] = [];
  for (let p0 = 0; p0 < tokens; p0 += page) {
    const n = Math.min(page, tokens - p0);
    const [k, v] = [b.alloc(0, page * HKV * headBytes(dtype, D)), b.alloc(0, page * HKV * headBytes(dtype, D))];
    const rows = Int32Array.from({ length: n }, (_, i) => i);
    const ops: Op[] = [k, v].map((dst) => ({ kind: "append", dst, dtype, rowHeads: HKV, headDim: D, src, srcHeads: HKV, heads, rows }));
    await b.run(0, ops);
    handles.push(k, v);
    segments.push({ k, v, dtype, rowHeads: HKV, rowStart: 0, rowCount: n, positions: p0 });
  }
  return { segments, handles };
}

async function time(b: CudaBackend, T: number, qPos0: number, segments: Segment[], reps: number) {
  const q = new Float32Array(T * HQ * D).map(rand), out = new Float32Array(T * HQ * D);
  const heads = Int32Array.from({ length: HKV }, (_, h) => h);
  const op: Op = { kind: "attend", q, T, numHeads: HQ, headDim: D, group: G, qHeads: heads, kvSlots: heads, segments, qPos0, window: null, out };
  await b.run(0, [op]); // warm-up
  const device: number[] = [], wall: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = now();
    await b.run(0, [op]);
    wall.push(now() - t0);
    device.push(b.lastDeviceMs());
  }
  return { deviceMs: median(device), wallMs: median(wall) };
}

const probe = await probeCuda({});
if (!probe.usable) {
  console.log(`cuda-kernels: cuda backend not usable here: ${probe.reason}`);
} else {
  const b = (await createCudaBackend({})) as CudaBackend;
  const rows: Record<string, unknown>[] = [];
  try {
    for (const ctx of contexts) {
      const { segments, handles } = await pages(b, ctx + 1, PAGE);
      const t = await time(b, 1, ctx, segments, 50);
      const bytes = 2 * (ctx + 1) * HKV * headBytes(dtype, D);
      rows.push({ kind: "decode", dtype, context: ctx, deviceUs: 1e3 * t.deviceMs, wallUs: 1e3 * t.wallMs,
        deviceGBps: bytes / t.deviceMs / 1e6, wallGBps: bytes / t.wallMs / 1e6 });
      for (const h of handles) b.free(0, h);
    }
    const { segments, handles } = await pages(b, prefillT, prefillT);
    const t = await time(b, prefillT, 0, segments, 5);
    const flops = 2 * HQ * D * prefillT * prefillT;
    rows.push({ kind: "prefill", dtype, tokens: prefillT, deviceMs: t.deviceMs, wallMs: t.wallMs,
      deviceTflops: flops / t.deviceMs / 1e9, wallTflops: flops / t.wallMs / 1e9 });
    for (const h of handles) b.free(0, h);
  } finally {
    await b.dispose();
  }
  if (json) for (const r of rows) console.log(JSON.stringify({ runtime: runtime().name, ...r }));
  else {
    console.log(`cuda kernels, Llama-3-8B layer (${HQ}/${HKV} heads, D=${D}), ${dtype} KV, ${runtime().name} ${runtime().version}`);
    for (const r of rows) {
      console.log(r.kind === "decode"
        ? `  decode  ctx ${String(r.context).padStart(7)}  device ${(r.deviceUs as number).toFixed(1).padStart(8)} us ${(r.deviceGBps as number).toFixed(0).padStart(6)} GB/s   wall ${(r.wallUs as number).toFixed(1).padStart(8)} us ${(r.wallGBps as number).toFixed(0).padStart(6)} GB/s`
        : `  prefill T ${String(r.tokens).padStart(7)}  device ${(r.deviceMs as number).toFixed(2).padStart(8)} ms ${(r.deviceTflops as number).toFixed(1).padStart(6)} TFLOP/s   wall ${(r.wallMs as number).toFixed(2).padStart(8)} ms ${(r.wallTflops as number).toFixed(1).padStart(6)} TFLOP/s`);
    }
  }
}
