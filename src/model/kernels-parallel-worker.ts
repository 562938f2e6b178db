/**
 * A worker of the tensor-parallel model kernels (kernels-parallel.ts): one duo-model.wasm instance (WasmKernels,
 * kernels-wasm.ts) holding this worker's rows of every matrix. One message starts it (the compiled module, the bus,
 * its index); from then on it serves the bus only (kernels-parallel-bus.ts), blocked in Atomics.wait between
 * commands, until the caller closes the bus. Bundled builds load this file as dist/model-worker.js.
 */
import { DuoError } from "../errors.ts";
import { parentChannel } from "../runtime.ts";
import { Bus, CLOSED, DTYPES, EMBED, MATMUL, MATRIX, RESERVE, WRITE } from "./kernels-parallel-bus.ts";
import { type Activations, type Matrix, matrixBytes } from "./kernels.ts";
import { createWasmKernels, type WasmKernels } from "./kernels-wasm.ts";

export interface WorkerInit {
  module: WebAssembly.Module;
  bus: SharedArrayBuffer;
  workers: number;
  index: number;
}
export type WorkerReply = { ok: true } | { ok: false; message: string };

/** This worker's rows [first, first + count) of a matrix (m is null when it holds none). */
interface Slice {
  m: Matrix | null;
  first: number;
  count: number;
  cols: number;
  /** bytes of one row (whole blocks of the dtype) */
  rowBytes: number;
}

const channel = await parentChannel();
const slices = new Map<number, Slice>();
/** this worker's input and output activations, grown to the largest call so far */
let io: { x: Activations; y: Activations } | null = null;

/** Activations for a call's input x [n] and output y [m] (the first n and m elements of io's). */
function buffers(k: WasmKernels, n: number, m: number): { x: Activations; y: Activations } {
  if (!io || io.x.length < n || io.y.length < m) {
    if (io) (k.release(io.y), k.release(io.x));
    io = { x: k.activations(Math.max(n, io?.x.length ?? 0)), y: k.activations(Math.max(m, io?.y.length ?? 0)) };
  }
  return { x: k.view(io.x, 0, n), y: k.view(io.y, 0, m) };
}

function slice(id: number): Slice {
  const s = slices.get(id);
  if (!s) throw new DuoError("INVALID_ARGUMENT", `no matrix ${id} in this worker`);
  return s;
}

/** Do this worker's share of the command in the bus's args. */
function handle(k: WasmKernels, bus: Bus, index: number): void {
  const a = bus.args;
  switch (a[0]) {
    case MATRIX: {
      const dtype = DTYPES[a[3]!]!, first = bus.slices[2 * index]!, count = bus.slices[2 * index + 1]!, cols = a[2]!;
      slices.set(a[1]!, { m: count > 0 ? k.matrix(count, cols, dtype) : null, first, count, cols, rowBytes: matrixBytes(1, cols, dtype) });
      return;
    }
    case WRITE: {
      // the part of bytes [b0, b0 + n) that falls in this worker's rows (row edges are block edges)
      const s = slice(a[1]!), b0 = a[2]!, n = a[3]!;
      const own0 = s.first * s.rowBytes, lo = Math.max(b0, own0), hi = Math.min(b0 + n, own0 + s.count * s.rowBytes);
      if (lo < hi) k.write(s.m!, lo - own0, bus.u8(lo - b0, hi - lo));
      return;
    }
    case MATMUL: {
      const s = slice(a[1]!), T = a[2]!, out = a[3]!, rows = a[4]!;
      if (s.count === 0) return;
      const { x, y } = buffers(k, T * s.cols, T * s.count); // y [T, count], scattered into [T, rows] at column `first`
      k.upload(x, bus.f32(0, T * s.cols));
      k.matmul(y, x, s.m!, T);
      const mine = k.f32(y), all = bus.f32(out, T * rows);
      for (let t = 0; t < T; t++) all.set(mine.subarray(t * s.count, (t + 1) * s.count), t * rows + s.first);
      return;
    }
    case EMBED: {
      const s = slice(a[1]!), T = a[2]!, out = a[3]!;
      const ids = bus.i32(0, T), mine: number[] = [];
      for (let t = 0; t < T; t++) if (ids[t]! >= s.first && ids[t]! < s.first + s.count) mine.push(t);
      if (mine.length === 0) return;
      const { y } = buffers(k, 0, mine.length * s.cols);
      k.embed(y, Int32Array.from(mine, (t) => ids[t]! - s.first), s.m!);
      const rows = k.f32(y), all = bus.f32(out, T * s.cols);
      mine.forEach((t, i) => all.set(rows.subarray(i * s.cols, (i + 1) * s.cols), t * s.cols));
      return;
    }
    case RESERVE:
      return k.reserve(a[1]!, a[2]!);
    default:
      throw new DuoError("INVALID_ARGUMENT", `unknown model-worker command ${a[0]}`);
  }
}

function serve(k: WasmKernels, bus: Bus, index: number): void {
  for (let seen = 0; ;) {
    const seq = bus.next(seen);
    if (seq === CLOSED) return;
    seen = seq;
    try {
      handle(k, bus, index);
      bus.finish(index, seq);
    } catch (e) {
      bus.finish(index, seq, e);
    }
  }
}

channel.onMessage((m) => {
  const init = m as WorkerInit;
  createWasmKernels(init.module).then(
    (k) => {
      channel.post({ ok: true } satisfies WorkerReply);
      serve(k, new Bus(init.bus, init.workers), init.index);
    },
    (e: Error) => channel.post({ ok: false, message: e.message } satisfies WorkerReply),
  );
});
