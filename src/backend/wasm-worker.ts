/**
 * A wasm backend worker: one duo.wasm instance holding the buffers of one shard. Requests arrive as messages
 * (wasm-exec.ts ToWorker) or on the shared lane (wasm-lane.ts); both carry a sequence number and are handled strictly
 * in that order, so an alloc posted before a run has happened when the run starts. A failed allocation has no reply
 * of its own: it is reported by the next reply (run, read or measure) as an error.
 * Bundled builds load this file as dist/wasm-worker.js.
 */
import { DuoError } from "../errors.ts";
import { parentChannel } from "../runtime.ts";
import { WasmExec, type FromWorker, type ToWorker } from "./wasm-exec.ts";
import { CLOSED, DONE, Lane, REQ, STATUS, waitChange } from "./wasm-lane.ts";

const channel = await parentChannel();
let exec: WasmExec | null = null;
let lane: Lane | null = null;
let deferred: DuoError | null = null;

/** Requests that arrived ahead of their turn, by sequence number; "lane": the request is in the lane. */
const arrived = new Map<number, ToWorker | "lane">();
let next = 1;
let draining = false;

function reply(id: number, value: unknown, transfer: ArrayBuffer[] = []): void {
  if (deferred) return fail(id, deferred);
  channel.post({ id, ok: true, value } satisfies FromWorker, transfer);
}

/** The error to report: a pending allocation failure goes first, as it is the likely cause. */
function takeError(error: unknown): { code: DuoError["code"]; message: string } {
  const e = deferred ?? error;
  deferred = null;
  return { code: e instanceof DuoError ? e.code : "BACKEND_UNAVAILABLE", message: e instanceof Error ? e.message : String(e) };
}

function fail(id: number, error: unknown): void {
  channel.post({ id, ok: false, ...takeError(error) } satisfies FromWorker);
}

/** The run request waiting in the lane: run it, write the reply, then wake the caller. */
function runLane(seq: number): void {
  const l = lane!;
  try {
    if (!exec) throw new DuoError("BACKEND_UNAVAILABLE", "wasm backend: the worker has no module");
    if (deferred) throw deferred;
    l.reply(exec.run(l.decode()));
    l.ctl[STATUS] = 0;
  } catch (e) {
    const { code, message } = takeError(e);
    l.fail(code, message);
    l.ctl[STATUS] = 1;
  }
  Atomics.store(l.ctl, DONE, seq);
  Atomics.notify(l.ctl, DONE);
}

/** After a lane request, block this thread (a futex, no spinning) up to HOLD_MS for the next one: a decode step's
 *  next layer comes within a fraction of that, and a blocked thread wakes much sooner than an idle event loop. */
const HOLD_MS = 1;

/** Wake for each request written into the lane (the caller writes the next only after this one is done). The
 *  backend also notifies REQ, without changing it, when it posts a message: the hold then ends at once and the
 *  event loop takes the message. */
async function watchLane(l: Lane): Promise<void> {
  let seen = 0;
  for (;;) {
    await waitChange(l.ctl, REQ, seen);
    for (;;) {
      const now = Atomics.load(l.ctl, REQ);
      if (now === CLOSED) return;
      if (now === seen) break; // a message was posted
      arrive((seen = now), "lane");
      if (arrived.size > 0 || draining) break; // this request waits for a message the event loop has yet to deliver
      if (Atomics.wait(l.ctl, REQ, seen, HOLD_MS) === "timed-out") break;
    }
  }
}

function arrive(seq: number, m: ToWorker | "lane"): void {
  arrived.set(seq, m);
  void drain();
}

async function drain(): Promise<void> {
  if (draining) return;
  draining = true;
  for (let m = arrived.get(next); m !== undefined; m = arrived.get(next)) {
    arrived.delete(next);
    const seq = next++;
    if (m === "lane") runLane(seq);
    else await handle(m);
  }
  draining = false;
}

async function handle(m: ToWorker): Promise<void> {
  if (m.type === "init") {
    try {
      exec = await WasmExec.create(m.module);
      if (m.lane) void watchLane((lane = new Lane(m.lane)));
      reply(m.id, null);
    } catch (e) {
      fail(m.id, e);
    }
    return;
  }
  if (!exec) return; // init failed: the backend was told and never sends more
  switch (m.type) {
    case "alloc":
      if (!exec.alloc(m.handle, m.bytes)) {
        deferred ??= new DuoError("CAPACITY", `wasm backend: the worker could not allocate ${m.bytes} bytes (buffer ${m.handle}): its memory cannot grow further (4 GiB limit or fragmentation)`);
      }
      return;
    case "free":
      return exec.free(m.handle);
    case "run":
      try {
        const results = exec.run(m.ops);
        const transfer: ArrayBuffer[] = [];
        for (const r of results) if (r) transfer.push(r.out.buffer as ArrayBuffer, ...(r.lse ? [r.lse.buffer as ArrayBuffer] : []));
        reply(m.id, results, transfer);
      } catch (e) {
        fail(m.id, e);
      }
      return;
    case "read":
      try {
        const bytes = exec.read(m.handle, m.offset, m.length);
        reply(m.id, bytes, [bytes.buffer as ArrayBuffer]);
      } catch (e) {
        fail(m.id, e);
      }
      return;
    case "measure":
      try {
        reply(m.id, exec.measure(m.kind, m.amount, m.reps));
      } catch (e) {
        fail(m.id, e);
      }
  }
}

channel.onMessage((m) => arrive((m as ToWorker).seq, m as ToWorker));
