/**
 * `duo demo`: the main job. A Llama-3-8B-shaped attention stack (32 layers, 32 query / 8 KV heads, D = 128,
 * bf16 KV) run through full attention and DuoAttention side by side on the default backend: a chunked prefill,
 * then the caches grown to longer contexts and decode timed at each, then capacity and a correctness line.
 */
import { createBackend, BACKEND_CHOICES, type BackendChoice } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";
import { checkAgainstReference } from "../demo/check.ts";
import { decode, fillTo, prefill, SyntheticInputs } from "../demo/stack.ts";
import { KV_DTYPES, type KvDtype } from "../dtype.ts";
import { DuoAttention } from "../engine/duo.ts";
import type { Sequence } from "../engine/sequence.ts";
import { DEFAULT_RECENT, DEFAULT_SINK, PREFILL_MODES } from "../engine/options.ts";
import { checkOneOf, DuoError } from "../errors.ts";
import { loadPattern } from "../pattern/io.ts";
import { checkPatternShape } from "../pattern/pattern.ts";
import { sparsify } from "../pattern/sparsify.ts";
import { runtime } from "../runtime.ts";
import { getPreset } from "../schedule/presets.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import { syntheticSchedule } from "../schedule/synthetic.ts";
import type { PrefillMode } from "../cache/layer-shard.ts";
import { numberArg, parseArgs } from "./args.ts";
import { formatBytes, renderTable } from "../report/table.ts";
import { write } from "./io.ts";
import { Progress } from "./progress.ts";

const USAGE = `usage: duo demo [options]
  DuoAttention vs full attention on a Llama-3-8B-shaped attention stack, on this machine.
  --pattern DIR|URL    a published head pattern (default: a synthetic schedule with the same unevenness)
  --sparsity s         fraction of KV heads that stream (default 0.5)
  --backend b          ${BACKEND_CHOICES.join(" | ")} (default auto)
  --threads n          wasm workers (default: one per core)
  --contexts a,b,...   contexts to decode at (default 4096,8192,16384,32768)
  --memory size        KV memory for the run, split over the workers, e.g. 2.5GiB (default), 512MiB, 8GiB;
                       "max" = every worker's full 4 GiB. Full attention runs out of it first.
  --prefill-tokens n   tokens of the chunked prefill (default 512)
  --chunk n            prefill chunk (default 128)
  --steps n            timed decode steps per context, the fastest reported (default 3)
  --kv-dtype d         ${KV_DTYPES.join(" | ")} (default bf16)
  --prefill m          ${PREFILL_MODES.join(" | ")} (default upstream)
  --sink n, --recent n sink and recent tokens (default: the pattern's config.json values, else 64, 256)
`;

interface Row {
  context: number;
  full: { bytes: number; ms: number } | "oom";
  duo: { bytes: number; ms: number } | "oom";
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: ["pattern", "sparsity", "backend", "threads", "contexts", "memory", "prefill-tokens", "chunk", "steps", "kv-dtype", "prefill", "sink", "recent"],
    flags: ["help"],
  });
  if (args.flags.has("help")) {
    write(USAGE);
    return 0;
  }
  if (args.positional.length) throw new DuoError("INVALID_ARGUMENT", `duo demo takes no positional arguments (got ${args.positional.join(" ")}); see duo demo --help`);
  const shape = getPreset("llama-3-8b");
  const sparsity = numberArg(args, "sparsity", { min: 0, max: 1 }) ?? 0.5;
  const backendChoice = checkOneOf("--backend", args.values.get("backend") ?? "auto", BACKEND_CHOICES) as BackendChoice;
  const threads = numberArg(args, "threads", { min: 0, integer: true });
  const contexts = (args.values.get("contexts") ?? "4096,8192,16384,32768").split(",").map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new DuoError("INVALID_ARGUMENT", `--contexts must be positive integers separated by commas, got ${JSON.stringify(s)}`);
    return n;
  }).sort((a, b) => a - b);
  const memory = parseSize(args.values.get("memory") ?? "2.5GiB");
  const prefillTokens = numberArg(args, "prefill-tokens", { min: 1, integer: true }) ?? 512;
  const chunk = numberArg(args, "chunk", { min: 1, integer: true }) ?? 128;
  const steps = numberArg(args, "steps", { min: 1, integer: true }) ?? 3;
  const kvDtype = checkOneOf("--kv-dtype", args.values.get("kv-dtype") ?? "bf16", KV_DTYPES) as KvDtype;
  const mode = checkOneOf("--prefill", args.values.get("prefill") ?? "upstream", PREFILL_MODES) as PrefillMode;
  const sinkArg = numberArg(args, "sink", { min: 0, integer: true });
  const recentArg = numberArg(args, "recent", { min: 0, integer: true });

  // The head schedule: a published pattern (whose config.json gives S and R unless --sink / --recent do), or a
  // synthetic one with the same per-layer unevenness.
  let schedule: HeadSchedule, source: string;
  let window = { sinkSize: sinkArg ?? DEFAULT_SINK, recentSize: recentArg ?? DEFAULT_RECENT };
  const patternArg = args.values.get("pattern");
  if (patternArg) {
    const pattern = await loadPattern(patternArg);
    checkPatternShape(pattern, shape);
    schedule = sparsify(pattern, { sparsity });
    window = { sinkSize: sinkArg ?? pattern.sinkSize, recentSize: recentArg ?? pattern.recentSize };
    source = `published pattern ${patternArg}, sparsity ${sparsity} (numpy seed-42 tie-break)`;
  } else {
    schedule = syntheticSchedule(shape.numLayers, shape.numKvHeads, 1 - sparsity, 42);
    source = `synthetic schedule (no --pattern given): ${Math.round((1 - sparsity) * 100)}% retrieval, uneven per layer like the published ones`;
  }
  const counts = schedule.counts();
  const { sinkSize, recentSize } = window;

  // Full attention and DuoAttention each get a backend of their own with the same memory cap, split over its
  // workers (the wasm backend's shards; other backends ignore the cap), so neither's cache crowds the other's.
  const workers = Math.max(1, threads ?? runtime().cores);
  const backendOptions = { threads, ...(memory ? { memoryLimit: Math.floor(memory / workers) } : {}) };
  const backend = await createBackend(backendChoice, backendOptions);
  const fullBackend = await createBackend(backendChoice, backendOptions);
  try {
    const rt = runtime();
    write([
      `duo demo: DuoAttention vs full attention, ${shape.name}-shaped attention stack (${shape.numLayers} layers, ${shape.numHeads} query / ${shape.numKvHeads} KV heads, D = ${shape.headDim})`,
      `  runtime ${rt.name} ${rt.version} · backend ${backend.name}${backend.shards > 1 ? ` (${backend.shards} workers)` : ""} · KV ${kvDtype} · S = ${sinkSize}, R = ${recentSize} · prefill "${mode}"`,
      `  heads: ${source}`,
      `         ${schedule.retrievalHeads} of ${shape.numLayers * shape.numKvHeads} KV heads are retrieval heads; per layer ${Math.min(...counts)}..${Math.max(...counts)} (${counts.join(" ")})`,
      "",
    ].join("\n"));

    const maxContext = contexts[contexts.length - 1]! + steps + 2 + prefillTokens;
    const common = { shape, sinkSize, recentSize, kvDtype, prefill: mode, maxContext };
    const full = await DuoAttention.create({ ...common, backend: fullBackend, heads: HeadSchedule.full(shape.numLayers, shape.numKvHeads) });
    const duo = await DuoAttention.create({ ...common, backend, heads: schedule });
    const inputs = new SyntheticInputs(shape, chunk);

    // 1. Chunked prefill.
    write(`1. chunked prefill: ${prefillTokens} tokens in chunks of ${chunk} through all ${shape.numLayers} layers\n`);
    const prefillMs: Record<string, number> = {};
    const seqs: Record<"full" | "duo", Sequence | null> = { full: full.sequence(), duo: duo.sequence() };
    for (const name of ["full", "duo"] as const) {
      const p = new Progress(`${name} prefill`, Math.ceil(prefillTokens / chunk) * shape.numLayers);
      prefillMs[name] = await prefill(seqs[name]!, inputs, prefillTokens, (d) => p.update(d));
      p.done();
    }
    write(`   full ${(prefillMs.full! / 1000).toFixed(2)} s · duo ${(prefillMs.duo! / 1000).toFixed(2)} s · speedup ${(prefillMs.full! / prefillMs.duo!).toFixed(2)}x\n`);
    write(`   (a streaming head keeps S + R = ${sinkSize + recentSize} keys: the prefill gain grows with length — duo bench prefill measures it at 8K+)\n\n`);

    // 2. Grow the caches and time decode at each context; full attention may run out of memory first.
    write(`2. decode at longer contexts: caches grown with stored K/V (seq.fill), then ${steps} timed decode steps through all layers, full and duo in alternation (the fastest of each is shown)\n`);
    const rows: Row[] = [];
    for (const context of contexts) {
      const row: Row = { context, full: "oom", duo: "oom" };
      const live: { name: "full" | "duo"; seq: Sequence }[] = [];
      for (const name of ["full", "duo"] as const) {
        const seq = seqs[name];
        if (!seq) continue;
        const p = new Progress(`${name} to ${context}`, context);
        try {
          await fillTo(seq, inputs, context, (t) => p.update(t));
          p.done();
          live.push({ name, seq });
        } catch (e) {
          if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
          p.done("out of memory");
          seq.dispose(); // give the memory back; this column stays "out of memory" from here on
          seqs[name] = null;
        }
      }
      const ms = await decode(live.map((x) => x.seq), inputs, steps); // full and duo steps in alternation
      live.forEach(({ name, seq }, i) => (row[name] = { bytes: seq.bytes().total, ms: ms[i]! }));
      rows.push(row);
    }
    write(decodeTable(rows) + "\n");

    // 3. Capacity in the backend's memory.
    write(`3. capacity: ${capacityLine(backend, full, duo)}\n`);
    for (const s of Object.values(seqs)) s?.dispose();

    // 4. Correctness.
    const c = await checkAgainstReference(backend, shape, schedule, { sinkSize, recentSize, kvDtype, prefill: mode });
    const tol = 1e-4;
    const ok = c.retrievalMaxErr <= tol && c.streamingMaxErr <= tol;
    write(`\ncorrectness (layer ${c.layer}, ${c.tokens} tokens, a prefill chunk and 2 decode steps, vs the float64 reference backend):\n` +
      `   retrieval heads vs full attention: max |err| ${c.retrievalMaxErr.toExponential(2)} · streaming heads vs the masked reference: max |err| ${c.streamingMaxErr.toExponential(2)} · ${ok ? "OK" : "FAILED"} (tolerance ${tol})\n`);
    await full.dispose();
    await duo.dispose();
    return ok ? 0 : 1;
  } finally {
    await Promise.all([backend.dispose(), fullBackend.dispose()]);
  }
}

/** "2.5GiB", "512MiB", "1e9" → bytes; "max" → undefined (no cap below the backend's own). */
function parseSize(text: string): number | undefined {
  if (text === "max") return undefined;
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(B|KiB|MiB|GiB|TiB)?$/i.exec(text.trim());
  const units: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  const bytes = m ? Number(m[1]) * units[(m[2] ?? "B").toLowerCase()]! : NaN;
  if (!(bytes >= 1)) throw new DuoError("INVALID_ARGUMENT", `--memory must be a size like 2.5GiB, 512MiB or 1000000 (bytes), or "max"; got ${JSON.stringify(text)}`);
  return Math.floor(bytes);
}

function decodeTable(rows: Row[]): string {
  const cell = (x: Row["full"], f: (v: { bytes: number; ms: number }) => string) => (x === "oom" ? "out of memory" : f(x));
  return renderTable(
    ["context", "KV full", "KV duo", "memory ratio", "decode full ms/tok", "decode duo ms/tok", "speedup"],
    rows.map((r) => [
      String(r.context),
      cell(r.full, (v) => formatBytes(v.bytes)),
      cell(r.duo, (v) => formatBytes(v.bytes)),
      r.full !== "oom" && r.duo !== "oom" ? `${(r.full.bytes / r.duo.bytes).toFixed(2)}x` : "-",
      cell(r.full, (v) => v.ms.toFixed(1)),
      cell(r.duo, (v) => v.ms.toFixed(1)),
      r.full !== "oom" && r.duo !== "oom" ? `${(r.full.ms / r.duo.ms).toFixed(2)}x` : r.duo !== "oom" ? "full ran out" : "-",
    ]),
    { format: "markdown" },
  );
}

/**
 * The largest context each engine fits: retrieval pages are striped over the shards (each holds 1/shards of them),
 * streaming rings live whole on one shard; the fullest shard decides.
 */
function capacityLine(backend: Backend, full: DuoAttention, duo: DuoAttention): string {
  const cap = Array.from({ length: backend.shards }, (_, s) => backend.memory(s).capacity);
  if (!cap.every(Number.isFinite)) return `the ${backend.name} backend reports no memory limit here`;
  const fits = (e: DuoAttention) => {
    const perHeadToken = 2 * (e.kvDtype === "f32" ? 4 : 2) * e.shape.headDim;
    const ring = (e.sinkSize + e.recentSize) * perHeadToken;
    const nRet = e.schedule.retrievalHeads;
    return Math.min(...cap.map((c, s) => {
      const nStr = e.placement.reduce((a, layer) => a + layer[s]!.streaming.length, 0);
      return nRet === 0 ? Infinity : Math.floor(((c - nStr * ring) * backend.shards) / (nRet * perHeadToken));
    }));
  };
  const f = fits(full), d = fits(duo);
  const total = cap.reduce((a, b) => a + b, 0);
  return `in ${formatBytes(total)} (${backend.shards} × ${formatBytes(cap[0]!)}), full attention fits ${f.toLocaleString("en-US")} tokens, DuoAttention ${d.toLocaleString("en-US")} (${(d / f).toFixed(2)}x)`;
}
