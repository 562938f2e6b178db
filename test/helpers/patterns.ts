/**
 * Where the published head patterns are (test data, never copied into the repo): $DUO_PATTERNS_DIR, else
 * ../shared/patterns beside the repository; one folder per model, holding the two files or (upstream's
 * attn_patterns/<model>/<setting>/ layout) one setting folder that does. Tests that need them skip with
 * SKIP_NO_PATTERNS when neither exists.
 */
import { existsSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { env } from "../../src/runtime.ts";

export const PATTERN_NAMES = [
  "Llama-2-7B-32K-Instruct",
  "Llama-3-8B-Instruct-Gradient-1048k",
  "Llama-3-8B-Instruct-Gradient-4194k",
  "Meta-Llama-3.1-8B-Instruct",
  "Mistral-7B-Instruct-v0.2",
  "Mistral-7B-Instruct-v0.3",
] as const;
export type PatternName = (typeof PATTERN_NAMES)[number];

export const SKIP_NO_PATTERNS = "skipped: published patterns not found; set DUO_PATTERNS_DIR";

/** The folder under `modelDir` that holds full_attention_heads.tsv: itself or its first setting folder. */
function filesDir(modelDir: string): string | undefined {
  if (existsSync(`${modelDir}/full_attention_heads.tsv`)) return modelDir;
  if (!existsSync(modelDir)) return undefined;
  const setting = readdirSync(modelDir).sort().find((s) => existsSync(`${modelDir}/${s}/full_attention_heads.tsv`));
  return setting === undefined ? undefined : `${modelDir}/${setting}`;
}

function find(): string | undefined {
  const candidates = [env("DUO_PATTERNS_DIR"), fileURLToPath(new URL("../../../shared/patterns", import.meta.url).href)];
  return candidates.find((d) => d && filesDir(`${d}/${PATTERN_NAMES[0]}`) !== undefined);
}

/** The patterns directory, or undefined when the data is not here. */
export const patternsDir: string | undefined = find();

/** For test(name, { skip: skipNoPatterns }, fn). */
export const skipNoPatterns: string | false = patternsDir ? false : SKIP_NO_PATTERNS;

/** Path of the folder holding one published pattern's files (call only from tests that skip without the data). */
export function patternPath(name: PatternName): string {
  const dir = patternsDir && filesDir(`${patternsDir}/${name}`);
  if (!dir) throw new Error(SKIP_NO_PATTERNS);
  return dir;
}
