/**
 * The WebAssembly SIMD backend: the kernels of wasm/dist/duo.wasm (C, wasm/src), loaded by plain
 * WebAssembly.instantiate (no emscripten glue), with head-sharded workers.
 *
 * Shards: `threads` workers (default: one per core), each with its own duo.wasm instance and its own 4 GiB memory
 * holding the buffers of its KV heads; `threads: 0`, or a runtime without workers, runs one instance in this thread.
 * The handle table and the byte accounting live here, on the calling thread, so alloc() can answer synchronously;
 * allocations reach a worker as messages ahead of any later run, and a worker-side failure rejects the next run.
 * Small runs (a decode step's) go through a shared lane (wasm-lane.ts: SharedArrayBuffer + Atomics) where the runtime
 * has one, larger ones and those that meet a busy lane as messages; the worker keeps them all in order.
 * Every op is validated (validate.ts) before it leaves, so a rejected op never reaches a kernel.
 */
import { createModelKernels, type ModelKernels, type ModelKernelsOptions } from "../model/kernels.ts";
import { KV_DTYPES, type KvDtype } from "../dtype.ts";
import { checkInt, checkOneOf, DuoError } from "../errors.ts";
import { readUrl, runtime, spawnWorker, type WorkerThread } from "../runtime.ts";
import { type KvLayout, tileable } from "./layout.ts";
import type { BackendOptions } from "./registry.ts";
import type { AppendOp, AttendOp, Backend, BackendCapabilities, BackendMemory, BackendProbe, Handle, Op } from "./types.ts";
import { checkOp } from "./validate.ts";
import { scatterCompact } from "./abi.ts";
import { type AttendResult, type ExecOp, type FromWorker, type ToWorker, WasmExec } from "./wasm-exec.ts";
import { CLOSED, DONE, Lane, laneUsable, REQ, STATUS, waitChange } from "./wasm-lane.ts";

/** wasm32 memory limit of one shard, and what is kept back for the module's data, stack and per-op scratch. */
const WASM32_BYTES = 2 ** 32;
const RESERVE_BYTES = 128 * 2 ** 20;
/** allocator cost of a buffer: 64-byte rounding plus a 64-byte header (wasm/src/alloc.c) */
const blockBytes = (bytes: number) => Math.ceil(bytes / 64) * 64 + 64;

export type WasmKernels = "simd" | "relaxed" | "scalar";
export interface WasmBackendOptions extends BackendOptions {
  /** which build of the kernels: duo-relaxed.wasm (SIMD128 + relaxed-SIMD fused multiply-add) where the runtime has
   *  relaxed SIMD, else duo.wasm (SIMD128) — "auto", the default; or one of them by name; or duo-scalar.wasm (the
   *  scalar twins, for tests) */
  kernels?: "auto" | WasmKernels;
}

const KERNEL_FILES: Record<WasmKernels, string> = { simd: "duo.wasm", relaxed: "duo-relaxed.wasm", scalar: "duo-scalar.wasm" };

/** The build `kernels` selects here: "auto" is relaxed where this runtime validates relaxed SIMD, else simd. */
export function wasmKernels(kernels: WasmBackendOptions["kernels"] = "auto"): WasmKernels {
  const k = checkOneOf("kernels", kernels, ["auto", "simd", "relaxed", "scalar"] as const);
  return k === "auto" ? (runtime().wasmRelaxedSimd ? "relaxed" : "simd") : k;
}

/** What wasm/src implements: every dtype, head dims in 4-lane vectors, token-major and tiled pages (attend.c). */
export const WASM_CAPABILITIES: BackendCapabilities = { dtypes: KV_DTYPES, headDims: { multipleOf: 4 }, layouts: ["NHD", "T64"] };

/** The most a shard may hold: its wasm32 memory less a reserve for the kernels' scratch and the arena's headers. */
export const MAX_SHARD_BYTES = WASM32_BYTES - RESERVE_BYTES;

/** One memory domain: a duo.wasm instance in this thread, or a worker holding one. */
interface Shard {
  alloc(h: Handle, bytes: number): void;
  free(h: Handle): void;
  run(ops: ExecOp[]): Promise<(AttendResult | null)[]>;
  /** runs that went through a shared lane (wasm-lane.ts), if this shard has one */
  readonly laneRuns?: number;
  read(h: Handle, offset: number, length: number): Promise<Uint8Array>;
  measure(kind: "read" | "mad", amount: number, reps: number): Promise<number>;
  dispose(): Promise<void>;
}

class LocalShard implements Shard {
  constructor(private readonly exec: WasmExec) {}
  alloc(h: Handle, bytes: number): void {
    if (!this.exec.alloc(h, bytes)) {
      throw new DuoError("CAPACITY", `wasm backend: cannot allocate ${bytes} bytes: the module's memory cannot grow further (4 GiB limit or fragmentation)`);
    }
  }
  free(h: Handle): void {
    this.exec.free(h);
  }
  async run(ops: ExecOp[]) {
    return this.exec.run(ops);
  }
  async read(h: Handle, offset: number, length: number) {
    return this.exec.read(h, offset, length);
  }
  async measure(kind: "read" | "mad", amount: number, reps: number) {
    return this.exec.measure(kind, amount, reps);
  }
  async dispose() {}
}

class WorkerShard implements Shard {
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly inflight = new Set<Promise<unknown>>();
  /** sequence number of the last message or lane request sent (the worker handles them in this order) */
  private seq = 0;
  private failure: DuoError | null = null;
  private closing = false;
  /** a run is in the lane (one at a time; others go as messages) */
  private laneBusy = false;
  /** runs that went through the lane (tests check that it is used) */
  laneRuns = 0;

  private constructor(private readonly worker: WorkerThread, private readonly index: number, private readonly lane: Lane | null) {
    worker.onMessage((m) => this.settle(m as FromWorker));
    worker.onError((e) => {
      if (this.closing) return;
      this.failure = new DuoError("BACKEND_UNAVAILABLE", `wasm backend: worker ${index} failed: ${e.message}`, { cause: e });
      for (const p of this.pending.values()) p.reject(this.failure);
      this.pending.clear();
      this.closeLane();
      worker.unref();
    });
    worker.unref();
  }

  static async start(url: URL, module: WebAssembly.Module, index: number, useLane: boolean): Promise<WorkerShard> {
    const lane = useLane ? Lane.create() : null;
    const shard = new WorkerShard(await spawnWorker(url), index, lane);
    try {
      await shard.request({ type: "init", id: 0, module, lane: lane?.memory ?? null });
    } catch (e) {
      await shard.dispose();
      throw e;
    }
    return shard;
  }

  /** Post a request and wait for its reply; the worker is ref'd while any reply is outstanding. */
  private request<T>(m: DistributiveOmit<ToWorker, "seq"> & { id: number }, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return this.expect<T>((id) => {
      m.id = id;
      this.post(m, transfer);
    });
  }

  /** Register a reply for a new sequence number (also the request's id), then send the request with `send`. */
  private expect<T>(send: (seq: number) => void): Promise<T> {
    const id = ++this.seq;
    const p = new Promise<T>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      send(id);
    });
    this.inflight.add(p);
    const done = () => void this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  /** Send a message: the current sequence number when it was taken by expect(), else the next one. */
  private post(m: DistributiveOmit<ToWorker, "seq">, transfer: ArrayBuffer[] = []): void {
    const seq = "id" in m ? m.id : ++this.seq;
    this.worker.post({ ...m, seq } as ToWorker, transfer);
    if (this.lane) Atomics.notify(this.lane.ctl, REQ); // end the worker's hold on the lane (wasm-worker.ts)
  }

  private settle(m: FromWorker): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.worker.unref();
    if (m.ok) p.resolve(m.value);
    else p.reject(new DuoError(m.code, m.message));
  }

  alloc(handle: Handle, bytes: number): void {
    this.post({ type: "alloc", handle, bytes });
  }
  free(handle: Handle): void {
    this.post({ type: "free", handle });
  }
  run(ops: ExecOp[]) {
    const lane = this.lane;
    if (lane && !this.laneBusy && !this.failure && lane.encode(ops)) {
      this.laneBusy = true;
      this.laneRuns++;
      return this.expect<(AttendResult | null)[]>((seq) => {
        Atomics.store(lane.ctl, REQ, seq);
        Atomics.notify(lane.ctl, REQ);
        void this.awaitLane(lane, seq, ops);
      });
    }
    // Appends were packed for this worker (packAppend): their sources are ours to hand over, not to copy.
    const transfer = ops.flatMap((op) => (op.kind === "append" ? [op.src.buffer as ArrayBuffer] : []));
    return this.request<(AttendResult | null)[]>({ type: "run", id: 0, ops }, transfer);
  }

  /** Wait for the lane request `seq` to be answered, then settle it from the reply area. */
  private async awaitLane(lane: Lane, seq: number, ops: ExecOp[]): Promise<void> {
    for (let done = Atomics.load(lane.ctl, DONE); done !== seq; done = Atomics.load(lane.ctl, DONE)) {
      if (done === CLOSED) return; // the worker failed: its pending requests were rejected
      await waitChange(lane.ctl, DONE, done);
    }
    this.laneBusy = false;
    if (lane.ctl[STATUS] === 0) this.settle({ id: seq, ok: true, value: lane.results(ops) });
    else {
      const e = lane.error();
      this.settle({ id: seq, ok: false, code: e.code, message: e.message });
    }
  }

  /** Release a caller waiting on the lane, and the worker's lane watcher. */
  private closeLane(): void {
    if (!this.lane) return;
    for (const i of [DONE, REQ]) {
      Atomics.store(this.lane.ctl, i, CLOSED);
      Atomics.notify(this.lane.ctl, i);
    }
  }

  read(handle: Handle, offset: number, length: number) {
    return this.request<Uint8Array>({ type: "read", id: 0, handle, offset, length });
  }
  measure(kind: "read" | "mad", amount: number, reps: number) {
    return this.request<number>({ type: "measure", id: 0, kind, amount, reps });
  }
  /** Let the runs in flight finish, then stop the worker. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
    this.closing = true;
    this.closeLane();
    await this.worker.terminate();
  }
}

/** Omit over each member of a union. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface BufferInfo {
  shard: number;
  bytes: number;
}

export class WasmBackend implements Backend {
  readonly name = "wasm" as const;
  readonly capabilities = WASM_CAPABILITIES;
  readonly shards: number;
  /** true when the shards are workers */
  readonly workers: boolean;
  private readonly buffers = new Map<Handle, BufferInfo>();
  private readonly accounted: number[];
  private nextHandle = 1;
  private disposed = false;

  /** bytes each shard may hold (BackendOptions.memoryLimit, at most MAX_SHARD_BYTES) */
  private readonly capacity: number;

  /** @param kernels the build the shards run ("custom": BackendOptions.wasmModule) */
  constructor(private readonly impl: Shard[], workers: boolean, readonly kernels: WasmKernels | "custom", memoryLimit = MAX_SHARD_BYTES) {
    this.capacity = Math.min(memoryLimit, MAX_SHARD_BYTES);
    this.shards = impl.length;
    this.workers = workers;
    this.accounted = impl.map(() => 0);
  }

  /** duo-model.wasm beside the attention shards: in this thread, or split over model workers for models of
   *  PARALLEL_MIN_BYTES and more where this thread may block (createModelKernels "auto"); the reference kernels where
   *  this runtime lacks WASM SIMD. */
  async modelKernels(options: ModelKernelsOptions = {}): Promise<ModelKernels> {
    return await createModelKernels("auto", options);
  }

  /** Tiled pages where the fast tiled kernels apply: bf16 or f16 KV, G = 4 decode (head dim a multiple of 8, pages a
   *  multiple of 64 rows); token-major otherwise (wasm/src/attend.c). Quantized KV is always token-major: a record
   *  (values + scale) per head row, dequantized block by block inside attention (wasm/src/quant.h). */
  pageLayout(dtype: KvDtype, headDim: number, pageRows: number, group: number): KvLayout {
    return (dtype === "f16" || dtype === "bf16") && group === 4 && tileable(pageRows, headDim) ? "T64" : "NHD";
  }

  alloc(shard: number, bytes: number): Handle {
    this.live();
    this.shardIndex(shard);
    checkInt("alloc bytes", bytes, 0);
    const cost = blockBytes(bytes), capacity = this.capacity;
    if (this.accounted[shard]! + cost > capacity) {
      const limit = capacity < MAX_SHARD_BYTES ? "memoryLimit" : `4 GiB wasm32 memory minus a ${RESERVE_BYTES / 2 ** 20} MiB reserve`;
      throw new DuoError("CAPACITY", `wasm backend: shard ${shard} cannot hold ${bytes} more bytes: ${this.accounted[shard]} of ${capacity} bytes are in use (${limit}), ${Math.max(0, capacity - this.accounted[shard]! - 64)} available; use more threads (shards), a smaller dtype or a shorter context`);
    }
    const h = this.nextHandle++;
    this.impl[shard]!.alloc(h, bytes);
    this.buffers.set(h, { shard, bytes });
    this.accounted[shard]! += cost;
    return h;
  }

  free(shard: number, h: Handle): void {
    this.live();
    const b = this.buffer(shard, h);
    this.impl[shard]!.free(h);
    this.buffers.delete(h);
    this.accounted[shard]! -= blockBytes(b.bytes);
  }

  /** Runs sent through the workers' shared lanes so far (0 without workers or lanes). */
  get laneRuns(): number {
    return this.impl.reduce((n, s) => n + (s.laneRuns ?? 0), 0);
  }

  memory(shard: number): BackendMemory {
    this.shardIndex(shard);
    return { allocated: this.accounted[shard]!, capacity: this.capacity };
  }

  async read(shard: number, h: Handle, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.live();
    const b = this.buffer(shard, h);
    checkInt("read byteOffset", byteOffset, 0, b.bytes);
    checkInt("read byteLength", byteLength, 0, b.bytes - byteOffset);
    return this.impl[shard]!.read(h, byteOffset, byteLength);
  }

  async run(shard: number, ops: Op[]): Promise<void> {
    this.live();
    this.shardIndex(shard);
    const exec = ops.map((op, i) => this.check(shard, op, i));
    const results = await this.impl[shard]!.run(exec);
    ops.forEach((op, i) => {
      if (op.kind === "attend") scatterCompact(op, results[i]!.out, results[i]!.lse);
    });
  }

  /** Milliseconds for `reps` calls of a ceiling kernel on one shard (bench/wasm-kernels.ts): "read" streams
   *  `amount` bytes (a multiple of 64) through a SIMD sum, "mad" runs `amount` steps of 96 FLOP. */
  measure(shard: number, kind: "read" | "mad", amount: number, reps: number): Promise<number> {
    this.live();
    this.shardIndex(shard);
    return this.impl[shard]!.measure(kind, amount, reps);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all(this.impl.map((s) => s.dispose()));
    this.buffers.clear();
  }

  private live(): void {
    if (this.disposed) throw new DuoError("DISPOSED", "wasm backend: used after dispose()");
  }

  private shardIndex(shard: number): void {
    checkInt("shard", shard, 0, this.shards - 1);
  }

  private buffer(shard: number, h: Handle): BufferInfo {
    this.shardIndex(shard);
    const b = this.buffers.get(h);
    if (!b) throw new DuoError("INVALID_ARGUMENT", `wasm backend: unknown buffer handle ${h}`);
    if (b.shard !== shard) throw new DuoError("INVALID_ARGUMENT", `wasm backend: buffer ${h} lives on shard ${b.shard}, not shard ${shard}`);
    return b;
  }

  /** Validate an op against the capabilities and the buffers it names (validate.ts); return what travels to the
   *  executor. */
  private check(shard: number, op: Op, i: number): ExecOp {
    checkOp(op, i, this.capabilities, (h) => this.buffer(shard, h).bytes);
    if (op.kind === "append") return this.workers ? packAppend(op) : op;
    const { out: _out, lse, ...rest } = op;
    return { ...rest, lse: lse !== undefined };
  }
}

/**
 * The part of an append a worker needs: only the rows it writes (rows ≥ 0) and the heads it stores, as a fresh
 * [n, rowHeads, D] array. A call's K/V holds every token and head, but a worker keeps only its pages' tokens and its
 * heads (and a ring only the last R tokens), so this is what keeps postMessage traffic at the bytes actually stored.
 */
function packAppend(op: AppendOp): AppendOp {
  const D = op.headDim, H = op.rowHeads;
  let n = 0;
  for (const r of op.rows) if (r >= 0) n++;
  const src = new Float32Array(n * H * D), rows = new Int32Array(n);
  for (let t = 0, i = 0; t < op.rows.length; t++) {
    if (op.rows[t]! < 0) continue;
    rows[i] = op.rows[t]!;
    for (let j = 0; j < H; j++) {
      const from = (t * op.srcHeads + op.heads[j]!) * D;
      src.set(op.src.subarray(from, from + D), (i * H + j) * D);
    }
    i++;
  }
  return { ...op, src, srcHeads: H, heads: Int32Array.from({ length: H }, (_, j) => j), rows };
}

/** Where the .wasm files are: wasm/dist when running from the TypeScript sources, beside this module when bundled;
 *  null where this module has no URL (workerd gives bundled modules none). */
function wasmUrl(kernels: WasmKernels): URL | null {
  const file = KERNEL_FILES[kernels];
  const here = import.meta.url as string | undefined;
  if (typeof here !== "string") return null;
  return here.endsWith(".ts") ? new URL(`../../wasm/dist/${file}`, here) : new URL(`./${file}`, here);
}

/** What to do when the kernels cannot be found by URL: pass them compiled, the way each kind of platform can. */
function passModuleHint(kernels: WasmKernels): string {
  const file = KERNEL_FILES[kernels];
  return `pass the compiled kernels as wasmModule: \`import wasmModule from "duo-attention/${file}"\` where the platform compiles ` +
    `.wasm imports (Cloudflare Workers / wrangler, bundlers with a wasm-module rule), or \`wasmModule: await WebAssembly.compileStreaming(fetch(url))\` ` +
    `with the URL where you serve ${file} (it ships in the package's dist/)` +
    (kernels === "relaxed" ? "; duo.wasm, the plain-SIMD build, also works where relaxed SIMD does not" : "");
}

function workerUrl(): URL {
  return import.meta.url.endsWith(".ts") ? new URL("./wasm-worker.ts", import.meta.url) : new URL("./wasm-worker.js", import.meta.url);
}

const compiled = new Map<WasmKernels, Promise<WebAssembly.Module>>();

/** The compiled kernels: `opts.wasmModule` when given (no file access), else wasm/dist (source) or the module's own
 *  directory (bundle), compiled once per process. */
export function loadWasmModule(opts: WasmBackendOptions = {}): Promise<WebAssembly.Module> {
  if (opts.wasmModule !== undefined) {
    if (!(opts.wasmModule instanceof WebAssembly.Module)) {
      return Promise.reject(new DuoError("INVALID_ARGUMENT", "wasmModule must be a WebAssembly.Module (compiled duo.wasm)"));
    }
    return Promise.resolve(opts.wasmModule);
  }
  let kernels: WasmKernels;
  try {
    kernels = wasmKernels(opts.kernels);
  } catch (e) {
    return Promise.reject(e);
  }
  let m = compiled.get(kernels);
  if (!m) {
    const url = wasmUrl(kernels);
    if (!url) {
      return Promise.reject(new DuoError("BACKEND_UNAVAILABLE", `the wasm backend cannot locate ${KERNEL_FILES[kernels]} in this runtime (${runtime().name}: this module has no URL and no file access); ${passModuleHint(kernels)}`));
    }
    m = readUrl(url).then((bytes) => WebAssembly.compile(bytes as BufferSource)).catch((e: Error) => {
      compiled.delete(kernels);
      const hint = runtime().fs ? "" : `; ${passModuleHint(kernels)}`;
      throw new DuoError("BACKEND_UNAVAILABLE", `cannot load ${url.href}: ${e.message}${hint}`, { cause: e });
    });
    compiled.set(kernels, m);
  }
  return m;
}

export async function probeWasm(opts: WasmBackendOptions): Promise<BackendProbe> {
  const rt = runtime();
  if (!rt.wasm) return { name: "wasm", usable: false, reason: "this runtime has no WebAssembly" };
  if (!rt.wasmSimd && opts.wasmModule === undefined && (opts.kernels ?? "auto") !== "scalar") {
    return { name: "wasm", usable: false, reason: "this runtime's WebAssembly lacks fixed-width SIMD (simd128), which duo.wasm needs" };
  }
  if (!rt.wasmRelaxedSimd && opts.kernels === "relaxed") {
    return { name: "wasm", usable: false, reason: "this runtime's WebAssembly lacks relaxed SIMD, which duo-relaxed.wasm needs (Node 20: --experimental-wasm-relaxed-simd)" };
  }
  try {
    const m = await loadWasmModule(opts);
    if (!WebAssembly.Module.exports(m).some((e) => e.name === "duo_attend")) {
      return { name: "wasm", usable: false, reason: "wasmModule is not duo.wasm (it has no duo_attend export)" };
    }
  } catch (e) {
    return { name: "wasm", usable: false, reason: (e as Error).message };
  }
  return { name: "wasm", usable: true };
}

export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const rt = runtime();
  const threads = checkInt("threads", opts.threads ?? rt.cores, 0, 1024);
  const limit = opts.memoryLimit === undefined ? undefined : checkInt("memoryLimit", opts.memoryLimit, 1);
  if (opts.sharedLane !== undefined && typeof opts.sharedLane !== "boolean") {
    throw new DuoError("INVALID_ARGUMENT", `sharedLane must be true or false, got ${JSON.stringify(opts.sharedLane)}`);
  }
  const module = await loadWasmModule(opts);
  const kernels = opts.wasmModule === undefined ? wasmKernels(opts.kernels) : "custom";
  if (threads === 0 || !rt.workers) return new WasmBackend([new LocalShard(await WasmExec.create(module))], false, kernels, limit);
  const lane = (opts.sharedLane ?? true) && laneUsable();
  const started = await Promise.allSettled(Array.from({ length: threads }, (_, i) => WorkerShard.start(workerUrl(), module, i, lane)));
  const shards = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await Promise.all(shards.map((s) => s.dispose()));
    const e = failed.reason as Error;
    throw new DuoError("BACKEND_UNAVAILABLE", `wasm backend: cannot start its workers: ${e.message} (threads: 0 runs without workers)`, { cause: e });
  }
  return new WasmBackend(shards, true, kernels, limit);
}
