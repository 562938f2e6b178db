/**
 * Reading and writing pattern directories (`full_attention_heads.tsv` + `config.json`, SPEC.md §1.1) from a local
 * path or an http(s) URL. File access goes through src/runtime.ts; URLs use the web-standard fetch.
 *
 * Upstream (github.com/mit-han-lab/duo-attention) publishes them as `attn_patterns/<model>/<setting>/`, the setting
 * naming the training run (`lr=0.02-reg=0.05-ctx=1000_32000-multi_passkey10`). A local model folder with exactly one
 * setting inside is taken as that setting; with several, the error lists them.
 */
import { DuoError } from "../errors.ts";
import { exists, listDirs, makeDir, readText, writeText } from "../runtime.ts";
import { formatE18 } from "./format.ts";
import { checkPattern, type HeadPattern, parsePattern } from "./pattern.ts";

export const GATES_FILE = "full_attention_heads.tsv";
export const CONFIG_FILE = "config.json";

const EXPECTED = `a pattern directory holds ${GATES_FILE} and ${CONFIG_FILE} (upstream: attn_patterns/<model>/<setting>/)`;

/**
 * The two file URLs of a pattern directory URL. A GitHub page URL (github.com/<owner>/<repo>/tree/<ref>/<dir>) is
 * turned into its raw.githubusercontent.com twin, which serves the files themselves.
 */
export function patternUrls(url: string): { gates: string; config: string } {
  const base = url.replace(/\/+$/, "").replace(
    /^https:\/\/github\.com\/([^/]+)\/([^/]+)\/tree\/(.+)$/,
    "https://raw.githubusercontent.com/$1/$2/$3",
  );
  return { gates: `${base}/${GATES_FILE}`, config: `${base}/${CONFIG_FILE}` };
}

async function fetchText(url: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new DuoError("IO", `cannot fetch ${url}: ${(e as Error).message}`, { cause: e });
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new DuoError("IO", `GET ${url} answered ${res.status} ${res.statusText}; ${EXPECTED}, and a URL must name the setting folder itself`);
  }
  return await res.text();
}

async function readLocal(path: string): Promise<string> {
  try {
    return await readText(path);
  } catch (e) {
    throw new DuoError("IO", `cannot read ${path}: ${(e as Error).message}; ${EXPECTED}`, { cause: e });
  }
}

/** Load a pattern directory from a local path or an http(s) URL. */
export async function loadPattern(dirOrUrl: string | URL): Promise<HeadPattern> {
  const src = String(dirOrUrl);
  if (/^https?:\/\//i.test(src)) {
    const urls = patternUrls(src);
    const [tsv, config] = await Promise.all([fetchText(urls.gates), fetchText(urls.config)]);
    return parsePattern(tsv, config, src);
  }
  if (/^[a-z][a-z0-9+.-]+:\/\//i.test(src)) {
    throw new DuoError("INVALID_ARGUMENT", `cannot load a pattern from ${src}; use a directory path or an http(s) URL`);
  }
  if (!(await exists(src))) throw new DuoError("IO", `pattern directory ${src} does not exist; ${EXPECTED}`);
  const given = src.replace(/[/\\]+$/, "");
  const dir = await settingDir(given);
  const [tsv, config] = await Promise.all([readLocal(`${dir}/${GATES_FILE}`), readLocal(`${dir}/${CONFIG_FILE}`)]);
  return parsePattern(tsv, config, dir === given ? src : dir);
}

/**
 * The directory that holds the pattern files: `dir` itself, or its one setting subfolder (upstream's
 * attn_patterns/<model>/ layout). Several settings are a choice only the caller can make: INVALID_ARGUMENT naming
 * each as a path to pass.
 */
async function settingDir(dir: string): Promise<string> {
  if (await exists(`${dir}/${GATES_FILE}`)) return dir;
  let subdirs: string[];
  try {
    subdirs = await listDirs(dir);
  } catch (e) {
    throw new DuoError("IO", `cannot read ${dir}: ${(e as Error).message}; ${EXPECTED}`, { cause: e });
  }
  const settings: string[] = [];
  for (const name of subdirs) if (await exists(`${dir}/${name}/${GATES_FILE}`)) settings.push(name);
  if (settings.length === 1) return `${dir}/${settings[0]}`;
  if (settings.length > 1) {
    throw new DuoError(
      "INVALID_ARGUMENT",
      `${dir} holds ${settings.length} pattern settings; pass one of them: ${settings.map((n) => `${dir}/${n}`).join(", ")}`,
    );
  }
  throw new DuoError("IO", `${dir} has no ${GATES_FILE}, nor a setting folder holding one; ${EXPECTED}`);
}

/** The gate table as np.savetxt(fname, x, delimiter="\t") writes it: `%.18e`, tab-separated, "\n" after each row. */
export function formatPattern(p: HeadPattern): string {
  checkPattern(p);
  let out = "";
  for (let l = 0; l < p.numLayers; l++) {
    const row = p.gates.subarray(l * p.numKvHeads, (l + 1) * p.numKvHeads);
    out += Array.from(row, formatE18).join("\t") + "\n";
  }
  return out;
}

/** Write a pattern directory in upstream's format (the clipped gates; config.json with sink_size/recent_size). */
export async function savePattern(p: HeadPattern, dir: string): Promise<void> {
  const tsv = formatPattern(p);
  const config = `{"sink_size": ${p.sinkSize}, "recent_size": ${p.recentSize}}\n`;
  try {
    await makeDir(dir);
    await writeText(`${dir}/${GATES_FILE}`, tsv);
    await writeText(`${dir}/${CONFIG_FILE}`, config);
  } catch (e) {
    throw new DuoError("IO", `cannot write the pattern to ${dir}: ${(e as Error).message}`, { cause: e });
  }
}
