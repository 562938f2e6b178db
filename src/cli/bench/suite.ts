/**
 * `duo bench --suite paper`: the upstream paper's efficiency study (ANCHORS §1.2–1.3, SPEC §6) at the attention
 * level on this machine, sized to finish in minutes on a small CPU:
 *   1. decode latency and KV memory vs context, full vs Duo (Llama-3-8B at 50%, Llama-2-7B at 25% retrieval);
 *   2. chunked-prefill latency vs chunk size at a fixed context, both streaming-prefill modes;
 *   3. decode latency and KV memory vs the retrieval-head ratio at a fixed context.
 * Writes results.jsonl, results.md and one SVG per study to --out, and returns the markdown for stdout. Every
 * measured ratio stands beside the theoretical one (KV bytes, SPEC §4.4; prefill FLOP, ANCHORS §4.2).
 */
import { PREFILL_MODES } from "../../engine/options.ts";
import { makeDir, writeText } from "../../runtime.ts";
import { figure, type Panel, type Series } from "../../report/svg.ts";
import { formatBytes, formatRatio, renderTable } from "../../report/table.ts";
import { atSparsity, fmtPct, type ShapeCase, spreadLayers, typicalLayer } from "./cases.ts";
import { capacity, capacityRecord, type CapacityResult, fitsUpTo } from "./capacity.ts";
import { decodeSeries, type Mode, MODES } from "./decode.ts";
import { type Harness, warmUp } from "./harness.ts";
import type { BenchOptions } from "./options.ts";
import { prefillGroup } from "./prefill.ts";
import { type BenchRecord, jsonLine } from "./record.ts";
import { fmtMs, targetLines } from "./report.ts";

/** The suite's sizes per shape (overridable with --contexts, --layers, --prefill-contexts, --chunk). */
export interface PaperSizes {
  contexts: number[];
  layers: number;
  prefillContext: number;
  chunks: number[];
  ratioContext: number;
  ratios: number[];
}

export const PAPER_SIZES: Readonly<Record<string, PaperSizes>> = {
  "llama-3-8b": {
    contexts: [4096, 8192, 16384, 32768, 65536], layers: 8,
    prefillContext: 2048, chunks: [256, 512, 1024, 2048],
    ratioContext: 16384, ratios: [1, 0.75, 0.5, 0.25, 0.125],
  },
  "llama-2-7b": {
    contexts: [2048, 4096, 8192, 16384, 32768], layers: 8,
    prefillContext: 2048, chunks: [256, 512, 1024, 2048],
    ratioContext: 8192, ratios: [1, 0.75, 0.5, 0.25, 0.125],
  },
};

const COLOR = { full: "#D55E00", duo: "#0072B2", window: "#009E73", other: "#CC79A7" } as const;

export function sizesFor(c: ShapeCase, o: BenchOptions): PaperSizes {
  const d = PAPER_SIZES[c.shape.name] ?? PAPER_SIZES["llama-3-8b"]!;
  return {
    ...d,
    contexts: o.contexts ?? d.contexts,
    layers: o.layers ?? d.layers,
    prefillContext: o.prefillContexts?.[0] ?? d.prefillContext,
    chunks: o.chunks ?? d.chunks,
  };
}

export async function runPaperSuite(h: Harness, cases: readonly ShapeCase[], o: BenchOptions, header: readonly string[]): Promise<string> {
  const tagged = (study: string): Harness => ({ ...h, emit: (r: BenchRecord) => h.emit(Object.assign(r, { study })) });
  const bounded = Array.from({ length: h.backend.shards }, (_, s) => h.backend.memory(s).capacity).every(Number.isFinite);
  const dtype = o.dtypes[0]!;
  const settings: string[] = [];
  for (const c of cases) {
    const z = sizesFor(c, o);
    settings.push(`${c.shape.name}: decode at ${z.contexts.join(", ")} tokens on ${Math.min(z.layers, c.shape.numLayers)} of ${c.shape.numLayers} layers (scaled to all by KV bytes); ` +
      `prefill of ${z.prefillContext} tokens on layer ${typicalLayer(c.schedule)} in chunks of ${z.chunks.join(", ")}; ` +
      `retrieval ratios ${z.ratios.join(", ")} at ${z.ratioContext} tokens; KV ${dtype}`);
    await warmUp(h.backend, c, dtype, PREFILL_MODES);
    // Study 1: decode vs context, with the capacity that decides where full attention stops fitting.
    const layers = spreadLayers(c.shape.numLayers, z.layers);
    const caps: Partial<Record<Mode, CapacityResult>> = {};
    for (const mode of MODES) {
      caps[mode] = await capacity(h, c, dtype, mode, bounded && o.capacity === "fill");
      tagged("context").emit(capacityRecord(h, c, dtype, caps[mode]!));
    }
    await decodeSeries(tagged("context"), { c, dtype, modes: MODES, contexts: z.contexts, layers, fitsUpTo: fitsUpTo(caps) });
    // Study 2: prefill vs chunk size.
    const layer = typicalLayer(c.schedule);
    for (const chunk of z.chunks) await prefillGroup(tagged("prefill"), { c, dtype, context: z.prefillContext, chunk, layer });
    // Study 3: decode vs retrieval ratio.
    for (const ratio of z.ratios) {
      const rc = await atSparsity(c, 1 - ratio);
      await decodeSeries(tagged("ratio"), { c: rc, dtype, modes: ["duo"], contexts: [z.ratioContext], layers });
    }
  }
  const rs = h.records;
  const md = [
    "# DuoAttention efficiency study on this machine (attention only)",
    "",
    ...header.map((l) => `- ${l}`),
    ...settings.map((l) => `- ${l}`),
    "- decode ms are per generated token for all layers; memory is the KV cache the backend reserved; the theory column is the KV-byte ratio (SPEC §4.4) for decode and the FLOP ratio (ANCHORS §4.2) for prefill; the sharded bound is the ratio of critical-path bytes (each layer's busiest worker), the most the head sharding allows.",
    "",
    "## 1. Decode latency and KV memory vs context",
    "",
    "![decode vs context](decode-vs-context.svg)",
    "",
    contextTable(rs),
    "## 2. Chunked prefill vs chunk size",
    "",
    "![prefill vs chunk](prefill-vs-chunk.svg)",
    "",
    prefillChunkTable(rs),
    "## 3. Decode vs retrieval-head ratio",
    "",
    "![decode vs ratio](decode-vs-ratio.svg)",
    "",
    ratioTable(rs),
    "## Targets",
    "",
    ...targetLines(rs).map((t) => `- ${t}`),
    "",
  ].join("\n");
  await makeDir(o.out);
  await writeText(`${o.out}/results.jsonl`, rs.map(jsonLine).join("\n") + "\n");
  await writeText(`${o.out}/results.md`, md);
  const sub = `${h.base.runtime}, ${h.backend.name} backend, ${h.base.threads} thread(s), KV ${dtype}`;
  await writeText(`${o.out}/decode-vs-context.svg`, contextFigure(rs, sub, h));
  await writeText(`${o.out}/prefill-vs-chunk.svg`, prefillFigure(rs, sub));
  await writeText(`${o.out}/decode-vs-ratio.svg`, ratioFigure(rs, sub));
  return md.replace(/^!\[.*\n\n/gm, "") + `\nwrote ${o.out}/results.jsonl, results.md, decode-vs-context.svg, prefill-vs-chunk.svg, decode-vs-ratio.svg\n`;
}

const n = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const shapesOf = (rs: readonly BenchRecord[]) => [...new Set(rs.map((r) => String(r.shape)))];
const ofStudy = (rs: readonly BenchRecord[], study: string, kind: string) => rs.filter((r) => r.study === study && r.kind === kind);

function contextTable(rs: readonly BenchRecord[]): string {
  const dec = ofStudy(rs, "context", "decode");
  const rows = shapesOf(dec).flatMap((shape) => {
    const g = dec.filter((r) => r.shape === shape);
    return [...new Set(g.map((r) => r.context!))].sort((a, b) => a - b).map((ctx) => {
      const f = g.find((r) => r.context === ctx && r.mode === "full"), d = g.find((r) => r.context === ctx && r.mode === "duo");
      const fm = n(f?.ms), dm = n(d?.ms), fa = n(f?.allocated), da = n(d?.allocated);
      const theory = n(f?.kvBytes) !== null && n(d?.kvBytes) !== null ? n(f!.kvBytes)! / n(d!.kvBytes)! : null;
      const bound = n(f?.criticalBytes) !== null && n(d?.criticalBytes) ? n(f!.criticalBytes)! / n(d!.criticalBytes)! : null;
      return [
        shape, ctx, fm === null ? "does not fit" : fmtMs(fm), dm === null ? "does not fit" : fmtMs(dm),
        formatRatio(fm !== null && dm !== null ? fm / dm : null), formatRatio(theory), formatRatio(bound),
        fa === null ? "does not fit" : formatBytes(fa), da === null ? "does not fit" : formatBytes(da),
        formatRatio(fa !== null && da !== null ? fa / da : null), formatRatio(theory),
      ];
    });
  });
  return renderTable(
    ["shape", "context", "full ms/token", "duo ms/token", "speedup", "theory", "sharded bound", "full KV memory", "duo KV memory", "memory ratio", "theory"],
    rows, { format: "markdown" },
  );
}

function prefillChunkTable(rs: readonly BenchRecord[]): string {
  const pre = ofStudy(rs, "prefill", "prefill");
  const rows = shapesOf(pre).flatMap((shape) => {
    const g = pre.filter((r) => r.shape === shape);
    return [...new Set(g.map((r) => r.chunk!))].sort((a, b) => a - b).map((chunk) => {
      const f = g.find((r) => r.chunk === chunk && r.mode === "full");
      const d = (pm: string) => g.find((r) => r.chunk === chunk && r.mode === "duo" && r.prefill === pm);
      const s = (r: BenchRecord | undefined) => (n(r?.totalMs) === null ? null : (n(r!.totalMs)! / 1000).toFixed(2));
      const ratio = (r: BenchRecord | undefined) => (n(r?.totalMs) !== null && n(f?.totalMs) ? (n(r!.totalMs)! / n(f!.totalMs)!).toFixed(3) : "-");
      const theory = (r: BenchRecord | undefined) => (n(r?.flop) !== null && n(f?.flop) ? (n(r!.flop)! / n(f!.flop)!).toFixed(3) : "-");
      return [
        `${shape} (layer ${f?.layer ?? "-"}, r = ${n(d("upstream")?.layerRetrieval)?.toFixed(3) ?? "-"})`, f?.context ?? null, chunk,
        s(f), s(d("upstream")), ratio(d("upstream")), theory(d("upstream")), s(d("window")), ratio(d("window")), theory(d("window")),
      ];
    });
  });
  return renderTable(
    ["shape", "context", "chunk", "full s", "duo upstream s", "duo/full", "theory", "duo window s", "duo/full", "theory"],
    rows, { format: "markdown" },
  );
}

function ratioTable(rs: readonly BenchRecord[]): string {
  const dec = ofStudy(rs, "ratio", "decode");
  const rows = shapesOf(dec).flatMap((shape) => {
    const g = dec.filter((r) => r.shape === shape).sort((a, b) => n(b.retrieval)! - n(a.retrieval)!);
    const base = g.find((r) => n(r.retrieval) === 1);
    return g.map((r) => {
      const ms = n(r.ms), bm = n(base?.ms), a = n(r.allocated), ba = n(base?.allocated);
      const theory = n(base?.kvBytes) !== null && n(r.kvBytes) ? n(base!.kvBytes)! / n(r.kvBytes)! : null;
      return [
        shape, r.context, fmtPct(n(r.retrieval)!), ms === null ? "does not fit" : fmtMs(ms), formatRatio(ms !== null && bm !== null ? bm / ms : null), formatRatio(theory),
        a === null ? "-" : formatBytes(a), formatRatio(a !== null && ba !== null ? ba / a : null), formatRatio(theory),
      ];
    });
  });
  return renderTable(
    ["shape", "context", "retrieval heads", "ms/token", "speedup vs 100%", "theory", "KV memory", "memory ratio", "theory"],
    rows, { format: "markdown" },
  );
}

const GIB = 2 ** 30;

function contextFigure(rs: readonly BenchRecord[], subtitle: string, h: Harness): string {
  const dec = ofStudy(rs, "context", "decode");
  const memCap = Array.from({ length: h.backend.shards }, (_, s) => h.backend.memory(s).capacity).reduce((a, b) => a + b, 0);
  const panels: Panel[] = shapesOf(dec).flatMap((shape) => {
    const g = dec.filter((r) => r.shape === shape);
    const xs = [...new Set(g.map((r) => r.context!))].sort((a, b) => a - b);
    const pick = (mode: string, f: (r: BenchRecord) => number | null) => xs.map((x) => {
      const r = g.find((r) => r.context === x && r.mode === mode);
      return [x, r ? f(r) : null] as const;
    });
    const full = (x: number) => g.find((r) => r.context === x && r.mode === "full");
    const duo = (x: number) => g.find((r) => r.context === x && r.mode === "duo");
    const pct = g.find((r) => r.mode === "duo")?.retrieval;
    const label = `${shape}, ${typeof pct === "number" ? fmtPct(pct) : "?"} retrieval heads`;
    const theory: Series = {
      name: "Duo, theory (full × KV-byte ratio)", color: COLOR.duo, dashed: true,
      points: xs.map((x) => {
        const f = full(x), d = duo(x);
        return [x, n(f?.ms) !== null && n(d?.kvBytes) && n(f?.kvBytes) ? n(f!.ms)! * n(d!.kvBytes)! / n(f!.kvBytes)! : null] as const;
      }),
    };
    const memSeries: Series[] = [
      { name: "full attention", color: COLOR.full, points: pick("full", (r) => (n(r.allocated) === null ? null : n(r.allocated)! / GIB)) },
      // What full attention would need where it does not fit (SPEC §4.4), so the crossing with the memory line shows.
      { name: "full attention, needed", color: COLOR.full, dashed: true, points: pick("full", (r) => (n(r.kvBytes) === null ? null : n(r.kvBytes)! / GIB)) },
      { name: "DuoAttention", color: COLOR.duo, points: pick("duo", (r) => (n(r.allocated) === null ? null : n(r.allocated)! / GIB)) },
    ];
    if (Number.isFinite(memCap)) memSeries.push({ name: "backend memory", color: COLOR.other, dashed: true, points: [[xs[0]!, memCap / GIB], [xs[xs.length - 1]!, memCap / GIB]] });
    return [
      {
        title: `${label}: decode latency`, x: { label: "context", unit: "tokens", log: 2 }, y: { label: "latency", unit: "ms / token" },
        series: [
          { name: "full attention", color: COLOR.full, points: pick("full", (r) => n(r.ms)) },
          { name: "DuoAttention", color: COLOR.duo, points: pick("duo", (r) => n(r.ms)) },
          theory,
        ],
      },
      { title: `${label}: KV memory`, x: { label: "context", unit: "tokens", log: 2 }, y: { label: "KV cache", unit: "GiB" }, series: memSeries },
    ];
  });
  return figure({ title: "Decode latency and KV memory vs context (missing points: does not fit)", subtitle, panels, columns: 2 });
}

function prefillFigure(rs: readonly BenchRecord[], subtitle: string): string {
  const pre = ofStudy(rs, "prefill", "prefill");
  const panels: Panel[] = shapesOf(pre).map((shape) => {
    const g = pre.filter((r) => r.shape === shape);
    const xs = [...new Set(g.map((r) => r.chunk!))].sort((a, b) => a - b);
    const get = (mode: string, pm: string | null) => (x: number) => g.find((r) => r.chunk === x && r.mode === mode && (pm === null || r.prefill === pm));
    const secs = (find: (x: number) => BenchRecord | undefined) => xs.map((x) => [x, n(find(x)?.totalMs) === null ? null : n(find(x)!.totalMs)! / 1000] as const);
    const theory = (pm: string) => xs.map((x) => {
      const f = get("full", null)(x), d = get("duo", pm)(x);
      return [x, n(f?.totalMs) !== null && n(d?.flop) && n(f?.flop) ? (n(f!.totalMs)! * n(d!.flop)!) / n(f!.flop)! / 1000 : null] as const;
    });
    const f0 = g[0]!;
    return {
      title: `${shape}, ${f0.context} tokens, layer ${f0.layer}`,
      x: { label: "prefill chunk", unit: "tokens", log: 2 }, y: { label: "prefill time, one layer", unit: "s" },
      series: [
        { name: "full attention", color: COLOR.full, points: secs(get("full", null)) },
        { name: "Duo upstream", color: COLOR.duo, points: secs(get("duo", "upstream")) },
        { name: "Duo window", color: COLOR.window, points: secs(get("duo", "window")) },
        { name: "upstream, theory", color: COLOR.duo, dashed: true, points: theory("upstream") },
        { name: "window, theory", color: COLOR.window, dashed: true, points: theory("window") },
      ],
    };
  });
  return figure({ title: "Chunked prefill time vs chunk size (theory: full × FLOP ratio)", subtitle, panels, columns: 2 });
}

function ratioFigure(rs: readonly BenchRecord[], subtitle: string): string {
  const dec = ofStudy(rs, "ratio", "decode");
  const shapes = shapesOf(dec);
  const colors = [COLOR.duo, COLOR.full, COLOR.window, COLOR.other];
  const series = (f: (r: BenchRecord) => number | null, theoryOf: (r: BenchRecord, base: BenchRecord) => number | null): Series[] =>
    shapes.flatMap((shape, i) => {
      const g = dec.filter((r) => r.shape === shape).sort((a, b) => n(a.retrieval)! - n(b.retrieval)!);
      const base = g.find((r) => n(r.retrieval) === 1);
      const ctx = g[0]?.context;
      return [
        { name: `${shape} @ ${ctx}`, color: colors[i % colors.length], points: g.map((r) => [n(r.retrieval)!, f(r)] as const) },
        { name: `${shape}, theory`, color: colors[i % colors.length], dashed: true, points: g.map((r) => [n(r.retrieval)!, base ? theoryOf(r, base) : null] as const) },
      ];
    });
  const byBytes = (v: (r: BenchRecord) => number | null) => (r: BenchRecord, base: BenchRecord) =>
    v(base) !== null && n(r.kvBytes) && n(base.kvBytes) ? v(base)! * n(r.kvBytes)! / n(base.kvBytes)! : null;
  const ms = (r: BenchRecord) => n(r.ms);
  const mem = (r: BenchRecord) => (n(r.allocated) === null ? null : n(r.allocated)! / GIB);
  return figure({
    title: "Decode latency and KV memory vs retrieval-head ratio (theory: 100% × KV-byte ratio)", subtitle, columns: 2,
    panels: [
      { title: "decode latency", x: { label: "retrieval heads", unit: "fraction of KV heads" }, y: { label: "latency", unit: "ms / token" }, series: series(ms, byBytes(ms)) },
      { title: "KV memory", x: { label: "retrieval heads", unit: "fraction of KV heads" }, y: { label: "KV cache", unit: "GiB" }, series: series(mem, byBytes(mem)) },
    ],
  });
}
