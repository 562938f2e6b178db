/**
 * `duo niah`: the needle-in-a-haystack evaluation (SPEC §7.1, src/model/niah.ts) over a grid of context lengths
 * and needle depths, with full attention and with DuoAttention; writes niah.json (every cell, both scores) and
 * niah.svg (a heatmap per method of the plotted score) and prints a summary table.
 */
import { DuoError } from "../errors.ts";
import { LlamaModel } from "../model/llama.ts";
import { CONTEXT_BUFFER, haystackIds, linspaceInts, MAX_SCORE, type NiahCell, runNiah } from "../model/niah.ts";
import { makeDir, readText, writeText } from "../runtime.ts";
import { numberArg, parseArgs } from "./args.ts";
import { renderTable } from "../report/table.ts";
import { heatmapSvg } from "./heatmap.ts";
import { write } from "./io.ts";
import { MODEL_FLAGS, MODEL_USAGE, MODEL_VALUES, modelOptions } from "./model-args.ts";

const METHODS = ["full", "duo"] as const;
type Method = (typeof METHODS)[number];

const USAGE = `usage: duo niah --model DIR --haystack FILE --pattern DIR|URL [options]
  Needle in a haystack: insert the San Francisco needle at each depth of a haystack cut to each length, ask for
  it, score the answer; once with full attention and once with DuoAttention.
${MODEL_USAGE}  --haystack FILE      filler text (repeated as needed)
  --lengths L,L,...    prompt lengths in tokens, or a:b:n for round(linspace(a, b, n)) (default 1000:4000:4)
  --depths d,d,...     needle depths in percent, or a:b:n (default 0:100:10, upstream's grid)
  --pattern DIR|URL    head pattern for the DuoAttention run (required with method duo)
  --sparsity s         fraction of KV heads that stream (default 0.5)
  --methods m,m        ${METHODS.join(",")} (default both)
  --max-tokens N       answer tokens (default 51: the first from the prefill + 50, as upstream)
  --out DIR            where niah.json and niah.svg go (default niah-out)
`;

/** "1,2,3" or "a:b:n" (round(linspace(a, b, n))). */
function parseGrid(name: string, s: string): number[] {
  const lin = /^\s*(-?[\d.]+)\s*:\s*(-?[\d.]+)\s*:\s*(\d+)\s*$/.exec(s);
  const out = lin ? linspaceInts(Number(lin[1]), Number(lin[2]), Number(lin[3])) : s.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  if (out.length === 0 || out.some((n) => !Number.isFinite(n) || n < 0)) {
    throw new DuoError("INVALID_ARGUMENT", `--${name} must be comma-separated numbers or a:b:n, got ${JSON.stringify(s)}`);
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: [...MODEL_VALUES, "haystack", "lengths", "depths", "pattern", "sparsity", "methods", "max-tokens", "out"],
    flags: ["help", ...MODEL_FLAGS],
  });
  if (args.flags.has("help")) {
    write(USAGE);
    return 0;
  }
  if (args.positional.length) throw new DuoError("INVALID_ARGUMENT", `unexpected argument ${JSON.stringify(args.positional[0])}; ${USAGE.split("\n")[0]}`);
  const { dir, options } = modelOptions(args);
  const haystack = args.values.get("haystack");
  if (!haystack) throw new DuoError("INVALID_ARGUMENT", "--haystack FILE is required (the filler text)");
  const lengths = parseGrid("lengths", args.values.get("lengths") ?? "1000:4000:4");
  const depths = parseGrid("depths", args.values.get("depths") ?? "0:100:10");
  if (depths.some((d) => d > 100)) throw new DuoError("INVALID_ARGUMENT", `--depths are percentages in [0, 100], got ${depths.join(",")}`);
  const methods = (args.values.get("methods") ?? METHODS.join(",")).split(",").map((m) => m.trim()) as Method[];
  const bad = methods.find((m) => !METHODS.includes(m));
  if (bad !== undefined || methods.length === 0) throw new DuoError("INVALID_ARGUMENT", `--methods must list ${METHODS.join(" and/or ")}, got ${JSON.stringify(args.values.get("methods"))}`);
  const pattern = args.values.get("pattern");
  const sparsity = numberArg(args, "sparsity", { min: 0, max: 1 }) ?? 0.5;
  if (methods.includes("duo") && pattern === undefined) throw new DuoError("INVALID_ARGUMENT", "the duo method needs --pattern DIR|URL (or pass --methods full)");
  const maxTokens = numberArg(args, "max-tokens", { min: 1, integer: true }) ?? 51;
  const out = (args.values.get("out") ?? "niah-out").replace(/[/\\]+$/, "");
  const text = await readText(haystack);

  const results: Partial<Record<Method, { cells: NiahCell[]; retrievalHeads: number; kvHeads: number }>> = {};
  let meta: Record<string, unknown> = {};
  for (const method of methods) {
    const model = await LlamaModel.load(dir, method === "duo" ? { ...options, pattern, sparsity } : options);
    try {
      const hay = haystackIds(model.tokenizer, text, Math.max(...lengths));
      const cfg = model.config;
      // The window is the DuoAttention run's (full attention keeps every token whatever S and R say).
      if (method === "duo" || !("model" in meta)) {
        meta = {
          model: dir, architecture: cfg.architecture, haystack, sinkSize: model.engine.sinkSize, recentSize: model.engine.recentSize,
          kvDtype: model.engine.kvDtype, prefill: model.engine.prefill, prefillChunk: model.prefillChunk, maxTokens,
          attentionBackend: model.engine.backendName, kernels: model.kernels.name,
        };
      }
      write(`${method}: ${model.schedule.retrievalHeads}/${cfg.numLayers * cfg.numKvHeads} retrieval KV heads\n`, "stderr");
      const cells = await runNiah(model, hay, { lengths, depths, maxTokens }, (c) => {
        write(`  ${method} length ${c.length} depth ${c.depth}: score ${c.score.toFixed(3)} rouge1 ${c.rouge1.toFixed(2)} ${JSON.stringify(c.response.slice(0, 60))}\n`, "stderr");
      });
      results[method] = { cells, retrievalHeads: model.schedule.retrievalHeads, kvHeads: cfg.numLayers * cfg.numKvHeads };
    } finally {
      await model.dispose();
    }
  }

  await makeDir(out);
  const json = {
    ...meta, lengths, depths, pattern: pattern ?? null, sparsity: methods.includes("duo") ? sparsity : null, contextBuffer: CONTEXT_BUFFER,
    scoring: {
      score: "|set(response.lower().split()) ∩ E| / 12, E = 'eat a sandwich and sit in dolores park on a sunny day.' (upstream's plotted score; at most 11/12)",
      rouge1: "rouge-1 F(needle, response) x 10, no stemming (upstream's saved score uses the Porter stemmer)",
    },
    methods: results,
  };
  await writeText(`${out}/niah.json`, JSON.stringify(json, null, 2) + "\n");
  const grid = (cells: NiahCell[], f: (c: NiahCell) => number | string) => depths.map((d) => lengths.map((l) => {
    const c = cells.find((x) => x.length === l && x.depth === d);
    return c ? f(c) : null;
  }));
  const panels = methods.map((m) => {
    const r = results[m]!;
    const mean = r.cells.reduce((a, c) => a + c.score, 0) / r.cells.length;
    const label = m === "full" ? "Full attention" : `DuoAttention (${r.retrievalHeads}/${r.kvHeads} retrieval heads)`;
    return { title: `${label}: mean ${mean.toFixed(3)}`, values: grid(r.cells, (c) => c.score) as (number | null)[][], notes: grid(r.cells, (c) => c.response) as (string | null)[][] };
  });
  await writeText(`${out}/niah.svg`, heatmapSvg(panels, {
    title: `Needle in a haystack: ${dir.split(/[/\\]/).pop()}`,
    subtitle: `score = |answer words ∩ expected words| / 12 (a perfect answer scores 11/12 = ${MAX_SCORE.toFixed(3)})`,
    rowLabels: depths.map(String), columnLabels: lengths.map(String), rowTitle: "depth (%)", columnTitle: "context length (tokens)", legend: "score",
  }));
  write(renderTable(["method", "retrieval heads", "cells", "mean score", "mean rouge1 x10"], methods.map((m) => {
    const r = results[m]!;
    const mean = (f: (c: NiahCell) => number) => (r.cells.reduce((a, c) => a + f(c), 0) / r.cells.length).toFixed(3);
    return [m, `${r.retrievalHeads}/${r.kvHeads}`, String(r.cells.length), mean((c) => c.score), mean((c) => c.rouge1)];
  }), { format: "markdown" }) + `wrote ${out}/niah.json and ${out}/niah.svg\n`);
  return 0;
}
