/** `duo bench` command-line options: parsed, validated, with defaults. Bad input throws INVALID_ARGUMENT. */
import { BACKEND_CHOICES, type BackendChoice } from "../../backend/registry.ts";
import { KV_DTYPES, type KvDtype } from "../../dtype.ts";
import { checkOneOf, DuoError } from "../../errors.ts";
import { PRESETS } from "../../schedule/presets.ts";
import { numberArg, parseArgs } from "../args.ts";

export const WHATS = ["decode", "prefill", "all", "capacity", "accuracy"] as const;
export const SUITES = ["paper"] as const;
export const CAPACITY_MODES = ["computed", "fill"] as const;

export const USAGE = `usage: duo bench <decode|prefill|all> [options]
       duo bench --suite paper [--out DIR] [options]
       duo bench capacity [--memory BYTES] [--shape name] [--pattern DIR] [--sparsity s]
         tokens that fit in one budget for full / Duo attention with bf16 and int4 caches, each filled until CAPACITY
         (wasm), and the same as a formula for 80 GB and 141 GB GPUs beside the paper's 3.3M
       duo bench accuracy [--contexts T] [--shape name]
         attention-output error of int8 / int4 caches against bf16 (and f32), random and outlier-channel keys,
         retrieval and streaming heads
  Attention benchmarks: full attention vs DuoAttention on the same backend, the machine's ceilings in this
  runtime, and peers (plain TypeScript, onnxruntime-web, onnxruntime-node) for full-attention decode.
  --backend b          ${BACKEND_CHOICES.join(" | ")} (default auto)
  --threads n          wasm workers or native threads, also used for the ceilings and onnxruntime (default: one per core)
  --shape name         model preset (default: llama-3-8b and llama-2-7b); one of ${Object.keys(PRESETS).join(", ")}
  --pattern DIR|URL    head pattern (default: the shape's published pattern from $DUO_PATTERNS_DIR or
                       ../shared/patterns; else a synthetic schedule with the same unevenness)
  --sparsity s         fraction of KV heads that stream (default 0.5 for llama-3-8b, 0.75 for llama-2-7b)
  --contexts a,b,...   decode contexts (default 8192,16384,32768,65536); for "prefill", the prefill contexts
  --prefill-contexts   prefill contexts with "all" (default 8192)
  --chunk n[,n...]     prefill chunk(s) in tokens (default 1024)
  --layers n           decode: time n layers spread over the model, scaled to all by KV bytes (default all)
  --kv-dtype d[,d...]  ${KV_DTYPES.join(" | ")} (default bf16)
  --capacity m         ${CAPACITY_MODES.join(" | ")}: compute the largest context from allocation growth (default),
                       or also fill every layer until the backend's memory is full (slow: it writes all of it)
  --budget ms          time budget per measurement (default 1500)
  --memory BYTES       capacity: the budget (512M, 2G, 1.5GiB; K/M/G = 1024-based; default: free memory - 1 GiB)
  --no-peers           skip the peers
  --json               one JSON line per measurement instead of tables
  --out DIR            --suite paper: where results.jsonl, results.md and the SVG plots go (default ./bench-out)
`;

export interface BenchOptions {
  what: (typeof WHATS)[number] | null;
  suite: (typeof SUITES)[number] | null;
  backend: BackendChoice;
  threads: number | undefined;
  shape: string | undefined;
  pattern: string | undefined;
  sparsity: number | undefined;
  contexts: number[] | undefined;
  prefillContexts: number[] | undefined;
  chunks: number[] | undefined;
  layers: number | undefined;
  dtypes: KvDtype[];
  capacity: (typeof CAPACITY_MODES)[number] | undefined;
  budgetMs: number;
  /** capacity: the memory budget in bytes */
  memory: number | undefined;
  peers: boolean;
  json: boolean;
  out: string;
  help: boolean;
}

/** "8192,32K,1M" → [8192, 32768, 1048576]: positive integers, K/M = 1024-based. */
export function parseTokenList(name: string, raw: string): number[] {
  const list = raw.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    const m = /^(\d+)([kKmM]?)$/.exec(s);
    const n = m ? Number(m[1]) * (m[2] ? (/k/i.test(m[2]) ? 1024 : 1 << 20) : 1) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new DuoError("INVALID_ARGUMENT", `--${name} takes positive token counts separated by commas (8192,16K,1M), got ${JSON.stringify(s)}`);
    return n;
  });
  if (!list.length) throw new DuoError("INVALID_ARGUMENT", `--${name} needs at least one token count`);
  return [...new Set(list)].sort((a, b) => a - b);
}

export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  const args = parseArgs(argv, {
    values: ["suite", "backend", "threads", "shape", "pattern", "sparsity", "contexts", "prefill-contexts", "chunk", "layers", "kv-dtype", "capacity", "budget", "out", "memory"],
    flags: ["json", "no-peers", "help"],
  });
  const help = args.flags.has("help");
  const suite = args.values.has("suite") ? checkOneOf("--suite", args.values.get("suite"), SUITES) : null;
  let what: BenchOptions["what"] = null;
  if (!help) {
    if (suite && args.positional.length) throw new DuoError("INVALID_ARGUMENT", `--suite ${suite} runs its own set; drop "${args.positional.join(" ")}"`);
    if (!suite) {
      if (args.positional.length !== 1) {
        throw new DuoError("INVALID_ARGUMENT", `${args.positional.length ? "give one of" : "missing what to measure:"} ${WHATS.join(" | ")} (or --suite paper); see duo bench --help`);
      }
      what = checkOneOf("what to measure", args.positional[0], WHATS);
    }
  }
  const list = (name: string) => (args.values.has(name) ? parseTokenList(name, args.values.get(name)!) : undefined);
  const dtypes = (args.values.get("kv-dtype") ?? "bf16").split(",").map((d) => checkOneOf("--kv-dtype", d.trim(), KV_DTYPES));
  const out = args.values.get("out") ?? "./bench-out";
  if (args.values.has("out") && !suite) throw new DuoError("INVALID_ARGUMENT", "--out applies to --suite paper only");
  return {
    what, suite, help,
    backend: checkOneOf("--backend", args.values.get("backend") ?? "auto", BACKEND_CHOICES),
    threads: numberArg(args, "threads", { min: 0, max: 256, integer: true }),
    shape: args.values.get("shape"),
    pattern: args.values.get("pattern"),
    sparsity: numberArg(args, "sparsity", { min: 0, max: 1 }),
    contexts: list("contexts"),
    prefillContexts: list("prefill-contexts"),
    chunks: list("chunk"),
    layers: numberArg(args, "layers", { min: 1, integer: true }),
    dtypes: [...new Set(dtypes)],
    capacity: args.values.has("capacity") ? checkOneOf("--capacity", args.values.get("capacity"), CAPACITY_MODES) : undefined,
    budgetMs: numberArg(args, "budget", { min: 1, max: 600000 }) ?? 1500,
    memory: args.values.has("memory") ? parseBytes("--memory", args.values.get("memory")!) : undefined,
    peers: !args.flags.has("no-peers"),
    json: args.flags.has("json"),
    out,
  };
}

/** "512M", "2G", "1.5GiB", "1000000" → bytes (K/M/G are 1024-based), at least 1 MiB. */
export function parseBytes(name: string, raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$/i.exec(raw.trim());
  const n = m ? Math.floor(Number(m[1]) * 1024 ** " kmg".indexOf((m[2] || " ").toLowerCase())) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 << 20) throw new DuoError("INVALID_ARGUMENT", `${name} takes a byte count of at least 1 MiB (512M, 2G, 1.5GiB), got ${JSON.stringify(raw)}`);
  return n;
}
