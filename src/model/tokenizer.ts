/**
 * Text ↔ token ids from a model directory's `tokenizer.json` (+ `tokenizer_config.json`), with
 * @huggingface/tokenizers (pure JS, offline), and chat templates rendered with @huggingface/jinja. Nothing is
 * downloaded: both libraries get the local files' contents.
 */
import { DuoError } from "../errors.ts";
import { exists, readText } from "../runtime.ts";
import { readJson } from "./config.ts";

export interface ChatMessage {
  role: string;
  content: string;
}

interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string;
  token_to_id(token: string): number | undefined;
}

/** A special token in tokenizer_config.json is a string or an AddedToken object `{ content, ... }`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v !== null && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

export class TextTokenizer {
  private constructor(
    private readonly tok: HfTokenizer,
    private readonly config: Record<string, unknown>,
    /** the chat template (jinja source), if the model has one */
    readonly chatTemplate: string | undefined,
  ) {}

  /** `dir/tokenizer.json` (required), `dir/tokenizer_config.json` and `dir/chat_template.jinja` (optional). */
  static async load(dir: string): Promise<TextTokenizer> {
    const path = `${dir}/tokenizer.json`;
    if (!(await exists(path))) throw new DuoError("IO", `${dir}: no tokenizer.json (the Hugging Face fast-tokenizer file is required; tokenizer.model alone is not supported)`);
    const json = await readJson(path);
    const cfgPath = `${dir}/tokenizer_config.json`;
    const config = (await exists(cfgPath)) ? await readJson(cfgPath) : {};
    const jinja = `${dir}/chat_template.jinja`;
    return await TextTokenizer.fromJson(json, config, path, (await exists(jinja)) ? await readText(jinja) : undefined);
  }

  /** From the contents of tokenizer.json and tokenizer_config.json (`where` names their source in errors); the chat
   *  template is the config's, else `template`. */
  static async fromJson(json: Record<string, unknown>, config: Record<string, unknown>, where: string, template?: string): Promise<TextTokenizer> {
    const { Tokenizer } = await import("@huggingface/tokenizers");
    let tok: HfTokenizer;
    try {
      tok = new Tokenizer(json, config) as unknown as HfTokenizer;
    } catch (e) {
      throw new DuoError("UNSUPPORTED", `${where}: @huggingface/tokenizers cannot build this tokenizer (${(e as Error).message})`, { cause: e });
    }
    let t: unknown = config.chat_template;
    if (Array.isArray(t)) t = t.find((x) => x?.name === "default")?.template ?? t[0]?.template;
    return new TextTokenizer(tok, config, typeof t === "string" ? t : template);
  }

  /** Token ids of `text`; `addSpecialTokens` adds what the tokenizer's post-processor adds (usually BOS). */
  encode(text: string, { addSpecialTokens = true } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], { skipSpecialTokens = true } = {}): string {
    return ids.length === 0 ? "" : this.tok.decode(ids.slice(), { skip_special_tokens: skipSpecialTokens });
  }

  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  special(name: "bos_token" | "eos_token" | "unk_token" | "pad_token"): string | undefined {
    return tokenText(this.config[name]);
  }

  /** Render the chat template (with `add_generation_prompt`); its output already holds the BOS text if needed,
   *  so encode it with `addSpecialTokens: false`. */
  async applyChatTemplate(messages: readonly ChatMessage[], { addGenerationPrompt = true } = {}): Promise<string> {
    if (this.chatTemplate === undefined) throw new DuoError("UNSUPPORTED", "this model has no chat template (tokenizer_config.json chat_template or chat_template.jinja); pass plain text");
    const { Template } = await import("@huggingface/jinja");
    try {
      return new Template(this.chatTemplate).render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.special("bos_token") ?? "",
        eos_token: this.special("eos_token") ?? "",
        unk_token: this.special("unk_token") ?? "",
        pad_token: this.special("pad_token") ?? "",
      });
    } catch (e) {
      throw new DuoError("UNSUPPORTED", `the chat template failed to render: ${(e as Error).message}`, { cause: e });
    }
  }
}

/**
 * Streaming detokenization: text appears as soon as it is stable. Each new id re-decodes the ids since the last
 * emitted boundary (so merges and leading-space rules see their context) and emits the new suffix, unless it ends
 * in an incomplete UTF-8 sequence (U+FFFD), which waits for the next id.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private prefix = 0;
  private read = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read));
    const now = this.tokenizer.decode(this.ids.slice(this.prefix));
    if (now.length <= before.length || now.endsWith("\uFFFD")) return "";
    this.prefix = this.read;
    this.read = this.ids.length;
    return now.slice(before.length);
  }

  /** Whatever is still held back at the end (an incomplete sequence stays as U+FFFD). */
  flush(): string {
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read));
    const now = this.tokenizer.decode(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return now.length > before.length ? now.slice(before.length) : "";
  }
}
