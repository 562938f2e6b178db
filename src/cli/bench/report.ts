/**
 * The human-readable side of `duo bench`: tables built from the records, with the ratios the benchmarks are judged
 * by (Duo vs full against the byte ratio, fraction of the roofline limit, peers, prefill vs theory, capacity).
 */
import { type Cell, formatBytes, formatRatio, renderTable, type TableOptions } from "../../report/table.ts";
import type { BenchRecord } from "./record.ts";

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const ms = (v: unknown): Cell => (num(v) === null ? null : fmtMs(v as number));
const pct = (a: number | null, b: number | null): string => (a === null || b === null || b === 0 ? "-" : `${Math.round((100 * a) / b)}%`);
const div = (a: number | null, b: number | null): number | null => (a === null || b === null || b === 0 ? null : a / b);

export function fmtMs(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

/** Group records by the listed fields, in order of first appearance. */
function groups(rs: readonly BenchRecord[], keys: readonly string[]): BenchRecord[][] {
  const m = new Map<string, BenchRecord[]>();
  for (const r of rs) {
    const k = keys.map((f) => String(r[f])).join("|");
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(r);
  }
  return [...m.values()];
}

const ours = (r: BenchRecord) => r.peer !== true;

/** Decode: full vs Duo per context, with bytes ratio, speedup, and fraction of the limit. */
export function decodeTable(rs: readonly BenchRecord[], o: TableOptions = {}): string {
  const out: string[] = [];
  for (const g of groups(rs.filter((r) => r.kind === "decode" && ours(r)), ["shape", "kvDtype", "layers"])) {
    const f0 = g[0]!;
    const contexts = [...new Set(g.map((r) => r.context!))].sort((a, b) => a - b);
    const duoHeads = g.find((r) => r.mode === "duo")?.heads;
    out.push(`decode ${f0.shape}, KV ${f0.kvDtype}, ${f0.layers} layer(s) timed, ms per token for all layers (${duoHeads ?? ""})`);
    const rows = contexts.map((ctx) => {
      const f = g.find((r) => r.context === ctx && r.mode === "full"), d = g.find((r) => r.context === ctx && r.mode === "duo");
      const fm = num(f?.ms), dm = num(d?.ms), fb = num(f?.kvBytes), db = num(d?.kvBytes);
      const speed = div(fm, dm), bytesRatio = div(fb, db);
      return [
        ctx, fb === null ? null : formatBytes(fb), db === null ? null : formatBytes(db), formatRatio(bytesRatio),
        formatRatio(div(num(f?.criticalBytes), num(d?.criticalBytes))),
        fm === null ? (f ? "does not fit" : null) : fmtMs(fm), dm === null ? (d ? "does not fit" : null) : fmtMs(dm),
        formatRatio(speed), formatRatio(div(speed, bytesRatio)),
        fmtGbps(f), fmtGbps(d), num(f?.limitGbps ?? d?.limitGbps)?.toFixed(1) ?? null,
      ];
    });
    out.push(renderTable(
      ["context", "KV full", "KV duo", "bytes ratio", "sharded bound", "full ms", "duo ms", "speedup", "speedup/bytes (≥0.9)", "full GB/s (of limit)", "duo GB/s (of limit)", "limit GB/s"],
      rows, o,
    ));
  }
  return out.join("\n");
}

function fmtGbps(r: BenchRecord | undefined): string {
  const g = num(r?.gbps);
  if (g === null) return "-";
  return `${g.toFixed(1)} (${pct(g, num(r!.limitGbps))})`;
}

/** Full-attention decode: ours vs the peers, per context. */
export function peerTable(rs: readonly BenchRecord[], o: TableOptions = {}): string {
  const dec = rs.filter((r) => r.kind === "decode" && r.mode === "full");
  const out: string[] = [];
  for (const g of groups(dec.filter((r) => r.peer === true), ["shape"])) {
    const shape = g[0]!.shape;
    const mine = dec.filter((r) => ours(r) && r.shape === shape && num(r.ms) !== null);
    const contexts = [...new Set(g.map((r) => r.context!))].sort((a, b) => a - b);
    const peer = (name: string, ctx: number) => g.find((r) => r.backend === name && r.context === ctx);
    out.push(`full-attention decode vs peers, ${shape}, ms per token for all layers (peers: one layer timed, × ${g[0]!.ms !== null ? Math.round(num(g[0]!.ms)! / num(g[0]!.msMeasured)!) : "L"})`);
    const rows = contexts.map((ctx) => {
      const m = mine.find((r) => r.context === ctx);
      const mm = num(m?.ms);
      const p = (n: string) => num(peer(n, ctx)?.ms);
      return [
        ctx, mm === null ? null : `${fmtMs(mm)} (${m!.kvDtype})`,
        ms(p("plain-ts")), ms(p("onnxruntime-web")), ms(p("onnxruntime-node")),
        formatRatio(div(p("plain-ts"), mm)), formatRatio(div(p("onnxruntime-web"), mm)), formatRatio(div(p("onnxruntime-node"), mm)),
      ];
    });
    const dt = (n: string) => g.find((r) => r.backend === n);
    const label = (n: string, short: string) => `${short}${dt(n) ? ` ${dt(n)!.kvDtype}, ${dt(n)!.threads}t` : ""}`;
    out.push(renderTable(
      ["context", "ours", label("plain-ts", "plain-ts"), label("onnxruntime-web", "ort-web"), label("onnxruntime-node", "ort-node"),
        "vs plain-ts", "vs ort-web (≥1.5x)", "vs ort-node"],
      rows, o,
    ));
  }
  return out.join("\n");
}

/** Prefill: full vs Duo per (mode, context, chunk), with the theoretical ratio of the layer's work. */
export function prefillTable(rs: readonly BenchRecord[], o: TableOptions = {}): string {
  const out: string[] = [];
  for (const g of groups(rs.filter((r) => r.kind === "prefill"), ["shape", "kvDtype"])) {
    const f0 = g[0]!;
    const layerR = num(g.find((r) => r.mode === "duo")?.layerRetrieval);
    out.push(`chunked prefill ${f0.shape}, KV ${f0.kvDtype}, layer ${f0.layer} (retrieval fraction ${layerR === null ? "-" : layerR.toFixed(3)}), seconds for the whole prefill of that layer`);
    const keys = groups(g.filter((r) => r.mode === "duo"), ["prefill", "context", "chunk"]);
    const rows = keys.map(([d]) => {
      const f = g.find((r) => r.mode === "full" && r.context === d!.context && r.chunk === d!.chunk);
      const ft = num(f?.totalMs), dt = num(d!.totalMs);
      const ratio = div(dt, ft), theory = div(num(d!.flop), num(f?.flop));
      const r = num(d!.layerRetrieval)!;
      const target = d!.prefill === "window" && d!.context! >= 8192 ? `≤ ${(r + 0.1).toFixed(2)}` : "-";
      return [
        String(d!.prefill), d!.context, d!.chunk, ft === null ? null : (ft / 1000).toFixed(2), dt === null ? null : (dt / 1000).toFixed(2),
        ratio === null ? null : ratio.toFixed(3), theory === null ? null : theory.toFixed(3), target,
        num(f?.gflops)?.toFixed(1) ?? null, num(d!.gflops)?.toFixed(1) ?? null, num(d!.limitGflops)?.toFixed(1) ?? null,
      ];
    });
    out.push(renderTable(
      ["mode", "context", "chunk", "full s", "duo s", "duo/full", "theory (FLOP)", "target", "full GFLOP/s", "duo GFLOP/s", "madd ceiling GFLOP/s"],
      rows, o,
    ));
  }
  return out.join("\n");
}

/** Capacity: computed (and filled) largest context per mode, and Duo ÷ full. */
export function capacityTable(rs: readonly BenchRecord[], o: TableOptions = {}): string {
  const caps = rs.filter((r) => r.kind === "capacity");
  if (!caps.length) return "";
  const rows = groups(caps, ["shape", "kvDtype"]).map((g) => {
    const f = g.find((r) => r.mode === "full"), d = g.find((r) => r.mode === "duo");
    const tokens = (r: BenchRecord | undefined) => (r && r.context === null ? "unbounded" : r?.context ?? null);
    const filled = (r: BenchRecord | undefined) => num(r?.filled);
    return [
      String(g[0]!.shape), String(g[0]!.kvDtype), num(g[0]!.capacityBytes) === null ? "no limit" : formatBytes(num(g[0]!.capacityBytes)!),
      num(f?.bytesPerToken) === null ? null : formatBytes(num(f!.bytesPerToken)!), num(d?.bytesPerToken) === null ? null : formatBytes(num(d!.bytesPerToken)!),
      tokens(f), tokens(d), formatRatio(div(num(f?.bytesPerToken), num(d?.bytesPerToken))),
      filled(f), filled(d), formatRatio(div(filled(d), filled(f))),
    ];
  });
  return "capacity: the largest context the whole model holds in the backend's memory\n" + renderTable(
    ["shape", "KV", "memory", "full B/token", "duo B/token", "full tokens", "duo tokens", "duo/full (≥1.9x at 50%)", "full filled", "duo filled", "filled duo/full"],
    rows, o,
  );
}

/** The ceilings line. */
export function ceilingLine(rs: readonly BenchRecord[]): string {
  const c = rs.find((r) => r.kind === "ceiling");
  if (!c) return "ceilings: not measured";
  const by = String(c.kernels ?? "").startsWith("native") ? "the native library" : "wasm SIMD in this runtime";
  return `ceilings (${c.workers} worker(s), ${by}, ${c.kernels ?? "simd"} kernels): streaming read ${num(c.readGBps)!.toFixed(1)} GB/s, multiply-add ${num(c.gflops)!.toFixed(1)} GFLOP/s`;
}

/**
 * The targets the benchmarks are judged by, each with its measured value and whether it is met:
 * Duo speedup ≥ 0.9 × the KV-byte ratio (largest context where both ran), full-attention decode ≥ 1.5× faster
 * than onnxruntime-web (every context both ran), window-mode prefill Duo/full ≤ layer retrieval fraction + 0.1 at
 * ≥ 8K tokens, and capacity Duo/full ≥ 0.95 ÷ retrieval fraction (1.9× at 50%).
 */
export function targetLines(rs: readonly BenchRecord[]): string[] {
  const out: string[] = [];
  const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
  const dec = rs.filter((r) => r.kind === "decode" && ours(r));
  for (const g of groups(dec, ["shape", "kvDtype", "layers"])) {
    const both = [...new Set(g.map((r) => r.context!))].sort((a, b) => b - a).map((ctx) => [
      g.find((r) => r.context === ctx && r.mode === "full" && num(r.ms) !== null), g.find((r) => r.context === ctx && r.mode === "duo" && num(r.ms) !== null),
    ]).find(([f, d]) => f && d);
    if (!both) continue;
    const [f, d] = both as [BenchRecord, BenchRecord];
    const v = (num(f.ms)! / num(d.ms)!) / (num(f.kvBytes)! / num(d.kvBytes)!);
    const bound = div(num(f.criticalBytes), num(d.criticalBytes)), bytesRatio = num(f.kvBytes)! / num(d.kvBytes)!;
    const why = bound === null ? "" : `; the head sharding allows ${(bound / bytesRatio).toFixed(2)} of the byte ratio`;
    out.push(`decode ${f.shape} ${f.kvDtype} @ ${f.context}: Duo speedup ÷ KV-byte ratio = ${v.toFixed(2)} (target ≥ 0.9: ${verdict(v >= 0.9)}${why})`);
  }
  for (const g of groups(rs.filter((r) => r.kind === "decode" && r.backend === "onnxruntime-web"), ["shape"])) {
    const ratios = g.flatMap((p) => {
      const m = dec.find((r) => r.mode === "full" && r.shape === p.shape && r.context === p.context && num(r.ms) !== null);
      return m ? [num(p.ms)! / num(m.ms)!] : [];
    });
    if (ratios.length) {
      const v = Math.min(...ratios);
      out.push(`full-attention decode ${g[0]!.shape}: at least ${v.toFixed(2)}x faster than onnxruntime-web over ${ratios.length} context(s) (target ≥ 1.5x: ${verdict(v >= 1.5)})`);
    }
  }
  for (const d of rs.filter((r) => r.kind === "prefill" && r.mode === "duo" && r.prefill === "window" && (r.context ?? 0) >= 8192 && num(r.totalMs) !== null)) {
    const f = rs.find((r) => r.kind === "prefill" && r.mode === "full" && r.shape === d.shape && r.kvDtype === d.kvDtype && r.context === d.context && r.chunk === d.chunk && num(r.totalMs) !== null);
    if (!f) continue;
    const v = num(d.totalMs)! / num(f.totalMs)!, target = num(d.layerRetrieval)! + 0.1;
    out.push(`prefill ${d.shape} ${d.kvDtype} window @ ${d.context}/${d.chunk}: Duo/full = ${v.toFixed(3)} (target ≤ ${target.toFixed(2)}: ${verdict(v <= target)})`);
  }
  for (const g of groups(rs.filter((r) => r.kind === "capacity"), ["shape", "kvDtype"])) {
    const f = g.find((r) => r.mode === "full"), d = g.find((r) => r.mode === "duo");
    const retrieval = num(dec.find((r) => r.shape === g[0]!.shape && r.mode === "duo")?.retrieval);
    if (!f || !d || num(f.context) === null || num(d.context) === null || retrieval === null) continue;
    const filled = num(d.filled) !== null && num(f.filled) !== null;
    const v = filled ? num(d.filled)! / num(f.filled)! : num(d.context)! / num(f.context)!;
    const target = 0.95 / retrieval;
    out.push(`capacity ${g[0]!.shape} ${g[0]!.kvDtype}: Duo holds ${v.toFixed(2)}x the context of full attention (${filled ? "filled" : "computed"}; target ≥ ${target.toFixed(2)}x at ${Math.round(retrieval * 100)}% retrieval: ${verdict(v >= target)})`);
  }
  return out;
}
