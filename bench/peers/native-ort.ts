/**
 * Native decode attention vs onnxruntime-node's GroupQueryAttention, and Duo vs full on native (issue 16's peer
 * targets): one layer of the shape (default Llama-3-8B: 32 query / 8 KV heads, D = 128), the layer of the published
 * pattern whose retrieval-head count is nearest the model's mean at the given sparsity, f16 KV on both sides
 * (ORT's CPU GQA has no bf16; f16 reads the same bytes), each thread count in turn, the three timed in alternation.
 *
 *   node --import tsx bench/peers/native-ort.ts [--shape llama-3-8b] [--sparsity 0.5] [--contexts 4096,16384]
 *     [--threads 1,2] [--dtype f16|f32] [--budget 3000] [--json]
 *   bun bench/peers/native-ort.ts ...          deno run -A bench/peers/native-ort.ts ...
 *
 * Under Bun and Deno onnxruntime-node refuses f16 tensors ("not enough space"): use --dtype f32 there.
 */
import { resolveCase, typicalLayer } from "../../src/cli/bench/cases.ts";
import { compareNativeOrt, formatRow, type PeerDtype } from "./native-vs-ort.ts";

const g = globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } };
const argv = g.Deno?.args ?? g.process?.argv.slice(2) ?? [];
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const dtype = opt("dtype", "f16");
if (dtype !== "f16" && dtype !== "f32") throw new Error(`--dtype must be f16 or f32 (what ORT's CPU GQA stores), got ${dtype}`);
const json = argv.includes("--json");

const c = await resolveCase(opt("shape", "llama-3-8b"), undefined, Number(opt("sparsity", "0.5")));
const layer = typicalLayer(c.schedule);
const retrieval = c.schedule.mask[layer]!;
console.error(`${c.shape.name}, layer ${layer} of ${c.source}: ${retrieval.filter(Boolean).length} of ${retrieval.length} KV heads retrieval, S = ${c.sinkSize}, R = ${c.recentSize}`);
await compareNativeOrt({
  shape: c.shape, retrieval, sinkSize: c.sinkSize, recentSize: c.recentSize, dtype: dtype as PeerDtype,
  contexts: opt("contexts", "4096,16384").split(",").map(Number), threads: opt("threads", "1,2").split(",").map(Number),
  budgetMs: Number(opt("budget", "3000")), note: (t) => console.error(t),
  onRow: (row) => console.log(json ? JSON.stringify({ shape: c.shape.name, layer, ...row }) : formatRow(row).join("\n")),
});
