// The transposed matmul of the optimize step's backward (dx = dy·W, BackwardKernels.linearBackward) against the
// forward matmul (y = x·Wᵀ, ModelKernels.matmul) on the same matrix, tokens and kernel set: GFLOP/s of each and their
// ratio. Shapes: the four linear layers of a 0.5B Qwen2 (hidden 896, MLP 4864, 2 KV heads of 64), in the dtypes the
// kernels read. Both run alternately, best of `rounds`, so a slow spell on a shared machine hits both alike.
// Run: node --import tsx bench/identify-linear.ts [T] [sets] [dtypes] [rounds], e.g.
//   node --import tsx bench/identify-linear.ts 1024 native:1,native:2,wasm f32,bf16 3
import { createModelKernels, type ModelKernels } from "../src/model/kernels.ts";
import { createBackwardKernels } from "../src/identify/backward-kernels.ts";
import { f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";

const argv = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? process.argv.slice(2);
const T = Number(argv[0] ?? 1024), sets = (argv[1] ?? "native:2,wasm").split(","), dtypes = (argv[2] ?? "f32,bf16,f16").split(",") as ("f32" | "bf16" | "f16")[];
const rounds = Number(argv[3] ?? 3);
const shapes: [string, number, number][] = [["q/o [896, 896]", 896, 896], ["k/v [128, 896]", 128, 896], ["gate/up [4864, 896]", 4864, 896], ["down [896, 4864]", 896, 4864]];

for (const set of sets) {
  const [name, threads] = set.split(":") as ["native" | "wasm", string | undefined];
  const kn: ModelKernels = await createModelKernels(name, { threads: Number(threads ?? 1) });
  const bk = await createBackwardKernels(kn, { threads: Number(threads ?? 1) });
  for (const dtype of dtypes) {
    for (const [label, rows, cols] of shapes) {
      const m = kn.matrix(rows, cols, dtype), n = rows * cols;
      const vals = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.05);
      const bytes = dtype === "f32" ? new Uint8Array(vals.buffer) : new Uint8Array(Uint16Array.from(vals, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits).buffer);
      kn.write(m, 0, bytes);
      const dy = Float32Array.from({ length: T * rows }, (_, i) => Math.cos(i)), dx = new Float32Array(T * cols);
      const x = kn.activations(T * cols), y = kn.activations(T * rows);
      kn.upload(x, Float32Array.from({ length: T * cols }, (_, i) => Math.cos(i)));
      const best = { bwd: Infinity, fwd: Infinity };
      for (let r = 0; r < rounds; r++) {
        let t0 = performance.now();
        bk.linearBackward(dx, dy, m, T, false);
        best.bwd = Math.min(best.bwd, performance.now() - t0);
        t0 = performance.now();
        kn.matmul(y, x, m, T);
        kn.download(y, new Float32Array(0));
        best.fwd = Math.min(best.fwd, performance.now() - t0);
      }
      const gf = (2 * T * n) / 1e6;
      console.log(`${set} ${dtype} ${label} T=${T}: transposed ${best.bwd.toFixed(1)} ms = ${(gf / best.bwd).toFixed(0)} GFLOP/s; forward ${best.fwd.toFixed(1)} ms = ${(gf / best.fwd).toFixed(0)} GFLOP/s; transposed/forward time ${(best.bwd / best.fwd).toFixed(2)}`);
      kn.release(x);
      kn.release(y);
    }
  }
  kn.dispose();
}
