/**
 * The demo's correctness line: on one layer with both kinds of heads, the fast backend's DuoAttention output is
 * compared with the float64 reference backend — retrieval heads against full attention, streaming heads against
 * DuoAttention's masked attention — after enough tokens that the streaming ring has evicted (S + R + 20), for a
 * prefill chunk and two decode steps.
 */
import { createBackend } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";
import type { KvDtype } from "../dtype.ts";
import { DuoAttention } from "../engine/duo.ts";
import type { PrefillMode } from "../cache/layer-shard.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import type { ModelShape } from "../shape.ts";
import { randomData } from "./stack.ts";

export interface CheckResult {
  layer: number;
  retrievalMaxErr: number;
  streamingMaxErr: number;
  tokens: number;
}

export async function checkAgainstReference(
  backend: Backend, shape: ModelShape, schedule: HeadSchedule,
  o: { sinkSize: number; recentSize: number; kvDtype: KvDtype; prefill: PrefillMode },
): Promise<CheckResult> {
  // The first layer with both retrieval and streaming heads (or layer 0).
  const counts = schedule.counts();
  const layer = Math.max(0, counts.findIndex((c) => c > 0 && c < shape.numKvHeads));
  const mask = [schedule.mask[layer]!.slice()];
  const one = { ...shape, numLayers: 1 };
  const common = { shape: one, sinkSize: o.sinkSize, recentSize: o.recentSize, kvDtype: o.kvDtype, prefill: o.prefill };
  const reference = await createBackend("reference");
  const fast = await DuoAttention.create({ ...common, heads: mask, backend });
  const refDuo = await DuoAttention.create({ ...common, heads: mask, backend: reference });
  const refFull = await DuoAttention.create({ ...common, heads: HeadSchedule.full(1, shape.numKvHeads), backend: reference });
  const seqs = [fast.sequence(), refDuo.sequence(), refFull.sequence()] as const;
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
  const G = Hq / Hkv;
  const filled = o.sinkSize + o.recentSize + 20;
  const k0 = randomData(filled * Hkv * D, 11), v0 = randomData(filled * Hkv * D, 12);
  for (const s of seqs) await s.fill(0, k0, v0);
  let retrievalMaxErr = 0, streamingMaxErr = 0;
  for (const [T, seed] of [[16, 20], [1, 30], [1, 40]] as const) {
    const q = randomData(T * Hq * D, seed), k = randomData(T * Hkv * D, seed + 1), v = randomData(T * Hkv * D, seed + 2);
    const [a, b, c] = await Promise.all(seqs.map((s) => s.attend(0, q, k, v)));
    for (let t = 0; t < T; t++) {
      for (let qh = 0; qh < Hq; qh++) {
        const isRetrieval = mask[0]![Math.floor(qh / G)]!;
        const want = isRetrieval ? c! : b!;
        for (let d = 0; d < D; d++) {
          const i = (t * Hq + qh) * D + d;
          const e = Math.abs(a![i]! - want[i]!);
          if (isRetrieval) retrievalMaxErr = Math.max(retrievalMaxErr, e);
          else streamingMaxErr = Math.max(streamingMaxErr, e);
        }
      }
    }
  }
  for (const s of seqs) s.dispose();
  await Promise.all([refDuo.dispose(), refFull.dispose(), reference.dispose()]);
  // `fast` shares the caller's backend: dispose its sequences only.
  await fast.dispose();
  return { layer, retrievalMaxErr, streamingMaxErr, tokens: filled + 18 };
}
