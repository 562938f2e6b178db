import assert from "node:assert/strict";
import { test } from "node:test";
import { jsonLine, record } from "../src/cli/bench/record.ts";
import { capacityTable, decodeTable, peerTable, prefillTable, targetLines } from "../src/cli/bench/report.ts";
import { formatBytes, formatCell, formatRatio, renderTable } from "../src/report/table.ts";

test("bench table: text tables align numbers right and text left; markdown tables mark numeric columns", () => {
  const rows = [["llama-3-8b", 8192, 1.5], ["llama-2-7b", 65536, null]];
  const text = renderTable(["shape", "context", "ms"], rows);
  assert.equal(text, [
    "shape       context   ms",
    "----------  -------  ---",
    "llama-3-8b     8192  1.5",
    "llama-2-7b    65536    -",
    "",
  ].join("\n"));
  const md = renderTable(["shape", "context", { title: "note", align: "left" }], [["a|b", 1, "x"]], { format: "markdown" });
  assert.equal(md, ["| shape | context | note |", "|-------|--------:|------|", "| a\\|b  |       1 | x    |", ""].join("\n"));
  assert.equal(formatCell(12345.6), "12346");
  assert.equal(formatCell(0.012345), "0.0123");
  assert.equal(formatRatio(2.004), "2.00x");
  assert.equal(formatRatio(null), "-");
  assert.equal(formatRatio(Infinity), "-");
  assert.equal(formatBytes(1023.9 * 2 ** 20), "1.00 GiB");
  assert.equal(formatBytes(536 * 2 ** 20), "536 MiB");
  assert.equal(formatBytes(16 * 2 ** 30), "16.0 GiB");
  assert.equal(formatBytes(131072), "128 KiB");
  assert.equal(formatBytes(100), "100 B");
});

const base = { backend: "wasm", runtime: "node 20.20.2", threads: 2 };

test("bench json: every record carries the common fields; numbers keep 4 significant digits", () => {
  const r = record("decode", base, { mode: "duo", context: 8192, ms: 12.3456789, kvBytes: 1 << 30, gbps: 87.0123456, limitGbps: 20 });
  const parsed = JSON.parse(jsonLine(r));
  for (const k of ["kind", "backend", "runtime", "threads", "mode", "context", "chunk", "ms", "kvBytes", "gbps", "limitGbps"]) {
    assert.ok(k in parsed, `field ${k}`);
  }
  assert.equal(parsed.ms, 12.35);
  assert.equal(parsed.gbps, 87.01);
  assert.equal(parsed.kvBytes, 1 << 30, "integers are kept exactly");
  assert.equal(parsed.chunk, null);
  assert.ok(!jsonLine(r).includes("\n"));
});

test("bench report: decode, peer, prefill and capacity tables compute the ratios from the records", () => {
  const dec = (mode: "full" | "duo", context: number, ms: number | null, kvBytes: number) =>
    record("decode", base, { mode, context, ms, kvBytes, gbps: ms === null ? null : kvBytes / (ms * 1e6), limitGbps: 10, shape: "llama-3-8b", kvDtype: "bf16", layers: 32, heads: "p", retrieval: mode === "full" ? 1 : 0.5 });
  const rs = [
    dec("full", 8192, 100, 2e9), dec("duo", 8192, 55, 1e9),
    dec("full", 65536, null, 16e9), dec("duo", 65536, 400, 8e9),
    record("decode", { ...base, backend: "onnxruntime-web" }, { mode: "full", context: 8192, ms: 200, msMeasured: 6.25, kvBytes: 2e9, shape: "llama-3-8b", kvDtype: "f16", peer: true }),
    record("prefill", base, { mode: "full", prefill: "upstream", context: 8192, chunk: 1024, totalMs: 10000, flop: 100, shape: "llama-3-8b", kvDtype: "bf16", layer: 9, layerRetrieval: 1 }),
    record("prefill", base, { mode: "duo", prefill: "window", context: 8192, chunk: 1024, totalMs: 5500, flop: 52, shape: "llama-3-8b", kvDtype: "bf16", layer: 9, layerRetrieval: 0.5 }),
    record("capacity", base, { mode: "full", context: 65000, filled: 64512, bytesPerToken: 131072, capacityBytes: 2 ** 33, shape: "llama-3-8b", kvDtype: "bf16" }),
    record("capacity", base, { mode: "duo", context: 130000, filled: 129024, bytesPerToken: 65536, capacityBytes: 2 ** 33, shape: "llama-3-8b", kvDtype: "bf16" }),
  ];
  const d = decodeTable(rs);
  const row8k = d.split("\n").find((l) => /^\s*8192 /.test(l))!;
  assert.match(row8k, /2\.00x/, "bytes ratio");
  assert.match(row8k, /1\.82x/, "speedup 100/55");
  assert.match(row8k, /0\.91x/, "speedup ÷ bytes ratio");
  assert.match(row8k, /20\.0 \(200%\)/, "GB/s and the fraction of the limit");
  assert.match(d.split("\n").find((l) => /^\s*65536 /.test(l))!, /does not fit/);
  const p = peerTable(rs);
  assert.match(p, /ort-web f16, 2t/);
  assert.match(p.split("\n").find((l) => /^\s*8192 /.test(l))!, /2\.00x/, "ours vs onnxruntime-web");
  const pf = prefillTable(rs);
  const prow = pf.split("\n").find((l) => l.startsWith("window"))!;
  assert.match(prow, /0\.550/, "measured duo/full");
  assert.match(prow, /0\.520/, "theory from FLOP");
  assert.match(prow, /≤ 0\.60/, "target r + 0.1 in window mode at 8K");
  const c = capacityTable(rs);
  assert.match(c, /2\.00x/);
  assert.match(c, /64512/);
  assert.deepEqual(targetLines(rs), [
    "decode llama-3-8b bf16 @ 8192: Duo speedup ÷ KV-byte ratio = 0.91 (target ≥ 0.9: met)",
    "full-attention decode llama-3-8b: at least 2.00x faster than onnxruntime-web over 1 context(s) (target ≥ 1.5x: met)",
    "prefill llama-3-8b bf16 window @ 8192/1024: Duo/full = 0.550 (target ≤ 0.60: met)",
    "capacity llama-3-8b bf16: Duo holds 2.00x the context of full attention (filled; target ≥ 1.90x at 50% retrieval: met)",
  ]);
});

test("bench report: on the native backend the peer target is onnxruntime-node (its native CPU kernels), not onnxruntime-web", () => {
  const nat = { ...base, backend: "native" };
  const peer = (backend: string, ms: number) =>
    record("decode", { ...base, backend }, { mode: "full", context: 8192, ms, msMeasured: ms / 32, kvBytes: 2e9, shape: "llama-3-8b", kvDtype: "f16", peer: true });
  const rs = [
    record("decode", nat, { mode: "full", context: 8192, ms: 100, kvBytes: 2e9, shape: "llama-3-8b", kvDtype: "bf16", layers: 32 }),
    peer("onnxruntime-web", 400), peer("onnxruntime-node", 130),
  ];
  assert.deepEqual(targetLines(rs), ["full-attention decode llama-3-8b: at least 1.30x faster than onnxruntime-node over 1 context(s) (target ≥ 1.5x: NOT met)"]);
});
