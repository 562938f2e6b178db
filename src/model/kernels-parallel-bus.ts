/**
 * The bus of the tensor-parallel model kernels: one SharedArrayBuffer between the calling thread
 * (kernels-parallel.ts) and its workers (kernels-parallel-worker.ts). The caller writes one command (its arguments
 * and its input), bumps REQ and wakes every worker; each worker does its share, writes its part of the output into
 * the output area (the workers' parts are disjoint) and publishes REQ's value in its own DONE word. The caller blocks
 * in Atomics.wait until every DONE has caught up. No message is cloned per op; messages carry only the worker's start.
 *
 * Layout, in this order (headerBytes() is the size of all but the data area):
 *   ctl     Int32Array: REQ, then per worker w: DONE at 16·(w+1), STATUS at 16·(w+1) + 1 (0 ok, 1 failed)
 *           (one 64-byte line each, so that workers do not write into each other's cache line)
 *   args    Float64Array[ARG_WORDS]: the command code and its numbers (integers exact up to 2^53)
 *   slices  Int32Array[2·workers]: the rows of each worker, for a MATRIX command
 *   errors  per worker ERROR_BYTES: a failure as [code length, message length] (Int32) then UTF-16 units
 *   data    the command's input (x [T, cols] f32, ids [T] i32, or weight bytes) at offset 0, and its output
 *           (y [T, rows] f32) at outOffset (64-byte aligned, given in the args); dataBytes in all
 * Plain reads and writes of args, data and errors are ordered by the Atomics.store / Atomics.load of REQ and DONE.
 */
import { DuoError, type DuoErrorCode } from "../errors.ts";
import { WEIGHT_BYTES, type WeightDtype } from "./kernels.ts";

/** Weight dtypes by the index a MATRIX command carries. */
export const DTYPES = Object.keys(WEIGHT_BYTES) as WeightDtype[];

/** REQ's value that ends the workers' loops (dispose). */
export const CLOSED = -1;
const REQ = 0;
const LINE_WORDS = 16;
const ARG_WORDS = 8;
const ERROR_BYTES = 2048;

/** Command codes (args[0]) and their arguments (args[1..]):
 *  MATRIX  id, cols, dtype index (DTYPES); each worker's rows are in the slice table
 *  WRITE   id, first element, byte count; the bytes at data
 *  MATMUL  id, T, outOffset, rows; x [T, cols] at data, y [T, rows] written at data + outOffset
 *  EMBED   id, T, outOffset; ids [T] at data, y [T, cols] written at data + outOffset
 *  RESERVE weight bytes, scratch bytes: grow each worker's memory for its share up front */
export const MATRIX = 1, WRITE = 2, MATMUL = 3, EMBED = 4, RESERVE = 5;

export class Bus {
  readonly ctl: Int32Array;
  readonly args: Float64Array;
  /** the slice table of a MATRIX command: worker w holds rows [slices[2w], slices[2w] + slices[2w+1]) */
  readonly slices: Int32Array;
  /** byte offset of the data area, and its size */
  readonly data: number;
  readonly dataBytes: number;

  constructor(readonly memory: SharedArrayBuffer, readonly workers: number) {
    const ctlBytes = LINE_WORDS * 4 * (workers + 1);
    this.ctl = new Int32Array(memory, 0, ctlBytes / 4);
    this.args = new Float64Array(memory, ctlBytes, ARG_WORDS);
    this.slices = new Int32Array(memory, ctlBytes + ARG_WORDS * 8, 2 * workers);
    this.data = headerBytes(workers);
    this.dataBytes = memory.byteLength - this.data;
  }

  /** A bus for `workers` workers with `dataBytes` of data area. */
  static create(workers: number, dataBytes: number): Bus {
    return new Bus(new SharedArrayBuffer(headerBytes(workers) + dataBytes), workers);
  }

  f32(byteOffset: number, length: number): Float32Array {
    return new Float32Array(this.memory, this.data + byteOffset, length);
  }
  i32(byteOffset: number, length: number): Int32Array {
    return new Int32Array(this.memory, this.data + byteOffset, length);
  }
  u8(byteOffset: number, length: number): Uint8Array {
    return new Uint8Array(this.memory, this.data + byteOffset, length);
  }

  // ---- caller side

  /** Send the command in `args` (and the input in the data area) to every worker and block until all are done;
   *  throws the first worker's failure. */
  run(): void {
    const seq = Atomics.load(this.ctl, REQ) + 1;
    Atomics.store(this.ctl, REQ, seq);
    Atomics.notify(this.ctl, REQ);
    let failed = -1;
    for (let w = 0; w < this.workers; w++) {
      const at = LINE_WORDS * (w + 1);
      for (let done = Atomics.load(this.ctl, at); done !== seq; done = Atomics.load(this.ctl, at)) Atomics.wait(this.ctl, at, done);
      if (failed < 0 && this.ctl[at + 1] !== 0) failed = w;
    }
    if (failed >= 0) throw this.error(failed);
  }

  /** Let the workers' loops end (they are then terminated). */
  close(): void {
    Atomics.store(this.ctl, REQ, CLOSED);
    Atomics.notify(this.ctl, REQ);
  }

  // ---- worker side

  /** Block until the caller sends a command after `seen`; returns its sequence number, or CLOSED. */
  next(seen: number): number {
    for (;;) {
      Atomics.wait(this.ctl, REQ, seen);
      const now = Atomics.load(this.ctl, REQ);
      if (now !== seen) return now;
    }
  }

  /** Publish worker w's completion of command `seq`, with a failure when `error` is given. */
  finish(w: number, seq: number, error?: unknown): void {
    const at = LINE_WORDS * (w + 1);
    this.ctl[at + 1] = error === undefined ? 0 : 1;
    if (error !== undefined) this.writeError(w, error);
    Atomics.store(this.ctl, at, seq);
    Atomics.notify(this.ctl, at);
  }

  private errorArea(w: number): { head: Int32Array; units: Uint16Array } {
    const at = this.data - ERROR_BYTES * (this.workers - w);
    return { head: new Int32Array(this.memory, at, 2), units: new Uint16Array(this.memory, at + 8, (ERROR_BYTES - 8) / 2) };
  }

  private writeError(w: number, error: unknown): void {
    const code: DuoErrorCode = error instanceof DuoError ? error.code : "BACKEND_UNAVAILABLE";
    const message = error instanceof Error ? error.message : String(error);
    const { head, units } = this.errorArea(w);
    const text = (code + message).slice(0, units.length);
    head[0] = code.length;
    head[1] = text.length - code.length;
    for (let i = 0; i < text.length; i++) units[i] = text.charCodeAt(i);
  }

  private error(w: number): DuoError {
    const { head, units } = this.errorArea(w);
    let text = "";
    for (let i = 0; i < head[0]! + head[1]!; i++) text += String.fromCharCode(units[i]!);
    return new DuoError(text.slice(0, head[0]) as DuoErrorCode, `model worker ${w}: ${text.slice(head[0])}`);
  }
}

export const align64 = (n: number) => Math.ceil(n / 64) * 64;

/** Bytes before the data area: ctl lines, args, slice table, error areas. */
const headerBytes = (workers: number) => align64(LINE_WORDS * 4 * (workers + 1) + ARG_WORDS * 8 + 8 * workers + ERROR_BYTES * workers);
