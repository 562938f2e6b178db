/**
 * Generation: prefill the prompt (chunked, session.forward), then decode one token at a time until a stop token or
 * `maxTokens`. Tokens stream out as an async iterable of `{ id, text }`; `stats` holds the timings as they happen.
 */
import { checkInt, DuoError } from "../errors.ts";
import { now } from "../runtime.ts";
import { Sampler, type SamplingOptions } from "./sampler.ts";
import type { Session } from "./session.ts";
import { TextStream } from "./tokenizer.ts";

export interface GenerateOptions extends SamplingOptions {
  /** most tokens to generate (default 256) */
  maxTokens?: number;
  /** more ids that end generation, besides the model's eos ids */
  stop?: readonly number[];
  /** keep going past the model's eos ids (stop ids still stop) */
  ignoreEos?: boolean;
  /** wrap a text prompt in the model's chat template as one user message */
  chat?: boolean;
}

export interface GeneratedToken {
  id: number;
  /** the text this token completes (may be "" while a multi-byte character or merge is pending) */
  text: string;
}

export interface GenerationStats {
  promptTokens: number;
  prefillMs: number;
  generatedTokens: number;
  /** single-token forward passes (the first token comes from the prefill) */
  decodeSteps: number;
  decodeMs: number;
  /** the sampler's seed, or null for greedy decoding */
  seed: number | null;
  stopReason: "stop" | "length" | null;
}

const OPTION_KEYS = ["maxTokens", "stop", "ignoreEos", "chat", "greedy", "temperature", "topK", "topP", "seed"];

export class Generation implements AsyncIterable<GeneratedToken> {
  readonly stats: GenerationStats = { promptTokens: 0, prefillMs: 0, generatedTokens: 0, decodeSteps: 0, decodeMs: 0, seed: null, stopReason: null };
  private readonly sampler: Sampler;
  private readonly maxTokens: number;
  private readonly stop: Set<number>;
  private started = false;

  /** @internal use session.generate() or model.generate() */
  constructor(
    private readonly session: Session,
    private readonly prompt: string | Int32Array | readonly number[],
    private readonly options: GenerateOptions,
  ) {
    const unknown = Object.keys(options).find((k) => !OPTION_KEYS.includes(k));
    if (unknown) throw new DuoError("INVALID_ARGUMENT", `unknown generate option "${unknown}"; valid options: ${OPTION_KEYS.join(", ")}`);
    this.sampler = new Sampler(options);
    this.maxTokens = checkInt("maxTokens", options.maxTokens ?? 256, 1);
    this.stop = new Set([...(options.ignoreEos ? [] : session.model.config.eosTokenIds), ...(options.stop ?? [])]);
    this.stats.seed = this.sampler.greedy ? null : this.sampler.seed;
  }

  private async promptIds(): Promise<readonly number[] | Int32Array> {
    const tok = this.session.model.tokenizer;
    if (typeof this.prompt !== "string") {
      if (this.options.chat) throw new DuoError("INVALID_ARGUMENT", "chat needs a text prompt, not token ids");
      return this.prompt;
    }
    if (this.options.chat) return tok.encode(await tok.applyChatTemplate([{ role: "user", content: this.prompt }]), { addSpecialTokens: false });
    return tok.encode(this.prompt, { addSpecialTokens: this.session.tokens.length === 0 });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.started) throw new DuoError("INVALID_ARGUMENT", "a generation can be iterated once; call generate again");
    this.started = true;
    const ids = await this.promptIds();
    if (ids.length === 0) throw new DuoError("INVALID_ARGUMENT", "the prompt is empty (no token ids)");
    const text = new TextStream(this.session.model.tokenizer);
    const s = this.stats;
    s.promptTokens = ids.length;
    // Greedy on a kernel set with argmax (cuda): the next token is chosen where the logits are, and only its id
    // crosses back; otherwise the logits come to the sampler.
    const onKernels = this.sampler.greedy && this.session.model.greedyOnKernels;
    const forward = async (feed: Int32Array | readonly number[]): Promise<number | Float32Array> =>
      onKernels ? await this.session.forwardGreedy(feed) : await this.session.forward(feed);
    let t0 = now();
    let result = await forward(ids);
    s.prefillMs = now() - t0;
    for (;;) {
      const id = typeof result === "number" ? result : this.sampler.sample(result);
      this.session.accept(id);
      if (this.stop.has(id)) {
        s.stopReason = "stop";
        break;
      }
      s.generatedTokens++;
      const last = s.generatedTokens === this.maxTokens;
      yield { id, text: text.push(id) + (last ? text.flush() : "") };
      if (last) {
        s.stopReason = "length";
        break;
      }
      t0 = now();
      result = await forward([]);
      s.decodeMs += now() - t0;
      s.decodeSteps++;
    }
  }

  /** Run to the end and return the generated text. */
  async text(): Promise<string> {
    let out = "";
    for await (const t of this) out += t.text;
    return out;
  }
}
