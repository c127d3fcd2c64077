/**
 * A tiny byte-level BPE vocabulary (GPT-2's scheme, as Qwen2's tokenizer uses it), for the tiny
 * model pairs whose text models are Qwen2-family (Qwen2.5-VL, Qwen3-VL, InternVL's Qwen2).
 *
 * Owns: GPT-2's byte-to-unicode table, the vocabulary (special tokens, the 256 byte tokens, a few
 * merged pieces of common English words) and its `tokenizer.ggml.*` metadata as llama.cpp's
 * `src/llama-vocab.cpp` reads it for `tokenizer.ggml.model = 'gpt2'` with the `qwen2` pre-tokenizer.
 * May import: ./tiny-model (the token types), ../gguf.
 */
import { GgufType, type GgufValue } from '../gguf/format';
import { gguf } from '../gguf/writer';
import { TokenType } from './tiny-model';

/** The vocabulary as written to `tokenizer.ggml.tokens`, `token_type` and `merges`. */
export interface TinyBpeVocab {
  readonly tokens: readonly string[];
  readonly types: readonly TokenType[];
  /** `"left right"` pairs of token texts, lowest rank (first applied) first. */
  readonly merges: readonly string[];
  /** The id of each special token passed to {@link tinyBpeVocab}. */
  readonly specialIds: ReadonlyMap<string, number>;
}

/**
 * GPT-2's `bytes_to_unicode`: byte `b` is written as character `table[b]`. Printable Latin-1 bytes
 * stand for themselves; the others (controls, space, 0x7F-0xA0, 0xAD) are shifted to U+0100 and
 * up, in byte order, so that every token is printable text (space is `Ġ`, newline `Ċ`).
 */
export function byteToUnicode(): string[] {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCodePoint(printable(b) ? b : 256 + shifted++));
  return table;
}

/**
 * Words that get merged pieces, with and without a leading space: Qwen's chat roles and default
 * system message, the Chain-of-Spot prompts and common question vocabulary.
 */
const WORDS = `
system user assistant You are a helpful
To answer the question where is region of interest in image The Answer What which who how
Is Are Does Do Can color many what sign say written number left right top bottom
on at with for from by as be it this that there and not yes no one two
`;

/**
 * The vocabulary: `specialTokens` first (ids 0 to n-1, CONTROL), then the 256 byte tokens (byte
 * `b` is id n + b), then merged pieces. Each merged piece is a word's prefix extended by one
 * character, so it has exactly one merge (prefix, last character); merges are ranked by the
 * length of what they make, shortest first. A word may still tokenize into several pieces when a
 * shorter merge inside it wins first: any split is a valid tokenization, and a few merges are
 * enough to make text shorter than its bytes, as in a trained vocabulary.
 *
 * The special tokens come first so that a text model can give them (and nothing else) zero
 * output logits with one block of rows.
 */
export function tinyBpeVocab(specialTokens: readonly string[]): TinyBpeVocab {
  const bytes = byteToUnicode();
  const tokens: string[] = [...specialTokens, ...bytes];
  const types: TokenType[] = [...specialTokens.map(() => TokenType.CONTROL), ...bytes.map(() => TokenType.NORMAL)];
  const seen = new Set(tokens);
  if (seen.size !== tokens.length) throw new RangeError('special tokens must be distinct and differ from the byte tokens');
  const encode = (text: string): string[] => [...Buffer.from(text, 'utf8')].map((b) => bytes[b]!);

  const pieces: { left: string; right: string; text: string; length: number }[] = [];
  for (const word of WORDS.split(/\s+/).filter((w) => w !== '')) {
    for (const form of [word, ` ${word}`]) {
      const chars = encode(form);
      let prefix = chars[0]!;
      for (const char of chars.slice(1)) {
        const text = prefix + char;
        if (!seen.has(text)) {
          seen.add(text);
          pieces.push({ left: prefix, right: char, text, length: [...text].length });
        }
        prefix = text;
      }
    }
  }
  pieces.sort((a, b) => a.length - b.length); // stable: first-seen order within a length
  for (const piece of pieces) {
    tokens.push(piece.text);
    types.push(TokenType.NORMAL);
  }
  return {
    tokens,
    types,
    merges: pieces.map((p) => `${p.left} ${p.right}`),
    specialIds: new Map(specialTokens.map((token, id) => [token, id])),
  };
}

/** Which special tokens play which role. */
export interface BpeSpecialRoles {
  /** The end-of-sequence token (`<|im_end|>` for Qwen's chat models); llama.cpp also stops on it. */
  readonly eos: string;
  /** The padding token, also written as BOS (never added), as Qwen2 GGUFs do (`<|endoftext|>`). */
  readonly padding: string;
}

/**
 * The `tokenizer.ggml.*` metadata of `vocab`: a `gpt2` (byte-level BPE) vocabulary with the
 * `qwen2` pre-tokenizer, no BOS added, and the given roles.
 */
export function bpeVocabMetadata(vocab: TinyBpeVocab, roles: BpeSpecialRoles): [string, GgufValue][] {
  const id = (token: string): number => {
    const found = vocab.specialIds.get(token);
    if (found === undefined) throw new RangeError(`${JSON.stringify(token)} is not one of the vocabulary's special tokens`);
    return found;
  };
  return [
    ['tokenizer.ggml.model', gguf.str('gpt2')],
    ['tokenizer.ggml.pre', gguf.str('qwen2')],
    ['tokenizer.ggml.tokens', gguf.array(GgufType.STRING, vocab.tokens)],
    ['tokenizer.ggml.token_type', gguf.array(GgufType.INT32, vocab.types)],
    ['tokenizer.ggml.merges', gguf.array(GgufType.STRING, vocab.merges)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(id(roles.eos))],
    ['tokenizer.ggml.padding_token_id', gguf.u32(id(roles.padding))],
    ['tokenizer.ggml.bos_token_id', gguf.u32(id(roles.padding))],
    ['tokenizer.ggml.add_bos_token', gguf.bool(false)],
  ];
}
