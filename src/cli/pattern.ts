/**
 * `duo pattern <dir|url>`: load a head pattern, choose its retrieval heads (sparsify), and show the schedule as a
 * table with KV-memory figures (SPEC.md §4.4), as SPEC.md §1.6's hex mask, or as JSON.
 */
import { checkOneOf, DuoError } from "../errors.ts";
import { loadPattern } from "../pattern/io.ts";
import { checkPatternShape, type HeadPattern } from "../pattern/pattern.ts";
import { sparsify, TIE_BREAKS } from "../pattern/sparsify.ts";
import { scheduleToHex } from "../schedule/hex.ts";
import { fullKvBytes, kvBytes } from "../schedule/kv.ts";
import { getPreset, type ModelPreset, PRESETS, presetForPattern } from "../schedule/presets.ts";
import type { HeadSchedule } from "../schedule/schedule.ts";
import { numberArg, parseArgs } from "./args.ts";
import { write } from "./io.ts";
import { COMPARE_USAGE, compareCommand } from "./pattern-compare.ts";

const FORMATS = ["table", "hex", "json"] as const;
const DEFAULT_CONTEXT = 131072;
const NATURAL_THRESHOLD = 0.5;
const BYTES_F16 = 2;

const USAGE = `usage: duo pattern <dir|url> [options]
  Load a head pattern directory (full_attention_heads.tsv + config.json, local or http(s)), choose the
  retrieval heads and print the schedule.
  --sparsity s       fraction of KV heads that stream, in [0, 1]; a global quantile, as upstream
  --threshold t      gates >= t are retrieval heads (default without --sparsity: ${NATURAL_THRESHOLD})
  --tie-break m      with --sparsity: ${TIE_BREAKS.join(" (default, bit-exact with upstream) | ")}
  --sink n           sink tokens S (default: config.json's sink_size)
  --recent n         recent tokens R (default: config.json's recent_size)
  --context T        context length for the KV-memory rows (default ${DEFAULT_CONTEXT})
  --model name       model preset, checked against the pattern's shape (default: from the directory name);
                     one of ${Object.keys(PRESETS).join(", ")}
  --head-dim D       head dimension when no preset applies (default 128)
  --format f         ${FORMATS.join(" | ")} (default table)

${COMPARE_USAGE}`;

export async function main(argv: string[]): Promise<number> {
  write(await patternCommand(argv));
  return 0;
}

/** What `duo pattern ...argv` prints; throws DuoError on bad input. */
export async function patternCommand(argv: string[]): Promise<string> {
  const args = parseArgs(argv, {
    values: ["sparsity", "threshold", "tie-break", "sink", "recent", "context", "model", "head-dim", "compare", "format"],
    flags: ["help"],
  });
  if (args.flags.has("help")) return USAGE;
  if (args.values.has("compare")) return await compareCommand(args.values.get("compare")!, args);
  if (args.positional.length !== 1) {
    throw new DuoError("INVALID_ARGUMENT", `${args.positional.length ? "give one" : "missing the"} pattern directory or URL; ${USAGE.split("\n")[0]}`);
  }
  const source = args.positional[0]!;
  const format = checkOneOf("--format", args.values.get("format") ?? "table", FORMATS);
  const sparsity = numberArg(args, "sparsity", { min: 0, max: 1 });
  const threshold = numberArg(args, "threshold");
  if (sparsity !== undefined && threshold !== undefined) throw new DuoError("INVALID_ARGUMENT", "give --sparsity or --threshold, not both");
  const tieBreakArg = args.values.get("tie-break");
  if (tieBreakArg !== undefined && sparsity === undefined) throw new DuoError("INVALID_ARGUMENT", "--tie-break applies only with --sparsity");
  const tieBreak = checkOneOf("--tie-break", tieBreakArg ?? "numpy-seed42", TIE_BREAKS);
  const sink = numberArg(args, "sink", { min: 0, integer: true });
  const recent = numberArg(args, "recent", { min: 0, integer: true });
  const context = numberArg(args, "context", { min: 0, integer: true }) ?? DEFAULT_CONTEXT;
  const headDimArg = numberArg(args, "head-dim", { min: 1, integer: true });
  const modelArg = args.values.get("model");
  const preset = modelArg !== undefined ? getPreset(modelArg) : presetForPattern(source);

  const pattern = await loadPattern(source);
  if (preset) checkPatternShape(pattern, preset);
  const schedule = sparsify(pattern, sparsity !== undefined ? { sparsity, tieBreak } : { threshold: threshold ?? NATURAL_THRESHOLD });
  const sinkSize = sink ?? pattern.sinkSize, recentSize = recent ?? pattern.recentSize;

  if (format === "hex") return scheduleToHex(schedule) + "\n";
  if (format === "json") {
    return JSON.stringify({
      layers: schedule.numLayers,
      kvHeads: schedule.numKvHeads,
      retrieval: schedule.retrieval.map((r) => Array.from(r)),
      sparsity: schedule.sparsity,
      sinkSize,
      recentSize,
    }) + "\n";
  }
  const selection = sparsity !== undefined ? `sparsity ${sparsity}, tie-break ${tieBreak}`
    : threshold !== undefined ? `threshold ${threshold} (gates >= ${threshold} are retrieval heads)`
    : `threshold ${NATURAL_THRESHOLD}, the natural one (gates >= ${NATURAL_THRESHOLD}); no --sparsity or --threshold given`;
  return renderTable({
    pattern, schedule, preset, modelArg, headDim: headDimArg ?? preset?.headDim ?? 128, headDimGiven: headDimArg !== undefined,
    selection, sinkSize, recentSize, windowFrom: sink === undefined && recent === undefined ? "config.json" : "options", context,
  });
}

interface TableInput {
  pattern: HeadPattern;
  schedule: HeadSchedule;
  preset: ModelPreset | undefined;
  modelArg: string | undefined;
  headDim: number;
  headDimGiven: boolean;
  selection: string;
  sinkSize: number;
  recentSize: number;
  windowFrom: string;
  context: number;
}

function renderTable(t: TableInput): string {
  const { pattern: p, schedule: s } = t;
  const total = s.numLayers * s.numKvHeads;
  const model = t.preset
    ? `${t.preset.name} (${t.modelArg ? "--model" : "from the directory name"}): ${t.preset.numHeads} query heads, G = ${t.preset.numHeads / t.preset.numKvHeads}, head dim ${t.headDim}`
    : `no preset (name one with --model); head dim ${t.headDim}${t.headDimGiven ? "" : " assumed (--head-dim)"}`;
  const header = columns([
    ["pattern", p.source ?? ""],
    ["shape", `${p.numLayers} layers x ${p.numKvHeads} KV heads; ${p.clipped} of ${total} gates clipped to [0, 1]`],
    ["model", model],
    ["window", `sink ${t.sinkSize} + recent ${t.recentSize} tokens (${t.windowFrom})`],
    ["selection", t.selection],
    ["result", `${s.retrievalHeads} of ${total} KV heads are retrieval heads; achieved sparsity ${s.sparsity.toFixed(4)}`],
  ], "ll");

  const layers = columns([
    ["layer", "retrieval", "heads (R = retrieval, . = streaming)"],
    ...s.mask.map((row, l) => [String(l), `${s.retrieval[l]!.length}/${s.numKvHeads}`, row.map((r) => (r ? "R" : ".")).join("")]),
    ["total", `${s.retrievalHeads}/${total}`, ""],
  ], "rrl");

  const o = { headDim: t.headDim, sinkSize: t.sinkSize, recentSize: t.recentSize, bytesPerElem: BYTES_F16 };
  // Per token once the streaming windows are full: the marginal cost of one more token.
  const window = t.sinkSize + t.recentSize;
  const duoPerToken = kvBytes(s, { ...o, context: window + 1 }) - kvBytes(s, { ...o, context: window });
  const fullPerToken = fullKvBytes(s, { ...o, context: 1 });
  const duoAt = kvBytes(s, { ...o, context: t.context }), fullAt = fullKvBytes(s, { ...o, context: t.context });
  const ratio = (a: number, b: number) => (b === 0 ? "-" : (a / b).toFixed(3));
  const memory = columns([
    [`KV cache, f16 (${BYTES_F16} bytes per element)`, "full attention", "DuoAttention", "Duo/full"],
    [`per token, once S + R = ${window} tokens are held`, formatBytes(fullPerToken), formatBytes(duoPerToken), ratio(duoPerToken, fullPerToken)],
    [`at ${t.context} tokens`, formatBytes(fullAt), formatBytes(duoAt), ratio(duoAt, fullAt)],
  ], "lrrr");
  return [header, "", layers, "", memory, ""].join("\n");
}

/** Rows padded into aligned columns ("l"/"r" per column), two spaces apart, trailing spaces trimmed. */
function columns(rows: string[][], align: string): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (align[c] === "r" ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join("  ").trimEnd()).join("\n");
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}
