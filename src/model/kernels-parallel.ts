/**
 * The tensor-parallel WASM model kernels ("wasm-parallel"): N workers (kernels-parallel-worker.ts), each with its own
 * duo-model.wasm instance and 4 GiB memory holding a slice of every matrix — a contiguous block of its rows —, so a
 * model of up to N × ~3.8 GiB loads, and each matmul runs on every core. The interface stays synchronous: a matmul
 * puts x into the shared bus (kernels-parallel-bus.ts), every worker computes its rows of y into the bus, and this
 * thread waits in Atomics.wait. That needs a thread that may block: Node, Bun and Deno main threads and workers, a
 * browser's (cross-origin isolated) workers — never a browser's main thread (parallelUnusable() says why not).
 *
 * Splitting by output rows keeps every output the sum the single-instance kernels compute (each row is accumulated
 * alone), so the results are bit-for-bit those of kernels "wasm": tokens go to the workers in blocks of a multiple
 * of the kernel's 32-token tile when a call does not fit in the bus at once, and a bias is added here, one f32
 * addition per output as in the kernel. Embedding tables are split by rows too (a tied lm_head is the same matrix);
 * each worker writes the rows of the tokens it holds. RMSNorm, RoPE, SwiGLU and the residual add are small: they run in
 * this thread's own instance, which also holds the vectors and the activations.
 *
 * The remainder rows of a matrix (rows % N) go to the workers in turn across matrices, so the workers' shares stay
 * within one row of each other; weights are written through the bus in pieces, straight into each worker's slice.
 *
 * Lifetime: the workers are unref'd (Node and Bun exit without dispose()); Deno's web Workers cannot be, so a Deno
 * script must dispose. A worker reports every failure of a command through the bus (a DuoError here); one killed
 * from outside mid-command would leave this thread waiting, as nothing else can wake it while it blocks.
 */
import { checkInt, DuoError } from "../errors.ts";
import { runtime, spawnWorker, type WorkerThread } from "../runtime.ts";
import { align64, Bus, DTYPES, EMBED, MATMUL, MATRIX, RESERVE, WRITE } from "./kernels-parallel-bus.ts";
import type { WorkerInit, WorkerReply } from "./kernels-parallel-worker.ts";
import { checkEmbed, checkMatmul } from "./kernel-checks.ts";
import { type Activations, type Matrix, matrixBytes, type ModelKernels, type Vector, WEIGHT_BLOCKS, type WeightDtype } from "./kernels.ts";
import { createWasmKernels, modelModule, type WasmKernels } from "./kernels-wasm.ts";

export interface ParallelOptions {
  /** a precompiled duo-model.wasm */
  wasmModule?: WebAssembly.Module;
  /** workers, each holding 1/N of every matrix (default: one per core) */
  modelThreads?: number;
  /** bytes of each worker's wasm memory that weights and activations may use (default: all of it, 4 GiB less the
   *  module's data); lower it to see a model that one instance cannot hold load across several */
  instanceBytes?: number;
  /** bytes of the shared data area that carries one call's input and output (default 32 MiB; larger calls go in
   *  token blocks) */
  busBytes?: number;
}

const DEFAULT_BUS_BYTES = 32 << 20;
/** the matmul kernel's token tile (TB in wasm/model/kernels.c): blocks of a multiple of it give the same sums */
const TOKEN_TILE = 32;

class ParMatrix implements Matrix {
  /** bytes written so far (each element once) */
  written = 0;
  constructor(readonly rows: number, readonly cols: number, readonly dtype: WeightDtype, readonly id: number) {}
}
class ParVector implements Vector {
  constructor(readonly length: number, readonly local: Vector, readonly data: Float32Array) {}
}

/** Why this thread cannot run the parallel kernels, or null when it can. */
export function parallelUnusable(): string | null {
  const rt = runtime();
  if (!rt.wasmSimd) return "this runtime's WebAssembly lacks SIMD128, which duo-model.wasm needs";
  if (!rt.workers) return "this runtime has no workers";
  if (!rt.sharedArrayBuffer) return "this runtime has no SharedArrayBuffer (browsers: only cross-origin isolated pages have it)";
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
  } catch {
    return "this thread may not block in Atomics.wait (a browser's main thread); run the model in a worker";
  }
  return null;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export class ParallelKernels implements ModelKernels {
  readonly name = "wasm-parallel" as const;
  /** bytes of weights each worker holds (64-byte aligned slices, as its instance lays them out) */
  private readonly used: number[];
  private nextId = 1;
  /** the worker that gets the next remainder row */
  private turn = 0;
  private disposed = false;
  private failure: DuoError | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly local: WasmKernels,
    private readonly bus: Bus,
    private readonly workers: WorkerThread[],
    /** bytes one worker's instance may use */
    readonly instanceBytes: number,
  ) {
    this.used = workers.map(() => 0);
    workers.forEach((w, i) => {
      w.onError((e) => {
        if (!this.disposed) this.failure ??= new DuoError("BACKEND_UNAVAILABLE", `wasm-parallel model kernels: worker ${i} failed: ${e.message}`, { cause: e });
      });
      w.unref();
    });
  }

  static async create(opts: ParallelOptions = {}): Promise<ParallelKernels> {
    const why = parallelUnusable();
    if (why) throw new DuoError("BACKEND_UNAVAILABLE", `model kernels "wasm-parallel" cannot run here: ${why}; use kernels "wasm" (one instance in this thread)`);
    const n = checkInt("modelThreads", opts.modelThreads ?? runtime().cores, 1, 256);
    const busBytes = checkInt("busBytes", opts.busBytes ?? DEFAULT_BUS_BYTES, 4096, 2 ** 31);
    const module = await modelModule(opts.wasmModule);
    const local = await createWasmKernels(module);
    const most = local.memory().capacity;
    const instanceBytes = opts.instanceBytes === undefined ? most : checkInt("instanceBytes", opts.instanceBytes, 1, most);
    const bus = Bus.create(n, busBytes);
    const started = await Promise.allSettled(Array.from({ length: n }, (_, index) => startWorker({ module, bus: bus.memory, workers: n, index })));
    const workers = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) {
      bus.close();
      await Promise.all(workers.map((w) => w.terminate()));
      const e = failed.reason as Error;
      throw new DuoError("BACKEND_UNAVAILABLE", `wasm-parallel model kernels: cannot start the workers: ${e.message}; use kernels "wasm"`, { cause: e });
    }
    return new ParallelKernels(local, bus, workers, instanceBytes);
  }

  /** Number of workers. */
  get threads(): number {
    return this.workers.length;
  }

  memory(): { weights: number; capacity: number } {
    return { weights: this.used.reduce((a, b) => a + b, 0) + this.local.memory().weights, capacity: this.workers.length * this.instanceBytes };
  }

  /** Each worker takes an even share of `weightBytes` (the remainder rows rotate, so shares differ by at most a row
   *  per matrix) plus `scratchBytes`; refuses naming the bytes per worker, then grows every worker's memory. */
  reserve(weightBytes: number, scratchBytes: number): void {
    this.check();
    const n = this.workers.length, share = Math.ceil(weightBytes / n), worst = Math.max(...this.used);
    if (worst + share + scratchBytes > this.instanceBytes) {
      const room = this.instanceBytes - scratchBytes - worst;
      const enough = room > 0 ? `; modelThreads: ${Math.ceil(weightBytes / room)} would hold it` : "; use a smaller prefillChunk";
      throw new DuoError(
        "CAPACITY",
        `the model needs ${weightBytes} bytes of weights (${gib(weightBytes)}), ${share} per model worker over ${n} workers, + ${scratchBytes} bytes of activations, but one worker's wasm instance holds ${this.instanceBytes} bytes and ${this.instanceBytes - worst} are available (${gib(this.instanceBytes - worst)})${enough}`,
      );
    }
    this.send([RESERVE, share, scratchBytes]);
  }

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    this.check();
    const n = this.workers.length, base = Math.floor(rows / n), extra = rows % n;
    const rowBytes = matrixBytes(1, cols, dtype); // whole blocks: a row of a block dtype never splits a block
    const bytes: number[] = [];
    for (let w = 0, first = 0; w < n; w++) {
      const count = base + ((w - this.turn + n) % n < extra ? 1 : 0);
      this.bus.slices[2 * w] = first;
      this.bus.slices[2 * w + 1] = count;
      first += count;
      bytes.push(align64(count * rowBytes));
      if (this.used[w]! + bytes[w]! > this.instanceBytes) {
        throw new DuoError("CAPACITY", `a [${rows}, ${cols}] ${dtype} matrix does not fit: model worker ${w} would hold ${this.used[w]! + bytes[w]!} bytes of weights, but its wasm instance holds ${this.instanceBytes}; reserve() before loading, or use more modelThreads`);
      }
    }
    const m = new ParMatrix(rows, cols, dtype, this.nextId++);
    this.send([MATRIX, m.id, cols, DTYPES.indexOf(dtype)]);
    this.turn = (this.turn + extra) % n;
    bytes.forEach((b, w) => (this.used[w]! += b));
    return m;
  }

  /** The bytes go through the bus in pieces; each worker copies the part in its rows into its instance. */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    this.check();
    const w = m as ParMatrix, bb = WEIGHT_BLOCKS[w.dtype].bytes, total = matrixBytes(w.rows, w.cols, w.dtype);
    if (byteOffset < 0 || byteOffset + bytes.length > total || w.written + bytes.length > total || bytes.length % bb !== 0 || byteOffset % bb !== 0) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at byte ${byteOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${total} bytes, ${w.written} written) or splits its ${bb}-byte blocks`);
    }
    const piece = this.bus.dataBytes - (this.bus.dataBytes % bb);
    for (let done = 0; done < bytes.length; done += piece) {
      const part = bytes.subarray(done, done + piece);
      this.bus.u8(0, part.length).set(part);
      this.send([WRITE, w.id, byteOffset + done, part.length]);
    }
    w.written += bytes.length;
  }

  vector(data: Float32Array): Vector {
    this.check();
    return new ParVector(data.length, this.local.vector(data), data.slice());
  }

  /** Activations live in this thread's own instance (the small ops run there on them in place); a matmul or an
   *  embedding lookup carries them through the bus. */
  activations(length: number): Activations {
    this.check();
    return this.local.activations(length);
  }

  view(a: Activations, offset: number, length: number): Activations {
    return this.local.view(a, offset, length);
  }

  release(a: Activations): void {
    this.local.release(a);
  }

  upload(a: Activations, src: Float32Array): void {
    this.local.upload(a, src);
  }

  download(a: Activations, dst: Float32Array): void {
    this.local.download(a, dst);
  }

  matmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void {
    this.check();
    checkMatmul(y, x, w, T, bias);
    const m = w as ParMatrix, { rows, cols } = m;
    const block = this.tokenBlock(T, 4 * (cols + rows), `a matmul with ${cols} inputs and ${rows} outputs`);
    for (let t0 = 0; t0 < T; t0 += block) {
      const n = Math.min(block, T - t0), out = align64(4 * n * cols);
      this.bus.f32(0, n * cols).set(this.local.f32(x).subarray(t0 * cols, (t0 + n) * cols));
      this.send([MATMUL, m.id, n, out, rows]);
      this.local.f32(y).set(this.bus.f32(out, n * rows), t0 * rows);
    }
    if (bias) {
      const b = (bias as ParVector).data, Y = this.local.f32(y);
      for (let t = 0; t < T; t++) for (let o = 0; o < rows; o++) Y[t * rows + o]! += b[o]!;
    }
  }

  rmsnorm(y: Activations, x: Activations, w: Vector, T: number, eps: number): void {
    this.check();
    this.local.rmsnorm(y, x, (w as ParVector).local, T, eps);
  }

  rope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    this.check();
    this.local.rope(x, T, heads, headDim, cos, sin);
  }

  swiglu(y: Activations, gate: Activations, up: Activations): void {
    this.check();
    this.local.swiglu(y, gate, up);
  }

  add(y: Activations, x: Activations): void {
    this.check();
    this.local.add(y, x);
  }

  embed(y: Activations, ids: Int32Array, table: Matrix): void {
    this.check();
    checkEmbed(y, ids, table);
    const m = table as ParMatrix, T = ids.length;
    const block = this.tokenBlock(T, 4 * (1 + m.cols), `an embedding lookup of ${m.cols} columns`);
    for (let t0 = 0; t0 < T; t0 += block) {
      const n = Math.min(block, T - t0), out = align64(4 * n);
      this.bus.i32(0, n).set(ids.subarray(t0, t0 + n));
      this.send([EMBED, m.id, n, out]);
      this.local.f32(y).set(this.bus.f32(out, n * m.cols), t0 * m.cols);
    }
  }

  /** Close the bus and terminate the workers (Deno's cannot be unref'd: a script ends only after this). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.bus.close();
    this.closing = Promise.all(this.workers.map((w) => w.terminate())).then(() => {});
    this.local.dispose();
  }

  /** Resolves once dispose() has terminated every worker. */
  async closed(): Promise<void> {
    await this.closing;
  }

  private check(): void {
    if (this.disposed) throw new DuoError("DISPOSED", "these model kernels have been disposed");
    if (this.failure) throw this.failure;
  }

  /** Tokens per trip through the bus: all T when they fit, else a multiple of the kernel's token tile. */
  private tokenBlock(T: number, bytesPerToken: number, what: string): number {
    const fit = Math.floor((this.bus.dataBytes - 64) / bytesPerToken);
    if (fit < 1) throw new DuoError("CAPACITY", `${what} needs ${bytesPerToken} bytes of the bus per token, but it has ${this.bus.dataBytes}; raise busBytes`);
    return T <= fit ? T : fit >= TOKEN_TILE ? fit - (fit % TOKEN_TILE) : fit;
  }

  private send(args: number[]): void {
    this.bus.args.set(args);
    this.bus.run();
  }
}

function workerUrl(): URL {
  return import.meta.url.endsWith(".ts") ? new URL("./kernels-parallel-worker.ts", import.meta.url) : new URL("./model-worker.js", import.meta.url);
}

/** Start one worker and wait until its instance is up. */
async function startWorker(init: WorkerInit): Promise<WorkerThread> {
  const worker = await spawnWorker(workerUrl());
  try {
    await new Promise<void>((resolve, reject) => {
      worker.onMessage((m) => {
        const r = m as WorkerReply;
        if (r.ok) resolve();
        else reject(new Error(r.message));
      });
      worker.onError(reject);
      worker.post(init);
    });
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  return worker;
}
