#!/usr/bin/env node
// The `duo` command. In an installed package it runs the bundled CLI; in a source checkout it runs the TypeScript
// sources through tsx (a dev dependency), so `npx duo` works before `npm run build`.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const built = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
if (existsSync(built)) {
  const { run } = await import(built);
  process.exitCode = await run(process.argv.slice(2));
} else {
  await import("tsx/esm");
  const { run } = await import("../src/cli/main.ts");
  process.exitCode = await run(process.argv.slice(2));
}
