/**
 * What `duo identify` leaves in its output directory:
 *  - full_attention_heads.tsv: the gates [layer][KV head] as np.savetxt writes them (src/pattern savePattern;
 *    clipped to [0, 1], which is what every loader reads — the raw post-step gates are in identify.json);
 *  - config.json: sink_size / recent_size (the identification window, as upstream) plus the run's arguments;
 *  - identify.json: method, per-head raw gates or scores, loss curve, data hash, timings;
 *  - identify-state.json: step, raw gates and AdamW moments, for --resume (optimize only).
 * loadPattern, upstream's load_attn_pattern and kvpress read the first two unchanged.
 */
import { DuoError } from "../errors.ts";
import { savePattern } from "../pattern/io.ts";
import { makePattern } from "../pattern/pattern.ts";
import { exists, readText, writeText } from "../runtime.ts";
import type { IdentifyResult, IdentifyState } from "./identify.ts";

export const REPORT_FILE = "identify.json";
export const STATE_FILE = "identify-state.json";

/** Rows [layer][kvHead] of flat gates. */
export function gateRows(gates: ArrayLike<number>, numKvHeads: number): number[][] {
  return Array.from({ length: gates.length / numKvHeads }, (_, l) => Array.from({ length: numKvHeads }, (_, h) => gates[l * numKvHeads + h]!));
}

/** Write the pattern directory and identify.json. `args` are the run's arguments (config.json provenance);
 *  `report` adds fields to identify.json (data description and hash, model, engine). */
export async function writeIdentifyOutput(dir: string, run: IdentifyResult, args: Record<string, unknown>, report: Record<string, unknown>): Promise<void> {
  const pattern = makePattern(gateRows(run.gates, run.numKvHeads), { sinkSize: run.window.sink, recentSize: run.window.recent });
  await savePattern(pattern, dir);
  const config = { sink_size: run.window.sink, recent_size: run.window.recent, ...args };
  const body = {
    method: run.method,
    ...report,
    layers: run.numLayers,
    kvHeads: run.numKvHeads,
    window: run.window,
    steps: run.steps,
    stopped: run.stopped,
    gates: gateRows(run.gates, run.numKvHeads),
    ...(run.scores ? { scores: gateRows(run.scores, run.numKvHeads), gateMapping: "rank / (N - 1) of the scores, so sparsify's quantile selects by score" } : {}),
    lossCurve: run.losses,
    timings: run.timings,
  };
  try {
    await writeText(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
    await writeText(`${dir}/${REPORT_FILE}`, JSON.stringify(body, null, 1) + "\n");
  } catch (e) {
    throw new DuoError("IO", `cannot write ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

export async function writeState(dir: string, state: IdentifyState, fingerprint: string): Promise<void> {
  await writeText(`${dir}/${STATE_FILE}.tmp`, JSON.stringify({ fingerprint, ...state }) + "\n");
  const { rename } = await import("node:fs/promises"); // atomic: a Ctrl-C mid-write keeps the previous state
  await rename(`${dir}/${STATE_FILE}.tmp`, `${dir}/${STATE_FILE}`);
}

/** The saved state of a run with the same fingerprint (model, data and optimisation arguments), else an error. */
export async function readState(dir: string, fingerprint: string): Promise<IdentifyState> {
  const path = `${dir}/${STATE_FILE}`;
  if (!(await exists(path))) throw new DuoError("IO", `--resume: ${path} does not exist; run without --resume first (it is written every few steps)`);
  const s = JSON.parse(await readText(path)) as IdentifyState & { fingerprint?: string };
  if (s.fingerprint !== fingerprint) {
    throw new DuoError("INVALID_ARGUMENT", `--resume: ${path} was written by a run with other arguments (${s.fingerprint}); this run is ${fingerprint}. Resume with the same --model, data and optimisation options`);
  }
  return { step: s.step, gates: s.gates, adam: s.adam, losses: s.losses };
}
