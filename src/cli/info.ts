/** `duo info`: what this runtime can do and which backends are usable here (and if not, why). */
import { probeAll } from "../backend/registry.ts";
import { wasmKernels } from "../backend/wasm.ts";
import { runtime } from "../runtime.ts";
import { write } from "./io.ts";

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes("--json");
  const rt = runtime();
  const backends = await probeAll();
  if (json) {
    write(JSON.stringify({ runtime: rt, backends }) + "\n");
    return 0;
  }
  const yes = (b: boolean) => (b ? "yes" : "no");
  write(
    [
      `runtime: ${rt.name} ${rt.version}`,
      `  cores: ${rt.cores}   wasm: ${yes(rt.wasm)}   wasm simd128: ${yes(rt.wasmSimd)}   relaxed simd: ${yes(rt.wasmRelaxedSimd)}   workers: ${yes(rt.workers)}   SharedArrayBuffer: ${yes(rt.sharedArrayBuffer)}   ffi: ${rt.ffi}`,
      "backends:",
      ...backends.map((b) => `  ${b.name.padEnd(9)} ${b.usable ? "usable" : `not usable: ${b.reason}`}${b.name === "wasm" && b.usable ? ` (kernels: ${wasmKernels()})` : ""}${"isa" in b && b.usable ? ` (kernels: ${b.isa})` : ""}`),
      "",
    ].join("\n"),
  );
  return 0;
}
