/**
 * A planted-circuit model for identification tests (after IDENTIFICATION.md §2.3): two Llama layers of 8 heads
 * whose weights are set by hand so that every head has a known role, and a key→value recall task.
 *
 * Residual dims (hidden 80): 0–7 needle key code, 8–15 query key code, 16–23 needle value code, 24–39 filler code,
 * 40 constant, 41 BOS flag, 42–73 four answer blocks of 8, 74–79 outputs of the other heads.
 * Tokens: 0 BOS, 1–40 fillers, 41 + 8a + b the needle "key a has value b", 105 + a the query "value of key a?".
 * Roles: retrieval heads match query code to needle code through the two slowest RoPE pairs (position-blind) and
 * copy the value code into their answer block; a decoy does the same with output weights ×0.005; "partial" is a
 * weaker retrieval head; local heads attend by recency through the fastest RoPE pairs; sink heads attend to BOS;
 * diffuse heads attend uniformly to almost-constant values.
 * The task's answer is read from all four answer blocks (one per true retrieval head), so it needs all four.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/model/config.ts";
import { LlamaModel, type LoadOptions } from "../../src/model/llama.ts";
import { gateModelFromTensors, type GateModel } from "../../src/identify/model.ts";
import type { Sample } from "../../src/identify/forward.ts";
import { rng } from "./random.ts";
import { tokenizerJson, writeSafetensors } from "./tiny-model.ts";

export const NK = 8;
const HIDDEN = 80, HEADS = 8, D = 16, F = 32;
/** 113 tokens are used; the vocabulary has one output token per combination of the four answer blocks' values */
const V = NK ** 4;
const BLOCK = (b: number) => 42 + 8 * b;

type Role = "retrieval" | "partial" | "decoy" | "local" | "leaky-local" | "local-big" | "sink" | "diffuse";
export const ROLES: Role[][] = [
  ["retrieval", "local", "sink", "diffuse", "retrieval", "local", "sink", "local"],
  ["decoy", "partial", "leaky-local", "local-big", "retrieval", "local", "sink", "diffuse"],
];
/** the answer block each retrieval-like head writes */
const BLOCKS: (number | null)[][] = [[0, null, null, null, 1, null, null, null], [2, 2, null, null, 3, null, null, null]];
/** flat indices (l·8 + h) of the heads the task needs */
export const TRUE_RETRIEVAL = [0, 4, 9, 12];
export const DECOY = 8;

const CONFIG = {
  architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: HIDDEN, intermediate_size: F, num_hidden_layers: 2, num_attention_heads: HEADS,
  num_key_value_heads: HEADS, head_dim: D, vocab_size: V, rms_norm_eps: 1e-6, rope_theta: 1e6, max_position_embeddings: 4096, hidden_act: "silu",
  tie_word_embeddings: false,
};

export function plantedModel(seed = 5): GateModel {
  const t = plantedTensors(seed);
  return gateModelFromTensors(parseConfig(CONFIG), (n) => t.get(n));
}

/** The planted weights by Hugging Face name. lm_head row c scores the answer (c mod 8, c/8 mod 8, c/64 mod 8,
 *  c/512): the sum of the four blocks' entries, so the argmax token reads every block's argmax at once. */
function plantedTensors(seed: number): Map<string, Float64Array> {
  const r = rng(seed), normal = () => (r() + r() + r() - 1.5) * 2;
  const t = new Map<string, Float64Array>();
  const E = new Float64Array(V * HIDDEN);
  for (let v = 0; v < V; v++) E[v * HIDDEN + 40] = 2;
  E[0 * HIDDEN + 41] = 1;
  for (let v = 1; v <= 40; v++) for (let c = 24; c < 40; c++) E[v * HIDDEN + c] = normal() * 0.4;
  for (let a = 0; a < NK; a++) {
    for (let b = 0; b < NK; b++) {
      E[(41 + a * NK + b) * HIDDEN + a] = 1;
      E[(41 + a * NK + b) * HIDDEN + 16 + b] = 1;
    }
    E[(41 + NK * NK + a) * HIDDEN + 8 + a] = 1;
  }
  t.set("model.embed_tokens.weight", E);
  const slow = [6, 7, 14, 15], fast = [0, 1, 2, 8, 9, 10];
  const code = (a: number, i: number) => (slow[a >> 1] === i ? (a % 2 === 0 ? 1 : -1) : 0);
  for (let l = 0; l < 2; l++) {
    const p = `model.layers.${l}.`;
    // HF layout: q/k/v [heads·D, hidden], o [hidden, heads·D]
    const Wq = new Float64Array(HEADS * D * HIDDEN), Wk = new Float64Array(HEADS * D * HIDDEN), Wv = new Float64Array(HEADS * D * HIDDEN), Wo = new Float64Array(HIDDEN * HEADS * D);
    const set = (W: Float64Array, row: number, col: number, x: number) => (W[row * HIDDEN + col] = x);
    const setO = (hd: number, out: number, x: number) => (Wo[out * HEADS * D + hd] = x);
    ROLES[l]!.forEach((role, h) => {
      const base = h * D;
      if (role === "retrieval" || role === "partial" || role === "decoy") {
        const scale = role === "partial" ? 0.7 : 1, wo = role === "decoy" ? 0.005 : 0.25, out = BLOCK(BLOCKS[l]![h]!);
        for (let a = 0; a < NK; a++) {
          for (let i = 0; i < D; i++) {
            if (code(a, i) === 0) continue;
            set(Wq, base + i, 8 + a, code(a, i) * 3 * scale);
            set(Wk, base + i, a, code(a, i) * 3 * scale);
          }
        }
        for (let b = 0; b < 8; b++) {
          set(Wv, base + b, 16 + b, 1);
          setO(base + b, out + b, wo);
        }
      } else if (role === "local" || role === "leaky-local" || role === "local-big") {
        const dims = role === "local-big" ? [0, 1, 2, 3, 8, 9, 10, 11] : fast, s = role === "local-big" ? 2 : 1, wo = role === "local-big" ? 2 : 1;
        for (const i of dims) {
          set(Wq, base + i, 40, 2 * s);
          set(Wk, base + i, 40, 2 * s);
        }
        for (let i = 8; i < 16; i++) for (let c = 24; c < 40; c++) set(Wv, base + i, c, normal() * 0.5);
        for (let i = 8; i < 16; i++) for (let c = 74; c < 80; c++) setO(base + i, c, normal() * 0.4 * wo);
      } else if (role === "sink") {
        set(Wq, base + 6, 40, 2);
        set(Wk, base + 6, 41, 6);
        set(Wv, base + 0, 41, 1);
        setO(base + 0, 74, 0.2);
      } else {
        set(Wv, base + 0, 40, 1);
        for (let c = 24; c < 40; c++) set(Wv, base + 1, c, 0.02);
        setO(base + 0, 75, 0.2);
        setO(base + 1, 76, 0.2);
      }
    });
    t.set(`${p}self_attn.q_proj.weight`, Wq);
    t.set(`${p}self_attn.k_proj.weight`, Wk);
    t.set(`${p}self_attn.v_proj.weight`, Wv);
    t.set(`${p}self_attn.o_proj.weight`, Wo);
    t.set(`${p}input_layernorm.weight`, new Float64Array(HIDDEN).fill(1));
    t.set(`${p}post_attention_layernorm.weight`, new Float64Array(HIDDEN).fill(1));
    t.set(`${p}mlp.gate_proj.weight`, Float64Array.from({ length: F * HIDDEN }, () => normal() * 0.05));
    t.set(`${p}mlp.up_proj.weight`, Float64Array.from({ length: F * HIDDEN }, () => normal() * 0.05));
    t.set(`${p}mlp.down_proj.weight`, Float64Array.from({ length: HIDDEN * F }, () => normal() * 0.05));
  }
  t.set("model.norm.weight", new Float64Array(HIDDEN).fill(1));
  const head = new Float64Array(V * HIDDEN);
  for (let c = 0; c < V; c++) for (let b = 0; b < 4; b++) head[c * HIDDEN + BLOCK(b) + (Math.floor(c / NK ** b) % NK)] = 1;
  t.set("lm_head.weight", head);
  return t;
}

/** The answer token when every block names `value`. */
export const answerToken = (value: number) => value * (1 + NK + NK ** 2 + NK ** 3);

/** The planted model as a Hugging Face directory (f32 safetensors; the test tokenizer, unused by the task). */
export function writePlantedModel(seed = 5): { dir: string; dispose(): void } {
  const dir = mkdtempSync(join(tmpdir(), "duo-planted-"));
  const tensors = [...plantedTensors(seed)].map(([name, data]) => {
    const f = Float32Array.from(data);
    const shape = name.endsWith("norm.weight") ? [HIDDEN] : name.includes("embed") || name.includes("lm_head") ? [V, HIDDEN]
      : /q_proj|k_proj|v_proj/.test(name) ? [HEADS * D, HIDDEN] : name.includes("o_proj") ? [HIDDEN, HEADS * D]
      : /gate_proj|up_proj/.test(name) ? [F, HIDDEN] : [HIDDEN, F];
    return { name, dtype: "F32", shape, bytes: new Uint8Array(f.buffer) };
  });
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  writeFileSync(join(dir, "config.json"), JSON.stringify(CONFIG));
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson().json));
  return { dir, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface RecallSample extends Sample {
  /** the value each query row asks for */
  answers: number[];
}

/** BOS, fillers with `n` needles at distinct random positions in [0.2T, 0.6T) (past the sink block), then the n queries (the labels). */
export function recallSample(seed: number, T = 128, n = 4): RecallSample {
  const r = rng(seed), body = T - n;
  const ids = new Int32Array(T);
  ids[0] = 0;
  for (let i = 1; i < body; i++) ids[i] = 1 + Math.floor(r() * 40);
  const keys = Array.from({ length: NK }, (_, i) => i).sort(() => r() - 0.5).slice(0, n);
  const values = keys.map(() => Math.floor(r() * NK));
  const used = new Set<number>();
  keys.forEach((a, k) => {
    let p: number;
    do p = Math.floor(T * 0.2 + r() * T * 0.4);
    while (used.has(p));
    used.add(p);
    ids[p] = 41 + a * NK + values[k]!;
  });
  const order = Array.from({ length: n }, (_, i) => i).sort(() => r() - 0.5);
  order.forEach((k, i) => (ids[body + i] = 41 + NK * NK + keys[k]!));
  return { ids, labelStart: body, answers: order.map((k) => values[k]!) };
}

/** Fraction of query rows whose four answer blocks all name the right value; `hidden` [nLab, 80] final normed. */
export function exactMatch(hidden: Float64Array, answers: number[]): number {
  let ok = 0;
  answers.forEach((want, i) => {
    const row = hidden.subarray(i * HIDDEN, (i + 1) * HIDDEN);
    const right = [0, 1, 2, 3].every((b) => {
      let best = 0;
      for (let v = 1; v < NK; v++) if (row[BLOCK(b) + v]! > row[BLOCK(b) + best]!) best = v;
      return best === want;
    });
    if (right) ok++;
  });
  return ok / answers.length;
}

/** Through the inference engine: the fraction of answer tokens the written planted model (`dir`) predicts greedily,
 *  each sample's prompt prefilled, then each answer token decoded after the one before it. */
export async function engineExactMatch(dir: string, samples: readonly RecallSample[], options: LoadOptions): Promise<number> {
  const llm = await LlamaModel.load(dir, options);
  let ok = 0, total = 0;
  try {
    for (const s of samples) {
      llm.reset();
      await llm.forward(s.ids.subarray(0, s.labelStart));
      for (let i = 0; i < s.answers.length; i++) {
        const logits = await llm.forward([s.ids[s.labelStart + i]!]);
        let best = 0;
        for (let c = 1; c < logits.length; c++) if (logits[c]! > logits[best]!) best = c;
        ok += best === answerToken(s.answers[i]!) ? 1 : 0;
        total++;
      }
    }
  } finally {
    await llm.dispose();
  }
  return ok / total;
}
