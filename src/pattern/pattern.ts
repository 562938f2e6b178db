/**
 * Head patterns: the trained gate per [layer][KV head] plus the sink/recent sizes, in upstream's format
 * (SPEC.md §1.1–1.2): `full_attention_heads.tsv` (rows = layers, tab-separated columns = KV heads, `%.18e`) and
 * `config.json` (only `sink_size` and `recent_size` are read). Gates are clipped to [0, 1] as upstream's
 * `load_attn_pattern` does; `clipped` says how many were outside.
 */
import { DuoError } from "../errors.ts";
import type { ModelShape } from "../shape.ts";

export interface HeadPattern {
  readonly numLayers: number;
  readonly numKvHeads: number;
  /** [numLayers * numKvHeads], gate of (layer l, KV head h) at l * numKvHeads + h, clipped to [0, 1] */
  readonly gates: Float64Array;
  /** attention-sink tokens S a streaming head keeps */
  readonly sinkSize: number;
  /** recent tokens R a streaming head keeps */
  readonly recentSize: number;
  /** how many raw gates were outside [0, 1] and clipped */
  readonly clipped: number;
  /** where it was loaded from (directory, URL), for messages */
  readonly source?: string;
}

export interface PatternConfig {
  sinkSize: number;
  recentSize: number;
}

const VALID_TSV = "one row per layer, one tab-separated number per KV head (np.savetxt format)";
// A plain decimal or scientific number; rejects what Number() would also accept ("", "0x10", "Infinity").
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Build a pattern from raw gate rows [layer][kvHead], clipping to [0, 1]. Throws PATTERN_FORMAT on an empty or
 * ragged table, a non-finite gate, or sizes that are not integers >= 0.
 */
export function makePattern(rows: readonly (readonly number[])[], config: PatternConfig, source?: string): HeadPattern {
  return build(rows, config, source, (l, h) => `gate [${l}][${h}]`);
}

/** makePattern, with `where(l, h)` naming a cell in messages (a file line and column for parsePattern). */
function build(
  rows: readonly (readonly number[])[],
  config: PatternConfig,
  source: string | undefined,
  where: (l: number, h: number) => string,
): HeadPattern {
  const from = source ? ` in ${source}` : "";
  if (!Array.isArray(rows) || rows.length === 0 || !Array.isArray(rows[0]) || rows[0].length === 0) {
    throw new DuoError("PATTERN_FORMAT", `the head pattern${from} is empty; expected ${VALID_TSV}`);
  }
  const numLayers = rows.length, numKvHeads = rows[0].length;
  const gates = new Float64Array(numLayers * numKvHeads);
  let clipped = 0;
  rows.forEach((row, l) => {
    if (!Array.isArray(row) || row.length !== numKvHeads) {
      throw new DuoError(
        "PATTERN_FORMAT",
        `layer ${l} of the head pattern${from} has ${Array.isArray(row) ? row.length : 0} gates but layer 0 has ${numKvHeads}; every layer needs one gate per KV head`,
      );
    }
    row.forEach((v, h) => {
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new DuoError("PATTERN_FORMAT", `${where(l, h)}${from} is ${String(v)}; gates must be finite numbers (trained values lie in [0, 1])`);
      }
      const c = Math.min(1, Math.max(0, v));
      if (c !== v) clipped++;
      gates[l * numKvHeads + h] = c;
    });
  });
  const { sinkSize, recentSize } = checkConfig(config, from);
  return Object.freeze({ numLayers, numKvHeads, gates, sinkSize, recentSize, clipped, ...(source ? { source } : {}) });
}

function checkConfig(config: PatternConfig, from: string): PatternConfig {
  for (const key of ["sinkSize", "recentSize"] as const) {
    const v = config?.[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new DuoError("PATTERN_FORMAT", `${key}${from} must be an integer >= 0 (tokens), got ${JSON.stringify(v)}`);
    }
  }
  return config;
}

/**
 * Read upstream's config.json (text or parsed object): `sink_size` and `recent_size`, integers >= 0. Every other key
 * is training provenance and ignored, as upstream does.
 */
export function parsePatternConfig(config: string | Record<string, unknown>, source?: string): PatternConfig {
  const from = source ? ` in ${source}` : "";
  let obj: unknown = config;
  if (typeof config === "string") {
    try {
      obj = JSON.parse(config);
    } catch (e) {
      throw new DuoError("PATTERN_FORMAT", `config.json${from} is not valid JSON (${(e as Error).message}); expected an object with sink_size and recent_size`);
    }
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new DuoError("PATTERN_FORMAT", `config.json${from} must be a JSON object with sink_size and recent_size`);
  }
  const o = obj as Record<string, unknown>;
  for (const key of ["sink_size", "recent_size"]) {
    const v = o[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      const got = key in o ? `got ${JSON.stringify(v)}` : "it is missing";
      throw new DuoError("PATTERN_FORMAT", `config.json${from}: "${key}" must be an integer >= 0 (tokens); ${got}`);
    }
  }
  return { sinkSize: o["sink_size"] as number, recentSize: o["recent_size"] as number };
}

/**
 * Parse `full_attention_heads.tsv` text and config.json (text or object), as `np.loadtxt(..., delimiter="\t")`
 * then `np.clip(x, 0, 1)`: blank lines and `#` comments are skipped, CRLF is accepted; every value must be a finite
 * decimal number and every row must have the same number of columns.
 */
export function parsePattern(tsv: string, config: string | Record<string, unknown>, source?: string): HeadPattern {
  if (typeof tsv !== "string") throw new DuoError("PATTERN_FORMAT", `full_attention_heads.tsv must be text; expected ${VALID_TSV}`);
  const from = source ? ` in ${source}` : "";
  const rows: number[][] = [];
  const lineOf: number[] = [];
  tsv.split("\n").forEach((raw, i) => {
    const line = raw.split("#")[0]!.replace(/\r$/, "");
    if (line.trim() === "") return;
    rows.push(line.split("\t").map((field, col) => {
      const f = field.trim();
      if (!NUMBER.test(f)) {
        const what = /^[+-]?(nan|inf(inity)?)$/i.test(f) ? `${JSON.stringify(f)} (NaN and infinities are not gates)` : JSON.stringify(f);
        throw new DuoError("PATTERN_FORMAT", `full_attention_heads.tsv${from} line ${i + 1} column ${col + 1} is ${what}; expected ${VALID_TSV}`);
      }
      return Number(f);
    }));
    lineOf.push(i + 1);
  });
  if (rows.length === 0) {
    throw new DuoError("PATTERN_FORMAT", `full_attention_heads.tsv${from} is empty; expected ${VALID_TSV}`);
  }
  const ragged = rows.findIndex((r) => r.length !== rows[0]!.length);
  if (ragged >= 0) {
    throw new DuoError(
      "PATTERN_FORMAT",
      `full_attention_heads.tsv${from} line ${lineOf[ragged]} (layer ${ragged}) has ${rows[ragged]!.length} columns but the first row has ${rows[0]!.length}; expected ${VALID_TSV}`,
    );
  }
  return build(rows, parsePatternConfig(config, source), source, (l, h) => `full_attention_heads.tsv line ${lineOf[l]} column ${h + 1}`);
}

/** Throws PATTERN_FORMAT unless `p` is a well-formed pattern (dims, gate count, every gate finite in [0, 1]). */
export function checkPattern(p: HeadPattern): void {
  const ok = p !== null && typeof p === "object" && Number.isInteger(p.numLayers) && p.numLayers > 0 &&
    Number.isInteger(p.numKvHeads) && p.numKvHeads > 0 && p.gates instanceof Float64Array &&
    p.gates.length === p.numLayers * p.numKvHeads;
  if (!ok) {
    throw new DuoError("PATTERN_FORMAT", "a head pattern needs numLayers, numKvHeads > 0 and gates: Float64Array of numLayers * numKvHeads (use parsePattern, loadPattern or makePattern)");
  }
  const bad = p.gates.findIndex((g) => !(g >= 0 && g <= 1));
  if (bad >= 0) {
    throw new DuoError("PATTERN_FORMAT", `gate [${Math.floor(bad / p.numKvHeads)}][${bad % p.numKvHeads}] is ${p.gates[bad]}; gates must be clipped to [0, 1] (makePattern does that)`);
  }
  checkConfig(p, p.source ? ` in ${p.source}` : "");
}

/** Throws SHAPE_MISMATCH unless the pattern has one row per model layer and one column per KV head. */
export function checkPatternShape(p: HeadPattern, shape: ModelShape): void {
  checkPattern(p);
  if (p.numLayers === shape.numLayers && p.numKvHeads === shape.numKvHeads) return;
  const hint = p.numKvHeads === shape.numHeads && shape.numHeads !== shape.numKvHeads
    ? " (pattern columns are KV heads, not query heads)" : "";
  throw new DuoError(
    "SHAPE_MISMATCH",
    `head pattern${p.source ? ` ${p.source}` : ""} is ${p.numLayers} layers x ${p.numKvHeads} KV heads, but the model has ${shape.numLayers} layers x ${shape.numKvHeads} KV heads${hint}; use the pattern trained for this model`,
  );
}
