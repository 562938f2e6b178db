/**
 * Model presets for the six published head patterns (SPEC.md §1.6), with the values of each model's Hugging Face
 * config.json: all 32 layers, 32 query heads, head dim 128, hidden 4096.
 */
import { DuoError } from "../errors.ts";
import type { ModelShape } from "../shape.ts";

export type RopeScaling =
  /** position interpolation: positions divided by `factor` */
  | { type: "linear"; factor: number }
  /** Llama-3.1's frequency-dependent scaling (HF rope_type "llama3") */
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export interface ModelPreset extends ModelShape {
  readonly name: string;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  readonly ropeTheta: number;
  readonly ropeScaling?: RopeScaling;
}

const LLAMA_3_8B = {
  numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128,
  hiddenSize: 4096, intermediateSize: 14336, vocabSize: 128256,
} as const;

const MISTRAL_7B = {
  numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128,
  hiddenSize: 4096, intermediateSize: 14336, ropeTheta: 1000000,
} as const;

const list: ModelPreset[] = [
  // togethercomputer/Llama-2-7B-32K-Instruct: MHA, linear RoPE interpolation x8.
  {
    name: "llama-2-7b", numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128,
    hiddenSize: 4096, intermediateSize: 11008, vocabSize: 32000, ropeTheta: 10000, ropeScaling: { type: "linear", factor: 8 },
  },
  // gradientai/Llama-3-8B-Instruct-Gradient-1048k: long context from a larger theta alone.
  { name: "llama-3-8b", ...LLAMA_3_8B, ropeTheta: 3580165449 },
  // gradientai/Llama-3-8B-Instruct-Gradient-4194k: same weights shape, theta 4.52e10.
  { name: "llama-3-8b-4194k", ...LLAMA_3_8B, ropeTheta: 45218125210 },
  // meta-llama/Meta-Llama-3.1-8B-Instruct
  {
    name: "llama-3.1-8b", ...LLAMA_3_8B, ropeTheta: 500000,
    ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  },
  // mistralai/Mistral-7B-Instruct-v0.2; v0.3 differs only in its vocabulary.
  { name: "mistral-7b", ...MISTRAL_7B, vocabSize: 32000 },
  { name: "mistral-7b-v0.3", ...MISTRAL_7B, vocabSize: 32768 },
];

export const PRESETS: Readonly<Record<string, ModelPreset>> = Object.freeze(
  Object.fromEntries(list.map((p) => [p.name, Object.freeze(p)])),
);

/** Published pattern directory name (upstream attn_patterns/<name>/) → preset name. */
export const PATTERN_PRESETS: Readonly<Record<string, string>> = Object.freeze({
  "Llama-2-7B-32K-Instruct": "llama-2-7b",
  "Llama-3-8B-Instruct-Gradient-1048k": "llama-3-8b",
  "Llama-3-8B-Instruct-Gradient-4194k": "llama-3-8b-4194k",
  "Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b",
  "Mistral-7B-Instruct-v0.2": "mistral-7b",
  "Mistral-7B-Instruct-v0.3": "mistral-7b-v0.3",
});

/** A preset by name; throws INVALID_ARGUMENT listing the valid names. */
export function getPreset(name: string): ModelPreset {
  const p = Object.hasOwn(PRESETS, name) ? PRESETS[name] : undefined;
  if (!p) throw new DuoError("INVALID_ARGUMENT", `unknown model preset ${JSON.stringify(name)}; valid presets: ${Object.keys(PRESETS).join(", ")}`);
  return p;
}

/**
 * The preset of a published pattern, found by a path or URL segment equal to a pattern directory name
 * (".../Mistral-7B-Instruct-v0.2" or upstream's ".../Mistral-7B-Instruct-v0.2/lr=0.02-reg=0.05-…"); else undefined.
 */
export function presetForPattern(dirOrUrl: string): ModelPreset | undefined {
  const segment = String(dirOrUrl).split(/[/\\]+/).reverse().find((s) => Object.hasOwn(PATTERN_PRESETS, s));
  return segment === undefined ? undefined : PRESETS[PATTERN_PRESETS[segment]!];
}
