/**
 * `duo pattern --compare A B [--sparsity 0.5,0.75]`: how far two head patterns of the same model agree
 * (src/identify/compare.ts): Spearman over all KV heads, and per sparsity the AUC of A's gates against B's
 * retrieval set and the overlap of the two retrieval sets. B is the reference (e.g. a published pattern).
 */
import { DuoError } from "../errors.ts";
import { compareGates } from "../identify/compare.ts";
import { loadPattern } from "../pattern/io.ts";
import type { Args } from "./args.ts";

export const COMPARE_USAGE = `usage: duo pattern --compare A B [--sparsity 0.5,0.75] [--format table|json]
  Agreement of pattern A with reference pattern B (same layers x KV heads): Spearman rank correlation; per
  sparsity s, AUC = P(a head B keeps at s outscores one it streams, under A's gates; ties ½) and the top-k
  overlap of the two retrieval sets (k = heads kept at s).
`;

export async function compareCommand(args: Args): Promise<string> {
  if (args.positional.length !== 2) throw new DuoError("INVALID_ARGUMENT", `--compare needs two pattern directories, A and B; ${COMPARE_USAGE.split("\n")[0]}`);
  const raw = args.values.get("sparsity") ?? "0.5,0.75";
  const sparsities = raw.split(",").map((x) => (x.trim() === "" ? NaN : Number(x)));
  if (sparsities.some((s) => !(s > 0 && s < 1))) throw new DuoError("INVALID_ARGUMENT", `--sparsity must be comma-separated numbers in (0, 1), got ${JSON.stringify(raw)}`);
  const format = args.values.get("format") ?? "table";
  if (format !== "table" && format !== "json") throw new DuoError("INVALID_ARGUMENT", `--format with --compare must be "table" or "json", got ${JSON.stringify(format)}`);
  const [a, b] = await Promise.all(args.positional.map((p) => loadPattern(p)));
  if (a!.numLayers !== b!.numLayers || a!.numKvHeads !== b!.numKvHeads) {
    throw new DuoError("SHAPE_MISMATCH", `${a!.source} is ${a!.numLayers} x ${a!.numKvHeads} but ${b!.source} is ${b!.numLayers} x ${b!.numKvHeads} (layers x KV heads); compare patterns of the same model`);
  }
  const r = compareGates(a!.gates, b!.gates, a!.numKvHeads, sparsities);
  if (format === "json") return JSON.stringify({ a: a!.source, b: b!.source, ...r }) + "\n";
  const rows = r.sparsities.map((s) => `  ${s.sparsity.toFixed(2).padEnd(8)}  ${String(s.kept).padStart(4)}  ${s.auc.toFixed(3)}  ${s.overlap.toFixed(3)}`);
  return [
    `A: ${a!.source}`,
    `B: ${b!.source} (reference)`,
    `${r.heads} KV heads; Spearman ${r.spearman.toFixed(3)}`,
    `  sparsity  kept  AUC    top-k overlap`,
    ...rows,
    "",
  ].join("\n");
}
