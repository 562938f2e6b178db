/**
 * Needle in a haystack (SPEC §7.1, upstream eval/needle): a fact is inserted at a token depth of a long filler
 * text and the model is asked for it. Differences from upstream, all deliberate:
 *  - the haystack text is tokenized once (no special tokens) and its ids repeated until long enough, instead of
 *    repeating the text and re-tokenizing;
 *  - the prompt is assembled from ids (prefix with BOS ++ context ids with the needle ++ suffix), so the needle sits
 *    exactly at token index ⌊len·depth/100⌋ of the context, instead of decoding the context to text and encoding
 *    the whole prompt again;
 *  - rouge-1 is computed without stemming (upstream: rouge_score with the Porter stemmer).
 * Both scores are kept per cell: `rouge1` = rouge-1 F(needle, response) × 10 (upstream's saved score) and `score` =
 * |words(response) ∩ E| / |E| with E = the 12 words of the expected answer (upstream's plotted score; E has 11
 * distinct words, so a perfect answer scores 11/12 ≈ 0.917).
 */
import { checkInt, DuoError } from "../errors.ts";
import type { LlamaModel } from "./llama.ts";
import type { TextTokenizer } from "./tokenizer.ts";

export const NEEDLE = "\n\nRemember, the best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n\n";
export const PROMPT_PREFIX = "<|im_start|> This is a very long story book: <book> ";
export const PROMPT_SUFFIX = " </book>.\n\nQuestion: Based on the content of the book, what is the best thing to do in San Francisco?\n\nAnswer: The best thing to do in San Francisco is";
/** the words the plotted score looks for (upstream visualize.py) */
export const EXPECTED_WORDS = "eat a sandwich and sit in dolores park on a sunny day.".split(" ");
/** tokens kept free for the question and the answer (upstream final_context_length_buffer) */
export const CONTEXT_BUFFER = 200;
/** the best possible plotted score: 11 distinct expected words out of 12 */
export const MAX_SCORE = 11 / 12;

export interface NiahCell {
  length: number;
  depth: number;
  /** tokens of the whole prompt */
  promptTokens: number;
  /** token index of the needle inside the prompt */
  needleAt: number;
  response: string;
  /** rouge-1 F(needle, response) × 10 */
  rouge1: number;
  /** |words ∩ E| / 12, at most 11/12 */
  score: number;
  prefillMs: number;
  decodeMs: number;
}

/** numpy's np.round(np.linspace(a, b, n)) as integers (round half to even). */
export function linspaceInts(a: number, b: number, n: number): number[] {
  checkInt("linspace count", n, 1);
  return Array.from({ length: n }, (_, i) => roundHalfEven(n === 1 ? a : a + ((b - a) * i) / (n - 1)));
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** The plotted score: |set(response.lower().split()) ∩ set(E)| / len(E). */
export function wordSetScore(response: string): number {
  const words = new Set(response.toLowerCase().split(/\s+/).filter(Boolean));
  return new Set(EXPECTED_WORDS.filter((w) => words.has(w))).size / EXPECTED_WORDS.length;
}

function rougeTokens(s: string): string[] {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, " ").split(" ").filter(Boolean);
}

/** Rouge-1 F-measure of `candidate` against `reference` (unigram overlap with counts, no stemming), in [0, 1]. */
export function rouge1(reference: string, candidate: string): number {
  const ref = rougeTokens(reference), cand = rougeTokens(candidate);
  if (ref.length === 0 || cand.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const w of ref) counts.set(w, (counts.get(w) ?? 0) + 1);
  let overlap = 0;
  for (const w of cand) {
    const c = counts.get(w) ?? 0;
    if (c > 0) {
      overlap++;
      counts.set(w, c - 1);
    }
  }
  if (overlap === 0) return 0;
  const p = overlap / cand.length, r = overlap / ref.length;
  return (2 * p * r) / (p + r);
}

/** Haystack token ids (no special tokens), repeated until there are at least `minTokens`. */
export function haystackIds(tokenizer: TextTokenizer, text: string, minTokens: number): number[] {
  const once = tokenizer.encode(text, { addSpecialTokens: false });
  if (once.length === 0) throw new DuoError("INVALID_ARGUMENT", "the haystack text is empty");
  const out: number[] = [];
  while (out.length < minTokens) for (const id of once) out.push(id);
  return out;
}

/**
 * The prompt for one cell: `length` tokens in all (the context is cut to length − CONTEXT_BUFFER − |needle| tokens,
 * the needle inserted at ⌊len·depth/100⌋, or appended at depth 100).
 */
export function niahPrompt(tokenizer: TextTokenizer, hay: readonly number[], length: number, depth: number): { ids: number[]; needleAt: number } {
  const needle = tokenizer.encode(NEEDLE, { addSpecialTokens: false });
  const prefix = tokenizer.encode(PROMPT_PREFIX, { addSpecialTokens: true });
  const suffix = tokenizer.encode(PROMPT_SUFFIX, { addSpecialTokens: false });
  const budget = length - CONTEXT_BUFFER - needle.length;
  if (budget < 1) throw new DuoError("INVALID_ARGUMENT", `context length ${length} is too short: it must exceed ${CONTEXT_BUFFER} (buffer) + ${needle.length} (needle tokens)`);
  if (hay.length < budget) throw new DuoError("INVALID_ARGUMENT", `the haystack has ${hay.length} tokens; length ${length} needs ${budget}`);
  if (!(depth >= 0 && depth <= 100)) throw new DuoError("INVALID_ARGUMENT", `depth must be a percentage in [0, 100], got ${depth}`);
  const context = hay.slice(0, budget);
  const at = depth >= 100 ? context.length : Math.floor((context.length * depth) / 100);
  const ids = [...prefix, ...context.slice(0, at), ...needle, ...context.slice(at), ...suffix];
  return { ids, needleAt: prefix.length + at };
}

/** Run every (length, depth) cell on `model` (greedy, reset before each); `onCell` sees each result as it lands. */
export async function runNiah(
  model: LlamaModel,
  hay: readonly number[],
  grid: { lengths: readonly number[]; depths: readonly number[]; maxTokens: number },
  onCell: (cell: NiahCell) => void = () => {},
): Promise<NiahCell[]> {
  const cells: NiahCell[] = [];
  for (const length of grid.lengths) {
    for (const depth of grid.depths) {
      const { ids, needleAt } = niahPrompt(model.tokenizer, hay, length, depth);
      model.reset();
      const gen = model.generate(ids, { greedy: true, maxTokens: grid.maxTokens });
      const answer: number[] = [];
      for await (const t of gen) answer.push(t.id);
      const response = model.tokenizer.decode(answer).trim();
      const cell: NiahCell = {
        length, depth, promptTokens: ids.length, needleAt, response,
        rouge1: rouge1(NEEDLE, response) * 10,
        score: wordSetScore(response),
        prefillMs: gen.stats.prefillMs,
        decodeMs: gen.stats.decodeMs,
      };
      cells.push(cell);
      onCell(cell);
    }
  }
  model.reset();
  return cells;
}
