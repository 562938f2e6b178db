/**
 * The built-in haystack, for when the user gives no text: seeded pseudo-prose (sentences of common English words),
 * generated until it is at least `tokens` tokens long under the model's tokenizer. No network, no licence. Upstream
 * used BookSum chapters (its link is dead); natural prose from the user (`--haystack FILE`) is the better choice,
 * and the output says which one was used.
 */
import type { DataTokenizer } from "./dataset.ts";
import { Random } from "./random.ts";

const WORDS = ("the of and to in a is that was he for it with as his on be at by had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three").split(" ");

export function generatedHaystack(tok: DataTokenizer, tokens: number, seed = 0): string {
  const rng = new Random(seed);
  const sentences: string[] = [];
  let words = Math.max(64, tokens), count = 0;
  for (;;) {
    while (count < words) {
      const n = 6 + rng.int(12);
      count += n;
      const w = Array.from({ length: n }, () => WORDS[rng.int(WORDS.length)]!);
      w[0] = w[0]!.charAt(0).toUpperCase() + w[0]!.slice(1);
      sentences.push(w.join(" ") + (rng.int(5) === 0 ? ".\n" : ". "));
    }
    const text = sentences.join("");
    if (tok.encode(text, { addSpecialTokens: false }).length >= tokens) return text;
    words *= 2;
  }
}
