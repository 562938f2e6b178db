/**
 * `duo bench`: attention benchmarks on this machine (DESIGN.md §6). Full attention vs DuoAttention on one shared
 * backend, each kernel against the ceilings measured in the same runtime, and peers for full-attention decode.
 * Tables on stdout (progress on stderr), or one JSON line per measurement with --json; `--suite paper` reruns the
 * paper's efficiency study and writes JSON lines, a markdown report and SVG plots.
 */
import type { NativeBackend } from "../backend/native.ts";
import { createBackend } from "../backend/registry.ts";
import { loadAverage, runtime } from "../runtime.ts";
import { resolveCases, type ShapeCase } from "./bench/cases.ts";
import { measureCeilings } from "./bench/ceilings.ts";
import type { Harness } from "./bench/harness.ts";
import { parseBenchArgs, USAGE } from "./bench/options.ts";
import { type BenchRecord, jsonLine, record } from "./bench/record.ts";
import { capacityTable, ceilingLine, decodeTable, peerTable, prefillTable, targetLines } from "./bench/report.ts";
import { runBench } from "./bench/run.ts";
import { accuracyCommand } from "./bench/accuracy.ts";
import { capacityCommand } from "./bench/capacity-budget.ts";
import { runPaperSuite } from "./bench/suite.ts";
import { isTTY, write } from "./io.ts";

export async function main(argv: string[]): Promise<number> {
  const o = parseBenchArgs(argv);
  if (o.help) {
    write(USAGE);
    return 0;
  }
  if (o.what === "capacity") return capacityCommand(o);
  if (o.what === "accuracy") return accuracyCommand(o);
  const cases = await resolveCases({ shape: o.shape, pattern: o.pattern, sparsity: o.sparsity });
  const backend = await createBackend(o.backend, o.threads === undefined ? {} : { threads: o.threads });
  const rt = runtime();
  const tty = isTTY("stderr");
  try {
    const h: Harness = {
      backend,
      base: { backend: backend.name, runtime: `${rt.name} ${rt.version}`, threads: backend.name === "wasm" ? backend.shards : backend.name === "native" ? (backend as NativeBackend).threads : 1 },
      ceilings: null,
      budgetMs: o.budgetMs,
      records: [],
      emit(r: BenchRecord) {
        this.records.push(r);
        if (o.json) write(jsonLine(r) + "\n");
      },
      note: (text) => write(tty ? `\r\x1b[K  ${text}` : `  ${text}\n`, "stderr"),
    };
    const { ceilings, why } = await measureCeilings(backend);
    h.ceilings = ceilings;
    if (ceilings) h.emit(record("ceiling", h.base, { ...ceilings }));
    const header = headerLines(h, cases, why, await loadAverage());
    if (!o.json) write(header.join("\n") + "\n\n");
    if (o.suite === "paper") {
      const text = await runPaperSuite(h, cases, o, header);
      if (tty) write("\r\x1b[K", "stderr");
      if (!o.json) write(text);
      return 0;
    }
    const skipped = await runBench(h, cases, o);
    if (tty) write("\r\x1b[K", "stderr");
    if (o.json) for (const s of skipped) write(`peer skipped: ${s}\n`, "stderr");
    if (!o.json) {
      const targets = targetLines(h.records);
      write([decodeTable(h.records), peerTable(h.records), prefillTable(h.records), capacityTable(h.records)]
        .filter((t) => t).join("\n") + (skipped.length ? `\npeers that could not run here:\n${skipped.map((s) => `  ${s}`).join("\n")}\n` : "")
        + (targets.length ? `\ntargets:\n${targets.map((t) => `  ${t}`).join("\n")}\n` : "")
        + `\n1-minute load average at the end: ${(await loadAverage())?.toFixed(2) ?? "unknown"} (this run's own workers included)\n`);
    }
    return 0;
  } finally {
    await backend.dispose();
  }
}

function headerLines(h: Harness, cases: readonly ShapeCase[], why: string | undefined, load: number | null): string[] {
  const cores = runtime().cores;
  return [
    `duo bench: runtime ${h.base.runtime}, backend ${h.backend.name}${h.backend.shards > 1 ? ` (${h.backend.shards} workers)` : ""}, ${cores} core(s)` +
      (load === null ? "" : `, 1-minute load average ${load.toFixed(2)} before the run`),
    why ? `ceilings: not measured: ${why}` : ceilingLine(h.records),
    ...cases.map((c) => `${c.shape.name} (${c.shape.numLayers} layers, ${c.shape.numHeads} query / ${c.shape.numKvHeads} KV heads, D = ${c.shape.headDim}), S = ${c.sinkSize}, R = ${c.recentSize}: ${c.source}; retrieval heads per layer ${c.schedule.counts().join(" ")}`),
  ];
}
