/**
 * The shared state of one `duo bench` run: the backend every engine shares (so the wasm workers are created and
 * warmed once), the runtime's ceilings, where records go, and the warm-up itself.
 */
import type { Backend } from "../../backend/types.ts";
import type { PrefillMode } from "../../cache/layer-shard.ts";
import { SyntheticInputs } from "../../demo/stack.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { HeadSchedule } from "../../schedule/schedule.ts";
import type { ShapeCase } from "./cases.ts";
import type { BenchRecord } from "./record.ts";
import type { Ceilings } from "./roofline.ts";

export interface Harness {
  backend: Backend;
  /** the fields every record starts with */
  base: { backend: string; runtime: string; threads: number };
  ceilings: Ceilings | null;
  /** wall-time budget per timed measurement, ms */
  budgetMs: number;
  records: BenchRecord[];
  emit(r: BenchRecord): void;
  /** progress and notes (stderr) */
  note(text: string): void;
}

/** Decode steps, and short prefill calls per mode, that the warm-up runs: V8 tiers wasm up after ~200 short calls. */
const WARM_DECODE = 250, WARM_PREFILL = 60;

/**
 * Run every kernel this case will use many times on tiny inputs: appends, decode over retrieval and streaming
 * heads (past the ring's wrap-around), and prefill chunks in both modes. Uses the case's first layer only.
 */
export async function warmUp(backend: Backend, c: ShapeCase, dtype: KvDtype, modes: readonly PrefillMode[]): Promise<void> {
  const { shape } = c;
  const window = c.sinkSize + c.recentSize;
  const inputs = new SyntheticInputs(shape, 32);
  const heads = [HeadSchedule.full(shape.numLayers, shape.numKvHeads), c.schedule];
  for (const [i, mode] of modes.entries()) {
    for (const schedule of i === 0 ? heads : [c.schedule]) {
      const duo = await DuoAttention.create({ shape, heads: schedule, sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype, backend, prefill: mode, maxContext: window + 64 + WARM_DECODE + 32 * WARM_PREFILL });
      try {
        const seq = duo.sequence();
        const [q, k, v] = inputs.chunkOf(32);
        for (let n = 0; n < WARM_PREFILL; n++) {
          if (n % 16 === 0) seq.reset();
          await seq.attend(0, q, k, v);
        }
        if (i === 0) {
          seq.reset();
          while (seq.length(0) < window + 64) await seq.fill(0, k, v);
          for (let n = 0; n < WARM_DECODE; n++) await seq.attend(0, inputs.q1, inputs.k1, inputs.v1);
        }
        seq.dispose();
      } finally {
        await duo.dispose();
      }
    }
  }
}
