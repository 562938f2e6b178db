// cuda/tools/gpu_check.py, the check a GPU machine runs (cuda/gpu-check.sh), prints every result the moment it has
// it, also into a pipe: a run cut short by a time-out still leaves what it did. Run here on the library the CUDA
// tests use (helpers/cuda-target.ts); needs python3 with numpy, else skipped.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { defaultLibraryPath } from "../ffi/load.ts";

const script = decodeURIComponent(new URL("../cuda/tools/gpu_check.py", import.meta.url).pathname);
const numpy = spawnSync("python3", ["-c", "import numpy"]).status === 0;
const skip = cudaTarget.skip || (numpy ? false : "skipped: python3 with numpy not found");

test(`gpu_check.py (${cudaTarget.label}) prints its first conformance result while still running, through a pipe`, { skip }, async () => {
  const child = spawn("python3", [script, "--lib", cudaTarget.library ?? defaultLibraryPath(), "--quick", "--no-bench"], { stdio: ["ignore", "pipe", "inherit"] });
  let text = "";
  const seen = await new Promise<{ line: string; running: boolean }>((resolve) => {
    child.stdout.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      const line = text.split("\n").find((l) => l.startsWith("conformance "));
      if (line) resolve({ line, running: child.exitCode === null });
    });
    child.on("close", () => resolve({ line: "", running: false }));
  });
  child.kill();
  assert.match(seen.line, /^conformance f32  D= 64 G=1: \d+ attends, worst error \/ tolerance \d/, `output so far: ${text}`);
  assert.ok(seen.running, "the first result arrived only when the process ended (output buffered)");
});
