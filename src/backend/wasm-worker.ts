/**
 * A wasm backend worker: one duo.wasm instance holding the buffers of one shard. Messages (wasm-exec.ts ToWorker) are
 * handled strictly in arrival order, so an alloc posted before a run has happened when the run starts. A failed
 * allocation has no reply of its own: it is reported by the next reply (run, read or measure) as an error.
 * Bundled builds load this file as dist/wasm-worker.js.
 */
import { DuoError } from "../errors.ts";
import { parentChannel } from "../runtime.ts";
import { WasmExec, type FromWorker, type ToWorker } from "./wasm-exec.ts";

const channel = await parentChannel();
let exec: WasmExec | null = null;
let deferred: DuoError | null = null;
let queue: Promise<void> = Promise.resolve();

function reply(id: number, value: unknown, transfer: Transferable[] = []): void {
  if (deferred) return fail(id, deferred);
  channel.post({ id, ok: true, value } satisfies FromWorker, transfer);
}

/** Report an error; a pending allocation failure goes first, as it is the likely cause. */
function fail(id: number, error: unknown): void {
  const e = deferred ?? error;
  deferred = null;
  const code = e instanceof DuoError ? e.code : "BACKEND_UNAVAILABLE";
  channel.post({ id, ok: false, code, message: e instanceof Error ? e.message : String(e) } satisfies FromWorker);
}

async function handle(m: ToWorker): Promise<void> {
  if (m.type === "init") {
    try {
      exec = await WasmExec.create(m.module);
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
        const transfer: Transferable[] = [];
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

channel.onMessage((m) => {
  queue = queue.then(() => handle(m as ToWorker));
});
