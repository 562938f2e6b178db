/**
 * What `duo bench` measures: model shapes with their head schedules. By default the two shapes of the paper's
 * efficiency study — Llama-3-8B (GQA) with the published Llama-3-8B-Instruct-Gradient-1048k pattern at sparsity
 * 0.5, and Llama-2-7B (MHA) with Llama-2-7B-32K-Instruct at 0.75 — read from $DUO_PATTERNS_DIR or
 * ../shared/patterns; where those files are absent, a synthetic schedule with the same retrieval fraction and the
 * same kind of per-layer unevenness (and the output says so).
 */
import { DuoError } from "../../errors.ts";
import { loadPattern } from "../../pattern/io.ts";
import { checkPatternShape } from "../../pattern/pattern.ts";
import { sparsify } from "../../pattern/sparsify.ts";
import { env, exists } from "../../runtime.ts";
import { getPreset, type ModelPreset, PATTERN_PRESETS, presetForPattern } from "../../schedule/presets.ts";
import type { HeadSchedule } from "../../schedule/schedule.ts";
import { syntheticSchedule } from "../../schedule/synthetic.ts";

export interface ShapeCase {
  shape: ModelPreset;
  sparsity: number;
  schedule: HeadSchedule;
  /** where the schedule came from, for the output */
  source: string;
  /** the pattern directory, when one was read */
  patternDir: string | null;
  sinkSize: number;
  recentSize: number;
}

/** The paper's sparsity per default shape (50% retrieval for GQA Llama-3, 25% for MHA Llama-2). */
export const DEFAULT_SPARSITY: Readonly<Record<string, number>> = { "llama-3-8b": 0.5, "llama-2-7b": 0.75 };
export const DEFAULT_SHAPES = ["llama-3-8b", "llama-2-7b"] as const;
/** Upstream's efficiency runs use the patterns' config.json values, S = 128 and R = 256 (SPEC §6.1). */
export const DEFAULT_SINK = 128, DEFAULT_RECENT = 256;

/** The published pattern directory for a preset: $DUO_PATTERNS_DIR/<name>, then ../shared/patterns/<name>. */
export async function defaultPatternDir(preset: string): Promise<string | null> {
  const name = Object.entries(PATTERN_PRESETS).find(([, p]) => p === preset)?.[0];
  if (!name) return null;
  for (const base of [env("DUO_PATTERNS_DIR"), "../shared/patterns"]) {
    // the model's folder: the files themselves, or upstream's setting folder inside (loadPattern takes either)
    if (base && await exists(`${base}/${name}`)) return `${base}/${name}`;
  }
  return null;
}

export interface CaseRequest {
  /** preset name; default: the pattern's preset, else both default shapes */
  shape?: string;
  pattern?: string;
  sparsity?: number;
}

/** Resolve the shapes and schedules to measure. */
export async function resolveCases(r: CaseRequest): Promise<ShapeCase[]> {
  let names: string[];
  if (r.shape !== undefined) names = [getPreset(r.shape).name];
  else if (r.pattern !== undefined) {
    const p = presetForPattern(r.pattern);
    if (!p) throw new DuoError("INVALID_ARGUMENT", `cannot tell the model shape of pattern ${r.pattern}; add --shape (one of ${Object.values(PATTERN_PRESETS).join(", ")})`);
    names = [p.name];
  } else names = [...DEFAULT_SHAPES];
  return Promise.all(names.map((n) => resolveCase(n, r.pattern, r.sparsity)));
}

export async function resolveCase(name: string, patternArg: string | undefined, sparsityArg: number | undefined): Promise<ShapeCase> {
  const shape = getPreset(name);
  const sparsity = sparsityArg ?? DEFAULT_SPARSITY[name] ?? 0.5;
  const dir = patternArg ?? await defaultPatternDir(name);
  if (dir) {
    const pattern = await loadPattern(dir);
    checkPatternShape(pattern, shape);
    return {
      shape, sparsity, patternDir: dir, sinkSize: pattern.sinkSize, recentSize: pattern.recentSize,
      schedule: sparsify(pattern, { sparsity }),
      source: `published pattern ${dir.replace(/\/+$/, "").split(/[/\\]/).pop()} at sparsity ${sparsity} (upstream's numpy seed-42 tie-break)`,
    };
  }
  return {
    shape, sparsity, patternDir: null, sinkSize: DEFAULT_SINK, recentSize: DEFAULT_RECENT,
    schedule: syntheticSchedule(shape.numLayers, shape.numKvHeads, 1 - sparsity, 42),
    source: `synthetic schedule (published pattern not found: set DUO_PATTERNS_DIR or --pattern): ${fmtPct(1 - sparsity)} retrieval, uneven per layer like the published ones`,
  };
}

/** The same case at another sparsity (the retrieval-ratio sweep). */
export async function atSparsity(c: ShapeCase, sparsity: number): Promise<ShapeCase> {
  return resolveCase(c.shape.name, c.patternDir ?? undefined, sparsity);
}

/** `n` layers spread evenly over the model (all when n ≥ numLayers). */
export function spreadLayers(numLayers: number, n: number): number[] {
  if (n >= numLayers) return Array.from({ length: numLayers }, (_, l) => l);
  return Array.from({ length: n }, (_, i) => Math.floor((i * numLayers) / n + numLayers / (2 * n)));
}

/** The layer whose retrieval-head count is nearest the model's mean (ties: nearest the middle), for prefill. */
export function typicalLayer(schedule: HeadSchedule): number {
  const counts = schedule.counts(), mean = schedule.retrievalHeads / schedule.numLayers, mid = (schedule.numLayers - 1) / 2;
  let best = 0;
  counts.forEach((c, l) => {
    const d = Math.abs(c - mean) - Math.abs(counts[best]! - mean);
    if (d < -1e-9 || (Math.abs(d) <= 1e-9 && Math.abs(l - mid) < Math.abs(best - mid))) best = l;
  });
  return best;
}

export function fmtPct(x: number): string {
  return `${Number((x * 100).toFixed(1))}%`;
}
