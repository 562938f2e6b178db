// Types of scenario.js (plain JavaScript, so that a browser page and a workerd module load it unchanged).
import type { DuoAttention, DuoAttentionOptions, KvBytes } from "../../src/index.ts";

export declare const SCENARIO: {
  shape: DuoAttentionOptions["shape"];
  heads: boolean[][];
  sinkSize: number;
  recentSize: number;
  kvDtype: "bf16";
  calls: number[];
};

export interface ScenarioOutput {
  backend: string;
  bytes: KvBytes;
  /** [call][layer] -> [T * numHeads * headDim] */
  outputs: number[][][];
}

export declare function runScenario(
  api: { DuoAttention: Pick<typeof DuoAttention, "create"> },
  backendOptions: Partial<DuoAttentionOptions>,
): Promise<ScenarioOutput>;
