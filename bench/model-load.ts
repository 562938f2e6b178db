/**
 * Load speed of the native backend against the disk: LlamaModel.load (backend and kernels "native") timed against
 * `cat FILES > /dev/null` of the same checkpoint files, in alternation, `--rounds` times; both read from the page
 * cache once the first cat has warmed it (the machine's RAM must hold the files: a 1-2 GB model), or with --cold each
 * from the disk (the files' pages evicted before every cat and load). Two loads each
 * round: "mapped" (the default, LoadOptions.mmap: every tensor, f16 / bf16 included, is a read-only view of the mapped
 * file, native/src/map.c; only rows llama.cpp interleaved are still copied) and "copied" (mmap false: every matrix
 * pread straight into the library's memory, native/src/file.c).
 * Prints GB/s of each (checkpoint bytes ÷ seconds), the ratios load ÷ cat (target ≥ 0.7), the part of the load between
 * its first and last progress call and its GB/s (the weights after the first tensor; the rest is config, tokenizer and
 * engine, a fixed cost that a small model shows and a 16 GB one does not), and the first write to as
 * many bytes of fresh memory, one byte per page: a copy goes into fresh pages, cat into one small buffer, so where the
 * host makes page faults dear (a VM whose host backs guest memory lazily) that figure, not the copy, bounds a copied
 * load. The model is written by `duo make-model`'s code when `--model` is not given (random weights, in a temporary
 * directory deleted afterwards; --format gguf writes a GGUF file, for q8_0 / q4_0 / q4_k). Each load also reports the
 * most the JS heap grew during it (heapUsed, sampled at every progress call and at the end): the weights must not pass
 * through it. --mapped-only skips the copied load and the first touch (a checkpoint of more than half the RAM has no
 * room for a copy beside its page cache).
 *
 *   node --import tsx bench/model-load.ts [--model DIR|FILE.gguf] [--shape llama-3-1b] [--dtype bf16] [--format safetensors]
 *                                         [--rounds 3] [--threads N] [--cold] [--mapped-only]
 *   bun bench/model-load.ts ...          deno run -A bench/model-load.ts ...
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaModel } from "../src/model/llama.ts";
import { RANDOM_WEIGHTS_NOTE, type WriteDtype, writeRandomModel } from "../src/model/write.ts";
import { runtime } from "../src/runtime.ts";

const args = (globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } });
const argv = args.Deno?.args ?? args.process?.argv.slice(2) ?? [];
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const rounds = Number(opt("rounds", "3"));
/** --cold: evict the checkpoint's pages from the page cache before every cat and load (GNU dd iflag=nocache count=0:
 *  this file's pages only, not the machine's whole cache), so each reads the disk */
const cold = argv.includes("--cold");
const threads = argv.includes("--threads") ? Number(opt("threads", "2")) : undefined;
const mappedOnly = argv.includes("--mapped-only");
const g = globalThis as { process?: { memoryUsage(): { heapUsed: number } }; Deno?: { memoryUsage(): { heapUsed: number } } };
const heapUsed = () => (g.process ?? g.Deno)!.memoryUsage().heapUsed;

let dir = opt("model", "");
let tmp: string | undefined;
if (!dir) {
  tmp = mkdtempSync(join(tmpdir(), "duo-load-bench-"));
  const shape = opt("shape", "llama-3-1b"), dtype = opt("dtype", "bf16") as WriteDtype, format = opt("format", "safetensors") as "safetensors" | "gguf";
  console.log(`writing a ${shape} ${dtype} ${format} model to ${tmp} (${RANDOM_WEIGHTS_NOTE})`);
  const w = await writeRandomModel(tmp, { shape, dtype, format });
  dir = w.gguf ?? tmp;
}

try {
  const files = dir.endsWith(".gguf") ? [dir] : readdirSync(dir).filter((f) => f.endsWith(".safetensors")).map((f) => join(dir, f));
  const bytes = files.reduce((s, f) => s + statSync(f).size, 0);
  const gb = bytes / 1e9;
  const rt = runtime();
  console.log(`${rt.name} ${rt.version}: ${files.length} file(s), ${gb.toFixed(2)} GB; load = LlamaModel.load(backend native${threads ? `, ${threads} threads` : ""}), mapped (mmap true) and copied (mmap false); cat = cat FILES > /dev/null${cold ? "; each from a cold cache (--cold)" : ""}`);

  const evict = () => {
    if (!cold) return;
    for (const f of files) {
      const r = spawnSync("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
      if (r.status !== 0) throw new Error(`evicting ${f} from the page cache (dd iflag=nocache) failed: ${r.stderr}`);
    }
  };
  const cat = () => {
    evict();
    const t0 = performance.now();
    const r = spawnSync("sh", ["-c", `cat ${files.map((f) => `'${f}'`).join(" ")} > /dev/null`]);
    if (r.status !== 0) throw new Error(`cat failed: ${r.stderr}`);
    return (performance.now() - t0) / 1000;
  };
  // The load's seconds, and the part of them between its first and last progress call (the weights, less the first
  // piece) with the bytes loaded in it: what the rest (config, tokenizer, engine) costs shows as the difference.
  let weightsS = 0, weightsGb = 0, heapGrowth = 0;
  const load = async (mmap: boolean) => {
    let first = 0, last = 0, firstBytes = 0, lastBytes = 0;
    evict();
    const heap0 = heapUsed();
    let heapPeak = heap0;
    const t0 = performance.now();
    const m = await LlamaModel.load(dir, {
      backend: "native", kernels: "native", threads, maxContext: 1024, mmap,
      onProgress: (loaded) => {
        last = performance.now(), lastBytes = loaded, first ||= (firstBytes = loaded, last);
        heapPeak = Math.max(heapPeak, heapUsed());
      },
    });
    const s = (performance.now() - t0) / 1000;
    heapGrowth = Math.max(heapPeak, heapUsed()) - heap0;
    weightsS = (last - first) / 1000;
    weightsGb = (lastBytes - firstBytes) / 1e9;
    await m.dispose();
    return s;
  };

  // The first write to fresh memory, one byte per 4 KiB page of as many bytes as the checkpoint: what the page
  // faults alone cost (a load copies into fresh memory; cat reuses one small buffer). In a VM whose host backs guest
  // memory lazily this, not the copy, bounds the load.
  const firstTouch = () => {
    const t0 = performance.now();
    for (let left = bytes; left > 0; left -= 2 ** 30) {
      const b = new Uint8Array(Math.min(left, 2 ** 30));
      for (let i = 0; i < b.length; i += 4096) b[i] = 1;
    }
    return (performance.now() - t0) / 1000;
  };

  cat(); // warm the page cache
  let bestCat = Infinity, bestMapped = Infinity, bestCopied = Infinity, bestTouch = Infinity;
  const gbs = (s: number) => `${(gb / s).toFixed(2)} GB/s (${s.toFixed(2)} s)`;
  for (let r = 0; r < rounds; r++) {
    const c = cat();
    const mb = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    const mapped = await load(true), mappedWeights = `${weightsS.toFixed(2)} s of it (${(weightsGb / weightsS).toFixed(2)} GB/s), JS heap +${mb(heapGrowth)}`;
    const copied = mappedOnly ? Infinity : await load(false), copiedWeights = mappedOnly ? "-" : `${weightsS.toFixed(2)} s (${(weightsGb / weightsS).toFixed(2)} GB/s), JS heap +${mb(heapGrowth)}`;
    const f = mappedOnly ? Infinity : firstTouch(); // 16 GB of fresh memory would not fit beside a 16 GB page cache
    bestCat = Math.min(bestCat, c);
    bestMapped = Math.min(bestMapped, mapped);
    bestCopied = Math.min(bestCopied, copied);
    bestTouch = Math.min(bestTouch, f);
    const copiedPart = mappedOnly ? "" : `; copied ${gbs(copied)}, weights ${copiedWeights}; first touch of fresh memory ${gbs(f)}`;
    console.log(`round ${r + 1}: cat ${gbs(c)}, mapped ${gbs(mapped)}, weights ${mappedWeights}${copiedPart}; ` +
      `load/cat mapped ${(c / mapped).toFixed(2)}${mappedOnly ? "" : `, copied ${(c / copied).toFixed(2)}`}`);
  }
  if (mappedOnly) console.log(`best of ${rounds}: cat ${(gb / bestCat).toFixed(2)} GB/s, mapped ${(gb / bestMapped).toFixed(2)} GB/s; load/cat mapped ${(bestCat / bestMapped).toFixed(2)} (target ≥ 0.7)`);
  else {
    console.log(`best of ${rounds}: cat ${(gb / bestCat).toFixed(2)} GB/s, mapped ${(gb / bestMapped).toFixed(2)} GB/s, copied ${(gb / bestCopied).toFixed(2)} GB/s, first touch ${(gb / bestTouch).toFixed(2)} GB/s; ` +
      `load/cat mapped ${(bestCat / bestMapped).toFixed(2)}, copied ${(bestCat / bestCopied).toFixed(2)} (target ≥ 0.7); mapped/copied speed ${(bestCopied / bestMapped).toFixed(2)}x`);
  }
} finally {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}
