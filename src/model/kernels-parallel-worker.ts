/**
 * A worker of the tensor-parallel model kernels (kernels-parallel.ts): one duo-model.wasm instance (WasmKernels,
 * kernels-wasm.ts) holding this worker's rows of every matrix. One message starts it (the compiled module, the bus,
 * its index); from then on it serves the bus only (kernels-parallel-bus.ts), blocked in Atomics.wait between
 * commands, until the caller closes the bus. Bundled builds load this file as dist/model-worker.js.
 */
import { DuoError } from "../errors.ts";
import { parentChannel } from "../runtime.ts";
import { Bus, CLOSED, DTYPES, EMBED, MATMUL, MATRIX, RESERVE, WRITE } from "./kernels-parallel-bus.ts";
import { type Matrix, WEIGHT_BYTES } from "./kernels.ts";
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
  eb: number;
}

const channel = await parentChannel();
const slices = new Map<number, Slice>();

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
      slices.set(a[1]!, { m: count > 0 ? k.matrix(count, cols, dtype) : null, first, count, cols, eb: WEIGHT_BYTES[dtype] });
      return;
    }
    case WRITE: {
      // the part of elements [e0, e0 + n) that falls in this worker's rows
      const s = slice(a[1]!), e0 = a[2]!, n = a[3]! / s.eb;
      const own0 = s.first * s.cols, lo = Math.max(e0, own0), hi = Math.min(e0 + n, own0 + s.count * s.cols);
      if (lo < hi) k.write(s.m!, lo - own0, bus.u8((lo - e0) * s.eb, (hi - lo) * s.eb));
      return;
    }
    case MATMUL: {
      const s = slice(a[1]!), T = a[2]!, out = a[3]!, rows = a[4]!;
      if (s.count === 0) return;
      const x = bus.f32(0, T * s.cols);
      if (T === 1) return k.matmul(bus.f32(out + 4 * s.first, s.count), x, s.m!, 1);
      const y = new Float32Array(T * s.count); // [T, count], scattered into y [T, rows] at column `first`
      k.matmul(y, x, s.m!, T);
      const all = bus.f32(out, T * rows);
      for (let t = 0; t < T; t++) all.set(y.subarray(t * s.count, (t + 1) * s.count), t * rows + s.first);
      return;
    }
    case EMBED: {
      const s = slice(a[1]!), T = a[2]!, out = a[3]!;
      const ids = bus.i32(0, T), mine: number[] = [];
      for (let t = 0; t < T; t++) if (ids[t]! >= s.first && ids[t]! < s.first + s.count) mine.push(t);
      if (mine.length === 0) return;
      const y = new Float32Array(mine.length * s.cols);
      k.embed(y, Int32Array.from(mine, (t) => ids[t]! - s.first), s.m!);
      const all = bus.f32(out, T * s.cols);
      mine.forEach((t, i) => all.set(y.subarray(i * s.cols, (i + 1) * s.cols), t * s.cols));
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
