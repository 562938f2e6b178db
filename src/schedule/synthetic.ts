/**
 * A synthetic head schedule with the unevenness of the published ones (SPEC.md §1.6, ANCHORS §1.8): retrieval heads
 * are scarce in the first layers and common later, and no two layers need agree. Used by the demo and benchmarks
 * when no pattern file is at hand, so that work per layer is as unbalanced as with a real model.
 */
import { checkInt, DuoError } from "../errors.ts";
import { HeadSchedule } from "./schedule.ts";

/** Exactly round(fraction · numLayers · numKvHeads) retrieval heads, deterministic for a seed. */
export function syntheticSchedule(numLayers: number, numKvHeads: number, fraction: number, seed = 1): HeadSchedule {
  checkInt("numLayers", numLayers, 1);
  checkInt("numKvHeads", numKvHeads, 1);
  if (!(fraction >= 0 && fraction <= 1)) throw new DuoError("INVALID_ARGUMENT", `retrieval fraction must be in [0, 1], got ${fraction}`);
  let s = seed >>> 0 || 1;
  const rand = () => ((s = Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9 >>> 0), (s >>> 8) / 16777216);
  // Layer weights: a ramp over the first fifth of the model, plus noise.
  const ramp = Math.max(1, Math.round(numLayers / 5));
  const weight = Array.from({ length: numLayers }, (_, l) => (0.25 + 0.75 * Math.min(1, l / ramp)) * (0.6 + 0.8 * rand()));
  const total = Math.round(fraction * numLayers * numKvHeads);
  // Largest-remainder apportionment of `total` heads to layers, each capped at numKvHeads.
  const counts = new Array<number>(numLayers).fill(0);
  let left = total;
  while (left > 0) {
    const open = counts.map((c, l) => (c < numKvHeads ? l : -1)).filter((l) => l >= 0);
    const sum = open.reduce((a, l) => a + weight[l]!, 0);
    let given = 0;
    for (const l of open) {
      const add = Math.min(numKvHeads - counts[l]!, Math.floor((left * weight[l]!) / sum));
      counts[l]! += add;
      given += add;
    }
    if (given === 0) {
      const l = open.reduce((b, l) => (weight[l]! > weight[b]! ? l : b), open[0]!);
      counts[l]!++;
      given = 1;
    }
    left -= given;
  }
  // Which heads: a seeded shuffle per layer.
  const mask = counts.map((c) => {
    const heads = Array.from({ length: numKvHeads }, (_, h) => h);
    for (let i = heads.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [heads[i], heads[j]] = [heads[j]!, heads[i]!];
    }
    const chosen = new Set(heads.slice(0, c));
    return Array.from({ length: numKvHeads }, (_, h) => chosen.has(h));
  });
  return HeadSchedule.fromMask(mask);
}
