#!/usr/bin/env node
// The `duo` command. In a source checkout it runs the TypeScript sources (through tsx under Node; Bun and Deno run
// TypeScript themselves), so it is never stale; an installed package has no src/ and runs the bundled dist/cli.js.
// `bun run <script>` starts package scripts with Node unless told --bun: when Bun started us, hand over to Bun,
// so that `bun run demo` demonstrates Bun.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const self = fileURLToPath(import.meta.url);
const bun = process.env.npm_execpath;
if (!process.versions.bun && process.env.npm_config_user_agent?.startsWith("bun/") && bun && existsSync(bun)) {
  const r = spawnSync(bun, [self, ...process.argv.slice(2)], { stdio: "inherit" });
  process.exit(r.status ?? 1);
}

const source = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
let run;
if (existsSync(source)) {
  if (!process.versions.bun && !globalThis.Deno) await import("tsx/esm");
  ({ run } = await import(source));
} else {
  ({ run } = await import("../dist/cli.js"));
}
process.exitCode = await run(process.argv.slice(2));
