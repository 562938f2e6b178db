#!/usr/bin/env node
// The `duo` command. In a source checkout it runs the TypeScript sources through tsx (a dev dependency), so it is
// never stale; an installed package has no src/ and runs the bundled CLI in dist/.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const source = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
let run;
if (existsSync(source)) {
  await import("tsx/esm");
  ({ run } = await import(source));
} else {
  ({ run } = await import("../dist/cli.js"));
}
process.exitCode = await run(process.argv.slice(2));
