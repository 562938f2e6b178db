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

/** `a` is --compare's value; B is the one positional argument. */
export async function compareCommand(a: string, args: Args): Promise<string> {
  if (args.positional.length !== 1) throw new DuoError("INVALID_ARGUMENT", `--compare needs two pattern directories, A and B; ${COMPARE_USAGE.split("\n")[0]}`);
  const raw = args.values.get("sparsity") ?? "0.5,0.75";
  const sparsities = raw.split(",").map((x) => (x.trim() === "" ? NaN : Number(x)));
  if (sparsities.some((s) => !(s > 0 && s < 1))) throw new DuoError("INVALID_ARGUMENT", `--sparsity must be comma-separated numbers in (0, 1), got ${JSON.stringify(raw)}`);
  const format = args.values.get("format") ?? "table";
  if (format !== "table" && format !== "json") throw new DuoError("INVALID_ARGUMENT", `--format with --compare must be "table" or "json", got ${JSON.stringify(format)}`);
  const [pa, pb] = await Promise.all([loadPattern(a), loadPattern(args.positional[0]!)]);
  if (pa.numLayers !== pb.numLayers || pa.numKvHeads !== pb.numKvHeads) {
    throw new DuoError("SHAPE_MISMATCH", `${pa.source} is ${pa.numLayers} x ${pa.numKvHeads} but ${pb.source} is ${pb.numLayers} x ${pb.numKvHeads} (layers x KV heads); compare patterns of the same model`);
  }
  const r = compareGates(pa.gates, pb.gates, pa.numKvHeads, sparsities);
  if (format === "json") return JSON.stringify({ a: pa.source, b: pb.source, ...r }) + "\n";
  const rows = r.sparsities.map((s) => `  ${s.sparsity.toFixed(2).padEnd(8)}  ${String(s.kept).padStart(4)}  ${s.auc.toFixed(3)}  ${s.overlap.toFixed(3)}`);
  return [
    `A: ${pa.source}`,
    `B: ${pb.source} (reference)`,
    `${r.heads} KV heads; Spearman ${r.spearman.toFixed(3)}`,
    `  sparsity  kept  AUC    top-k overlap`,
    ...rows,
    "",
  ].join("\n");
}
