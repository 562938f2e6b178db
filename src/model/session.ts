/**
 * A Session is one token sequence of a loaded LlamaModel: its own split KV cache (an engine Sequence), the token
 * history and the pending generated token. The model's weights and kernels are shared, so many sessions of one
 * model (a server's conversations) cost only their KV caches.
 *
 *   const a = model.session(), b = model.session();
 *   for await (const t of a.generate("Hello", { maxTokens: 8 })) write(t.text);
 *   const logits = await b.forward(ids);
 *
 * model.forward / generate / reset act on the model's default session.
 */
import type { Sequence } from "../engine/sequence.ts";
import { DuoError } from "../errors.ts";
import { Generation, type GenerateOptions } from "./generate.ts";
import type { LlamaModel } from "./llama.ts";

export class Session {
  /** tokens in the sequence, including a generated token not yet run through the model (see `pending`) */
  private history: number[] = [];
  /** the last generated token: part of the sequence, fed with the next forward */
  private pending: number | null = null;
  private disposed = false;

  /** @internal use model.session() */
  constructor(
    readonly model: LlamaModel,
    private readonly seq: Sequence,
    private readonly onDispose: (s: Session) => void,
  ) {}

  /** Tokens in the sequence (prompt and generated). */
  get tokens(): readonly number[] {
    return this.history;
  }

  /** The sequence's KV cache bytes (SPEC §4.4): retrieval, streaming, total, full-attention equivalent, allocated. */
  kvBytes(): ReturnType<Sequence["bytes"]> {
    this.checkAlive();
    return this.seq.bytes();
  }

  /**
   * Run `ids` through the model after everything before them; returns the logits [vocab] of the last position.
   * After generate(), the last generated token is fed first (it is part of the sequence, see `tokens`); `ids` may
   * then be empty. A rejected call (bad ids, past maxContext) leaves the sequence as it was.
   */
  async forward(ids: Int32Array | readonly number[]): Promise<Float32Array> {
    const { feed, pos } = this.feed(ids);
    const logits = await this.model.run(this.seq, feed, pos);
    this.fed(ids);
    return logits;
  }

  /** @internal forward, returning the greedy next token (the largest logit, the first on ties) instead of the
   *  logits: on kernel sets with argmax (model.greedyOnKernels) only that id crosses back from the device. */
  async forwardGreedy(ids: Int32Array | readonly number[]): Promise<number> {
    const { feed, pos } = this.feed(ids);
    const id = await this.model.runGreedy(this.seq, feed, pos);
    this.fed(ids);
    return id;
  }

  /** The ids a forward of `ids` runs (the pending token first) and their first position, after checking them. */
  private feed(ids: Int32Array | readonly number[]): { feed: Int32Array; pos: number } {
    this.checkAlive();
    const V = this.model.config.vocabSize;
    if (ids.length === 0 && this.pending === null) throw new DuoError("INVALID_ARGUMENT", "forward needs at least one token id");
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new DuoError("INVALID_ARGUMENT", `token id ${String(id)} at index ${i} is outside the vocabulary [0, ${V})`);
    });
    const feed = new Int32Array(ids.length + (this.pending === null ? 0 : 1));
    if (this.pending !== null) feed[0] = this.pending;
    feed.set(ids, feed.length - ids.length);
    const pos = this.seq.length(0);
    const max = this.model.engine.maxContext;
    if (pos + feed.length > max) throw new DuoError("CAPACITY", `the sequence holds ${pos} tokens; ${feed.length} more would exceed maxContext = ${max}`);
    return { feed, pos };
  }

  /** A forward of `ids` has run: they join the history, and the pending token was fed. */
  private fed(ids: Int32Array | readonly number[]): void {
    for (const id of ids) this.history.push(id);
    this.pending = null;
  }

  /** Generate tokens after `prompt` (text, encoded with BOS when the sequence is empty, or ids). Async iterable of
   *  `{ id, text }`; `stats` fills in as it runs. Continues the sequence like forward; call reset() to start over. */
  generate(prompt: string | Int32Array | readonly number[], options: GenerateOptions = {}): Generation {
    this.checkAlive();
    return new Generation(this, prompt, options);
  }

  /** @internal a generated token: it joins the sequence now and is fed first by the next forward */
  accept(id: number): void {
    this.history.push(id);
    this.pending = id;
  }

  /** Forget the sequence (its cache memory is returned); ready for a new prompt. */
  reset(): void {
    this.checkAlive();
    this.seq.reset();
    this.history = [];
    this.pending = null;
  }

  /** Free this session's KV cache; the model stays loaded. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.seq.dispose();
    this.onDispose(this);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private checkAlive(): void {
    this.model.checkAlive();
    if (this.disposed) throw new DuoError("DISPOSED", "this session has been disposed; call model.session() for a new one");
  }
}
