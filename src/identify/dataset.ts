/**
 * Upstream's multi-passkey retrieval data (SPEC §5.4, `duo_attn/data.py:MultiplePasskeyRetrievalDataset`):
 * ten needles "Remeber this sequence of words, it's the {ordinal} passkey to the vault: " + 32 NATO words, at
 * sorted random depths in a haystack, then the ten questions with their answers; the labels are every token of
 * that question/answer tail. Tokenized piece by piece as upstream does (needle, passkey, separator each alone;
 * prompt1 with the tokenizer's special tokens, i.e. BOS).
 *
 * Item i uses context length ⌊linspace(ctxMin, ctxMax, lengths)[i]⌋; needle k goes at ⌊|hay|·depth_k⌋ of
 * hay = haystack[:Lc]. The haystack is the text trimmed to ctxMax tokens (decode, re-encode) and cut so that
 * |haystack| + other ≤ ctxMax − 300.
 *
 * Upstream's padding has a precedence bug (`a + b + c % 16 != 0` is always true): it always inserts
 * 16 − (total mod 16) haystack tokens (1–16, never 0) before prompt2, only so the sequence splits over 8
 * sequence-parallel GPUs. `pad: true` reproduces it; the default leaves it out (one device needs no split).
 */
import { checkInt, DuoError } from "../errors.ts";
import type { Sample } from "./forward.ts";
import type { Random } from "./random.ts";

export interface DataTokenizer {
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode?(ids: number[]): string;
}

export const NATO = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"];
export const ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"];
// Upstream's strings, typo included.
export const needleText = (k: number) => `Remeber this sequence of words, it's the ${ORDINALS[k]} passkey to the vault: `;
export const questionText = (k: number) => `Based on the content of the book, what is the ${ORDINALS[k]} passkey to the vault?\nPasskey: `;
export const PROMPT1 = "<|im_start|> This is a very long story book: <book> ";
export const PROMPT2 = " </book>.\n\n";
export const SEPARATOR = "\n\n";

export interface PasskeyOptions {
  /** needles per sample (upstream 10, at most 20) */
  passkeys?: number;
  /** NATO words per passkey (upstream 32) */
  passkeyWords?: number;
  /** haystack context lengths in tokens (upstream 1000 .. 32000) */
  ctxMin: number;
  ctxMax: number;
  /** how many context lengths (upstream 50): the dataset's items */
  lengths?: number;
  /** depth grid size (upstream 1000) over [minDepth, maxDepth] (upstream 0.05 .. 0.95) */
  depths?: number;
  minDepth?: number;
  maxDepth?: number;
  /** tokens kept free below ctxMax (upstream 300) */
  buffer?: number;
  /** reproduce upstream's always-pad bug (default false) */
  pad?: boolean;
}

export interface PasskeySample extends Sample {
  /** context length of the item */
  contextLength: number;
  /** sorted needle depths */
  depths: number[];
  /** the passkey strings, first .. last */
  passkeys: string[];
  /** haystack offsets (in hay = haystack[:Lc]) where each needle was inserted */
  insertAt: number[];
}

/** linspace(a, b, n)[i] (numpy/torch: a + i·(b−a)/(n−1), the last exactly b). */
function linspace(a: number, b: number, n: number, i: number): number {
  return n === 1 ? a : i === n - 1 ? b : a + (i * (b - a)) / (n - 1);
}

export class PasskeyDataset {
  readonly options: Required<PasskeyOptions>;
  readonly haystack: number[];
  private readonly needles: number[][];
  private readonly questions: number[][];
  private readonly sep: number[];
  private readonly prompt1: number[];
  private readonly prompt2: number[];

  constructor(private readonly tok: DataTokenizer, haystackText: string, options: PasskeyOptions, rng: Random) {
    const o: Required<PasskeyOptions> = { passkeys: 10, passkeyWords: 32, lengths: 50, depths: 1000, minDepth: 0.05, maxDepth: 0.95, buffer: 300, pad: false, ...options };
    checkInt("passkeys", o.passkeys, 1, ORDINALS.length);
    checkInt("passkeyWords", o.passkeyWords, 1);
    checkInt("ctxMin", o.ctxMin, 1);
    checkInt("ctxMax", o.ctxMax, o.ctxMin);
    checkInt("lengths", o.lengths, 1);
    checkInt("depths", o.depths, o.passkeys);
    checkInt("buffer", o.buffer, 0);
    if (!(o.minDepth >= 0 && o.minDepth <= o.maxDepth && o.maxDepth <= 1)) throw new DuoError("INVALID_ARGUMENT", `needle depths must satisfy 0 <= minDepth <= maxDepth <= 1, got ${o.minDepth}, ${o.maxDepth}`);
    this.options = o;
    const enc = (s: string) => tok.encode(s, { addSpecialTokens: false });
    let hay = enc(haystackText);
    if (hay.length < o.ctxMax) {
      throw new DuoError("INVALID_ARGUMENT", `the haystack text is ${hay.length} tokens, shorter than the requested context of ${o.ctxMax} tokens; give a longer --haystack file or lower --ctx-max`);
    }
    if (tok.decode && hay.length > o.ctxMax) hay = enc(tok.decode(hay.slice(0, o.ctxMax))); // upstream's _trim
    this.needles = Array.from({ length: o.passkeys }, (_, k) => enc(needleText(k)));
    this.questions = Array.from({ length: o.passkeys }, (_, k) => enc(questionText(k)));
    this.sep = enc(SEPARATOR);
    this.prompt1 = tok.encode(PROMPT1, { addSpecialTokens: true });
    this.prompt2 = enc(PROMPT2);
    const passkey = enc(this.passkey(rng));
    const other = this.prompt1.length + this.prompt2.length + (2 * this.sep.length + this.needles[0]!.length + passkey.length + this.questions[0]!.length + passkey.length) * o.passkeys;
    if (hay.length + other > o.ctxMax - o.buffer) {
      const keep = o.ctxMax - o.buffer - other;
      if (keep <= 0) throw new DuoError("INVALID_ARGUMENT", `--ctx-max ${o.ctxMax} leaves no room for a haystack: prompts, needles and questions take ${other} tokens plus the ${o.buffer}-token buffer; raise --ctx-max or lower --passkeys`);
      hay = hay.slice(0, keep);
    }
    this.haystack = hay;
  }

  /** Items in one epoch (the context lengths). */
  get length(): number {
    return this.options.lengths;
  }

  contextLength(i: number): number {
    const o = this.options;
    return Math.trunc(linspace(o.ctxMin, o.ctxMax, o.lengths, i));
  }

  /** `passkeyWords` NATO words drawn with replacement, space-joined. */
  passkey(rng: Random): string {
    return Array.from({ length: this.options.passkeyWords }, () => NATO[rng.int(NATO.length)]).join(" ");
  }

  /** Item i with fresh depths and passkeys. */
  sample(i: number, rng: Random): PasskeySample {
    const o = this.options, n = o.passkeys;
    const contextLength = this.contextLength(checkInt("item", i, 0, o.lengths - 1));
    const perm = rng.permutation(o.depths);
    // torch.linspace is float32, and |hay|·depth stays a float32 tensor until int() truncates it
    const depths = Array.from(perm.subarray(0, n), (j) => Math.fround(linspace(o.minDepth, o.maxDepth, o.depths, j))).sort((a, b) => a - b);
    const passkeys = Array.from({ length: n }, () => this.passkey(rng));
    const keyTokens = passkeys.map((p) => this.tok.encode(p, { addSpecialTokens: false }));
    const hay = this.haystack.slice(0, contextLength);
    const context: number[] = [], insertAt: number[] = [];
    let last = 0;
    depths.forEach((d, k) => {
      const at = Math.trunc(Math.fround(hay.length * d));
      insertAt.push(at);
      context.push(...hay.slice(last, at), ...this.sep, ...this.needles[k]!, ...keyTokens[k]!, ...this.sep);
      last = at;
    });
    context.push(...hay.slice(last));
    const qa: number[] = [];
    for (let k = 0; k < n; k++) qa.push(...this.questions[k]!, ...keyTokens[k]!, ...this.sep);
    const head = [...this.prompt1, ...context];
    if (o.pad) {
      const pad = 16 - ((head.length + qa.length + this.prompt2.length) % 16);
      head.push(...this.haystack.slice(this.haystack.length - pad));
    }
    head.push(...this.prompt2);
    return { ids: Int32Array.from([...head, ...qa]), labelStart: head.length, contextLength, depths, passkeys, insertAt };
  }
}
