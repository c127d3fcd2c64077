/**
 * Deterministic tiny LLaVA-1.5 model pairs with random weights, for tests and demos.
 *
 * A pair is a `llama`-architecture text model with a SentencePiece (`llama`) vocabulary and a CLIP
 * `mmproj` with LLaVA-1.5's two-layer MLP projector. Keys and tensor names follow what llama.cpp's
 * `src/models/llama.cpp`, `src/llama-vocab.cpp` and `tools/mtmd/clip.cpp` read, and mirror published
 * LLaVA-1.5 GGUFs: the projector uses the legacy `convert_image_encoder_to_gguf.py` layout (CLIP's
 * `fc1` stored as `ffn_down`, `fc2` as `ffn_up`, which clip.cpp swaps back), 2-D weights are F16 and
 * 1-D tensors F32, and `block_count` counts the stored vision layers, of which clip.cpp runs all but
 * the last (LLaVA's penultimate-layer features).
 *
 * The output is garbage text, but it exercises the same loading, image encoding and decoding paths
 * as a real model, in a few MB.
 */

import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { fnv1a, mulberry32 } from '../common/random';
import { GgmlType, GgufType, type GgufValue } from '../gguf/format';
import { readGgufHeader } from '../gguf/reader';
import { f32ToF16, ggmlTypeTraits, gguf, writeGguf, type GgufContent, type GgufTensor } from '../gguf/writer';

/** Shape of the text (language) model. */
export interface TinyTextSpec {
  /** Embedding width; must be divisible by `nHead`. */
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  /** KV heads; `nHead` must be divisible by it (equal means no GQA, as in LLaVA-1.5). */
  readonly nHeadKv: number;
  readonly nFf: number;
  readonly contextLength: number;
  readonly ropeFreqBase: number;
  readonly rmsEps: number;
}

/** Shape of the CLIP vision encoder. */
export interface TinyVisionSpec {
  /** Input side in pixels; must be divisible by `patchSize`. One image is `(imageSize / patchSize)²` tokens. */
  readonly imageSize: number;
  readonly patchSize: number;
  /** Encoder width; must be divisible by `nHead`. */
  readonly nEmbd: number;
  /** Stored layers (`clip.vision.block_count`); llama.cpp runs all but the last. At least 2. */
  readonly nLayer: number;
  readonly nHead: number;
  readonly nFf: number;
  readonly layerNormEps: number;
}

/** Everything that determines a generated pair (together with the seed). */
export interface TinyModelSpec {
  /** File-name stem: `<name>.gguf` and `<name>-mmproj.gguf`. */
  readonly name: string;
  readonly text: TinyTextSpec;
  readonly vision: TinyVisionSpec;
  /**
   * Width of the projector's output. Defaults to `text.nEmbd`; any other value makes a mismatched
   * pair that llama.cpp refuses to combine.
   */
  readonly projectorWidth?: number;
  /** Written as `tokenizer.chat_template` when set. LLaVA-1.5 GGUFs usually have none. */
  readonly chatTemplate?: string;
  /**
   * How the text model's matrices are stored: `f16` (the default) or `q4_k_m`, llama.cpp's Q4_K_M
   * mix (Q6_K for the output, attention values and feed-forward down projections, Q4_K for the rest)
   * with random but valid blocks, for models of a real shape whose speed, not output, matters.
   */
  readonly textType?: 'f16' | 'q4_k_m';
  /**
   * Tokens in the vocabulary: the tiny vocabulary padded with filler pieces (see {@link tinyVocab}),
   * so that embeddings, logits and samplers cost what they cost with a real one (LLaMA's is 32000).
   * Default: the tiny vocabulary alone.
   */
  readonly vocabSize?: number;
}

/** The paths of a written pair. */
export interface TinyLlavaFiles {
  readonly model: string;
  readonly mmproj: string;
}

/**
 * Shared text model: 256 wide with 4 heads of 64, so that GPU attention kernels see a realistic head
 * size, and widths that are multiples of 256, so quantized (K-quant) variants stay possible.
 */
const TINY_TEXT: TinyTextSpec = {
  nEmbd: 256,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 4,
  nFf: 512,
  contextLength: 4096,
  ropeFreqBase: 10000,
  rmsEps: 1e-5,
};

/** LLaVA-1.5 geometry: 336 px in 14 px patches, so one image is 576 tokens. */
export const TINY_LLAVA: TinyModelSpec = {
  name: 'tiny-llava-336',
  text: TINY_TEXT,
  vision: { imageSize: 336, patchSize: 14, nEmbd: 128, nLayer: 2, nHead: 2, nFf: 256, layerNormEps: 1e-5 },
};

/** Faster variant for quick tests: 112 px in 14 px patches, so one image is 64 tokens. */
export const TINY_LLAVA_FAST: TinyModelSpec = {
  ...TINY_LLAVA,
  name: 'tiny-llava-112',
  vision: { ...TINY_LLAVA.vision, imageSize: 112 },
};

/** The default seed of {@link writeTinyLlava} and {@link ensureTinyLlava}. */
export const DEFAULT_SEED = 1;

/** CLIP's normalization constants (OpenAI CLIP ViT-L/14-336, as LLaVA-1.5 uses). */
export const CLIP_IMAGE_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_IMAGE_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

/** Number of image tokens one image becomes with this spec. */
export function imageTokenCount(spec: TinyModelSpec): number {
  return (spec.vision.imageSize / spec.vision.patchSize) ** 2;
}

/** `base` with the projector emitting `width` values per token instead of the text width (a mismatched pair). */
export function withProjectorWidth(base: TinyModelSpec, width: number): TinyModelSpec {
  return { ...base, name: `${base.name}-proj${width}`, projectorWidth: width };
}

/** `base` with a text model `width` wide (same head count); its projector follows unless `projectorWidth` is set. */
export function withTextWidth(base: TinyModelSpec, width: number): TinyModelSpec {
  return { ...base, name: `${base.name}-text${width}`, text: { ...base.text, nEmbd: width } };
}

// --- vocabulary ----------------------------------------------------------------------------------

/** SentencePiece token types, as in llama.cpp's `llama_token_type`. */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** Token ids of the special tokens (as in the LLaMA / LLaVA-1.5 vocabulary). */
export const UNK_ID = 0;
export const BOS_ID = 1;
export const EOS_ID = 2;
/** Id of `<0x00>`; byte `b` is token `BYTE_TOKEN_BASE + b`. */
export const BYTE_TOKEN_BASE = 3;
/** Id of the first ordinary piece, after the 3 specials and 256 byte tokens. */
export const FIRST_NORMAL_ID = BYTE_TOKEN_BASE + 256;

/** SentencePiece's whitespace marker, U+2581. */
export const SPM_SPACE = '\u2581';

/** A SentencePiece vocabulary as written to `tokenizer.ggml.*`. */
export interface TinyVocab {
  readonly tokens: readonly string[];
  readonly scores: readonly number[];
  readonly types: readonly TokenType[];
}

/**
 * Words that get whole-word pieces (with the `▁` prefix; capitalized ones also without it, for text
 * that follows a newline). They cover LLaVA-1.5's system prompt, the Chain-of-Spot prompts
 * ("To answer the question: …, where is the region of interest in the image?", "The region of
 * interest in the image is …. Answer the question: …"), LLaVA's short-answer and box prompts, and
 * common question vocabulary.
 */
const WORDS = `
A chat between a curious user and an artificial intelligence assistant The gives helpful detailed polite
answers to the user questions USER ASSISTANT Human Question Answer answer question
To where is region of interest in image Where What which Which who Who how How Is Are Does Do Can
using single word or phrase Please provide bounding box coordinate coordinates sentence describes describe
briefly detail details this This that there There it It its picture photo shown show kind type
what color colors cat cats dog dogs sign signs say says written text number many much animal person
man woman people child car bus truck bike street road tree trees sky water table chair food plate cup
red blue green yellow black white brown orange pink purple gray
left right top bottom center middle front back side near far above below inside outside
on at with for from by as be are was were has have had not no yes one two three four five six seven
eight nine ten first second all some any other more most only also very can could would will should
look looking sitting standing holding wearing eating lying playing looks sits stands holds wears
object objects area part small large big little tall short long wide open closed new old
an the of and in is to
`;

/**
 * Extra pieces: the opening of a box answer and common suffixes; their prefixes are added too. No
 * piece holds a digit next to anything else: LLaMA's tokenizer (LLaVA-1.5's) splits digits, so a
 * box like `[0.0, 0.072, 0.586, 1.0]` is digits, `.`, `,` and `▁` one token each, as with real weights.
 */
const EXTRA_PIECES = [`${SPM_SPACE}[`, '],', "'s", 'ing', 'ed', 'es', 'er', 'ly', 'tion'];

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/** First Private Use Area code point: filler pieces are made of these, which prompts do not hold. */
const FILLER_BASE = 0xe000;
/** Code points in the Basic Multilingual Plane's Private Use Area (U+E000..U+F8FF). */
const FILLER_DIGITS = 0x1900;

/**
 * Builds the vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`..`<0xFF>`, then
 * ordinary pieces. llama.cpp's SPM tokenizer only merges two adjacent symbols when the merged string
 * is itself a piece, so every prefix of every piece is a piece too: a word's leftmost symbol is then
 * always a prefix of the word and can absorb its right neighbour until the whole word forms.
 * Scores decrease with the id, as in a trained SentencePiece model.
 *
 * With `size`, ordinary filler pieces follow until there are `size` tokens: pairs of Private Use
 * Area characters. Only text holding such characters tokenizes into them, so every prompt's
 * tokens stay those of the tiny vocabulary.
 */
export function tinyVocab(size?: number): TinyVocab {
  const pieces: string[] = [];
  const seen = new Set<string>();
  const addWithPrefixes = (piece: string): void => {
    const chars = [...piece];
    for (let i = 1; i <= chars.length; i++) {
      const prefix = chars.slice(0, i).join('');
      if (!seen.has(prefix)) {
        seen.add(prefix);
        pieces.push(prefix);
      }
    }
  };

  // Every printable ASCII character alone, and after the space marker but for digits.
  addWithPrefixes(SPM_SPACE);
  for (let c = 0x21; c <= 0x7e; c++) addWithPrefixes(String.fromCharCode(c));
  for (let c = 0x21; c <= 0x7e; c++) if (!isDigit(c)) addWithPrefixes(SPM_SPACE + String.fromCharCode(c));
  for (const piece of EXTRA_PIECES) addWithPrefixes(piece);
  for (const word of WORDS.split(/\s+/).filter((w) => w !== '')) {
    addWithPrefixes(SPM_SPACE + word);
    if (word[0] !== word[0]!.toLowerCase()) addWithPrefixes(word);
  }

  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TokenType.BYTE);
  }
  const scores = tokens.map(() => 0);
  if (size !== undefined) {
    const min = tokens.length + pieces.length;
    const max = min + FILLER_DIGITS ** 2;
    if (!Number.isInteger(size) || size < min || size > max) throw new RangeError(`vocabulary size must be an integer from ${min} to ${max}`);
    for (let i = 0; tokens.length + pieces.length < size; i++) {
      pieces.push(String.fromCharCode(FILLER_BASE + Math.floor(i / FILLER_DIGITS), FILLER_BASE + (i % FILLER_DIGITS)));
    }
  }
  pieces.forEach((piece, i) => {
    tokens.push(piece);
    types.push(TokenType.NORMAL);
    scores.push(-i);
  });
  return { tokens, scores, types };
}

// --- deterministic random weights ----------------------------------------------------------------

const SQRT3 = Math.sqrt(3);
const CHUNK = 1 << 16;

/** How a tensor's values are made. */
type Init =
  | { readonly kind: 'const'; readonly value: number }
  /** Zero-mean, `std`-scaled bell curve; the first `zeroRows` rows (of `shape[0]` values) are zero. */
  | { readonly kind: 'random'; readonly std: number; readonly zeroRows?: number }
  /** Random K-quant blocks whose scales keep the values around ±`std` (written as raw bytes). */
  | { readonly kind: 'random-blocks'; readonly std: number };

/** How to make one tensor: its name, shape, type and values. Shared with the other families' tiny pairs. */
export interface Recipe {
  readonly name: string;
  readonly shape: readonly number[];
  readonly type: GgmlType;
  readonly init: Init;
}

/**
 * Turns a recipe into a streamed tensor. Randoms are Irwin–Hall(4) sums (unit variance, bounded at
 * ±2√3): no transcendental functions, so the bytes are identical on every platform and Node version.
 */
export function materialize(recipe: Recipe, seed: number): GgufTensor {
  const total = recipe.shape.reduce((a, b) => a * b, 1);
  const { init } = recipe;
  return {
    name: recipe.name,
    shape: recipe.shape,
    type: recipe.type,
    *data() {
      // Each tensor its own stream, independent of tensor order.
      const next = mulberry32(fnv1a(`${seed}:${recipe.name}`));
      if (init.kind === 'random-blocks') {
        yield* randomBlocks(recipe.type, total, init.std, next);
        return;
      }
      const zeroUntil = init.kind === 'random' ? (init.zeroRows ?? 0) * recipe.shape[0]! : 0;
      for (let start = 0; start < total; start += CHUNK) {
        const chunk = new Float32Array(Math.min(CHUNK, total - start));
        if (init.kind === 'const') {
          chunk.fill(init.value);
        } else {
          for (let i = 0; i < chunk.length; i++) {
            const v = (next() + next() + next() + next() - 2) * SQRT3 * init.std;
            chunk[i] = start + i < zeroUntil ? 0 : v;
          }
        }
        yield chunk;
      }
    },
  };
}

/** Whole K-quant blocks of random bytes, with the block scales (fp16) set so values stay near ±std. */
function* randomBlocks(type: GgmlType, total: number, std: number, next: () => number): Generator<Uint8Array> {
  const { blockSize, typeSize } = ggmlTypeTraits(type);
  const blocksPerChunk = Math.max(1, Math.floor(CHUNK / blockSize));
  // Q4_K: d and dmin first, values d·scale·q − dmin·min with 6-bit scales and 4-bit q.
  // Q6_K: d last, values d·scale·(q − 32) with int8 scales and 6-bit q.
  const scaleBits = f32ToF16(type === GgmlType.Q4_K ? std / (32 * 8) : std / (64 * 16));
  for (let block = 0; block < total / blockSize; block += blocksPerChunk) {
    const count = Math.min(blocksPerChunk, total / blockSize - block);
    const bytes = new Uint8Array(count * typeSize);
    const words = new Uint32Array(bytes.buffer, 0, bytes.length >> 2);
    for (let i = 0; i < words.length; i++) words[i] = next() * 0x100000000;
    const view = new DataView(bytes.buffer);
    for (let b = 0; b < count; b++) {
      if (type === GgmlType.Q4_K) {
        view.setUint16(b * typeSize, scaleBits, true);
        view.setUint16(b * typeSize + 2, scaleBits, true);
      } else {
        view.setUint16(b * typeSize + typeSize - 2, scaleBits, true);
      }
    }
    yield bytes;
  }
}

/**
 * Scales of the random text model and projector: the embedding's standard deviation, and gains of
 * the matrices (standard deviation = gain / sqrt(fan-in), so every shape behaves alike). With
 * CLIP-style 0.02 everywhere the residual stream is the average of the context and the greedy output
 * one token repeated whatever the input; with unit-scale embeddings, sharp attention (q, k), residual
 * blocks and a projector that keep the stream's scale, the greedy output depends on the prompt and
 * the image, so tests comparing outputs can fail, and turn one mostly writes a box that parses.
 */
export const TEXT_INIT = { embedding: 1, queryKey: 2.4, valueOutput: 1.44, feedForward: 1.44, projector: 2.4 } as const;

/** A text or projector matrix of `shape` = [fan-in, fan-out] with standard deviation gain / sqrt(fan-in). */
export const scaledWeight = (name: string, shape: readonly [number, number], gain: number, type = GgmlType.F16): Recipe => weight(name, shape, gain / Math.sqrt(shape[0]), type);

/** A random tensor of standard deviation `std`: values written as f16 or f32, or random quantized blocks of another type. */
export const weight = (name: string, shape: readonly number[], std = 0.02, type = GgmlType.F16): Recipe =>
  type === GgmlType.F16 || type === GgmlType.F32 ? { name, shape, type, init: { kind: 'random', std } } : { name, shape, type, init: { kind: 'random-blocks', std } };
/** A layer's gated feed-forward with its norm: `<prefix>.ffn_norm`, `.ffn_gate`, `.ffn_up` and `.ffn_down` (in `down`). */
export function gatedFeedForward(prefix: string, t: TinyTextSpec, type = GgmlType.F16, down = type): Recipe[] {
  return [
    ones(`${prefix}.ffn_norm.weight`, t.nEmbd),
    scaledWeight(`${prefix}.ffn_gate.weight`, [t.nEmbd, t.nFf], TEXT_INIT.feedForward, type),
    scaledWeight(`${prefix}.ffn_up.weight`, [t.nEmbd, t.nFf], TEXT_INIT.feedForward, type),
    scaledWeight(`${prefix}.ffn_down.weight`, [t.nFf, t.nEmbd], TEXT_INIT.feedForward, down),
  ];
}

/**
 * The final norm and an untied output head in f16: logits ~N(0, 4²) for ordinary pieces (the normed
 * hidden state has unit RMS) but exactly 0 for the first `zeroRows` tokens (the special and byte
 * tokens): greedy decoding never ends early or opens a turn or an image on its own, sampling almost
 * never does, and the output is always valid UTF-8.
 */
export function outputHead(nEmbd: number, nVocab: number, zeroRows: number): Recipe[] {
  return [
    ones('output_norm.weight', nEmbd),
    { name: 'output.weight', shape: [nEmbd, nVocab], type: GgmlType.F16, init: { kind: 'random', std: 4 / Math.sqrt(nEmbd), zeroRows } },
  ];
}

export const ones = (name: string, n: number): Recipe => ({ name, shape: [n], type: GgmlType.F32, init: { kind: 'const', value: 1 } });
export const zeros = (name: string, n: number): Recipe => ({ name, shape: [n], type: GgmlType.F32, init: { kind: 'const', value: 0 } });

// --- spec checks and fingerprint -----------------------------------------------------------------

/** Bump when the generated bytes change for an unchanged spec and seed, so cached files are rewritten. */
const GENERATOR_VERSION = 3; // 2: digits split, as in LLaMA's vocabulary; 3: TEXT_INIT scales
/** Metadata key holding the fingerprint (generator version, spec and seed) that {@link ensureTinyLlava} compares. */
export const FINGERPRINT_KEY = 'chain_of_spot.tiny_model';
/** `general.file_type` 1: LLAMA_FTYPE_MOSTLY_F16; 15: LLAMA_FTYPE_MOSTLY_Q4_K_M. */
export const FILE_TYPE_MOSTLY_F16 = 1;
const FILE_TYPE_MOSTLY_Q4_K_M = 15;

function checkSpec(spec: TinyModelSpec, seed: number): void {
  const { text, vision } = spec;
  const fail = (why: string): never => {
    throw new RangeError(`invalid tiny model spec ${spec.name}: ${why}`);
  };
  if (!/^[\w.-]+$/.test(spec.name)) fail('name must be a plain file-name stem');
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail('seed must be a uint32');
  const positive = (what: string, n: number): void => {
    if (!Number.isInteger(n) || n <= 0) fail(`${what} must be a positive integer`);
  };
  for (const k of ['nEmbd', 'nLayer', 'nHead', 'nHeadKv', 'nFf', 'contextLength'] as const) positive(`text.${k}`, text[k]);
  for (const k of ['imageSize', 'patchSize', 'nEmbd', 'nLayer', 'nHead', 'nFf'] as const) positive(`vision.${k}`, vision[k]);
  positive('projectorWidth', spec.projectorWidth ?? text.nEmbd);
  if (text.nEmbd % text.nHead !== 0) fail('text.nEmbd must be divisible by text.nHead');
  if (text.nHead % text.nHeadKv !== 0) fail('text.nHead must be divisible by text.nHeadKv');
  if (vision.imageSize % vision.patchSize !== 0) fail('vision.imageSize must be divisible by vision.patchSize');
  if (vision.nEmbd % vision.nHead !== 0) fail('vision.nEmbd must be divisible by vision.nHead');
  if (vision.nLayer < 2) fail('vision.nLayer must be at least 2 (llama.cpp runs all but the last)');
  if (spec.textType === 'q4_k_m' && (text.nEmbd % 256 !== 0 || text.nFf % 256 !== 0)) {
    fail('a q4_k_m text model needs text.nEmbd and text.nFf in multiples of 256 (K-quant blocks)');
  }
  if (spec.vocabSize !== undefined) {
    try {
      tinyVocab(spec.vocabSize);
    } catch (error) {
      fail((error as Error).message);
    }
  }
}

/** A canonical JSON fingerprint (fixed key order, defaults filled in) of what determines the bytes. */
function fingerprint(spec: TinyModelSpec, seed: number): string {
  const { text: t, vision: v } = spec;
  return JSON.stringify({
    generator: GENERATOR_VERSION,
    seed,
    name: spec.name,
    text: [t.nEmbd, t.nLayer, t.nHead, t.nHeadKv, t.nFf, t.contextLength, t.ropeFreqBase, t.rmsEps],
    vision: [v.imageSize, v.patchSize, v.nEmbd, v.nLayer, v.nHead, v.nFf, v.layerNormEps],
    projectorWidth: spec.projectorWidth ?? t.nEmbd,
    chatTemplate: spec.chatTemplate ?? null,
    // Only when set, so the fingerprints of specs without it stay as they were.
    ...(spec.vocabSize === undefined ? {} : { vocabSize: spec.vocabSize }),
    ...(spec.textType === undefined || spec.textType === 'f16' ? {} : { textType: spec.textType }),
  });
}

// --- the two files -------------------------------------------------------------------------------

/** Metadata and tensors of the text model. */
/**
 * The metadata of a LLaVA-1.5 text model with `spec`'s shape and the tiny vocabulary, as llama.cpp
 * reads it; `name` is `general.name`. Shared with the trained demo pair (demo-model.ts).
 */
export function llavaTextMetadata(spec: TinyModelSpec, name: string): [string, GgufValue][] {
  const t = spec.text;
  const vocab = tinyVocab(spec.vocabSize);
  return [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(name)],
    ['general.file_type', gguf.u32(spec.textType === 'q4_k_m' ? FILE_TYPE_MOSTLY_Q4_K_M : FILE_TYPE_MOSTLY_F16)],
    ['llama.context_length', gguf.u32(t.contextLength)],
    ['llama.embedding_length', gguf.u32(t.nEmbd)],
    ['llama.block_count', gguf.u32(t.nLayer)],
    ['llama.feed_forward_length', gguf.u32(t.nFf)],
    ['llama.rope.dimension_count', gguf.u32(t.nEmbd / t.nHead)],
    ['llama.attention.head_count', gguf.u32(t.nHead)],
    ['llama.attention.head_count_kv', gguf.u32(t.nHeadKv)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(t.rmsEps)],
    ['llama.rope.freq_base', gguf.f32(t.ropeFreqBase)],
    ['llama.vocab_size', gguf.u32(vocab.tokens.length)],
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.tokens', gguf.array(GgufType.STRING, vocab.tokens)],
    ['tokenizer.ggml.scores', gguf.array(GgufType.FLOAT32, vocab.scores)],
    ['tokenizer.ggml.token_type', gguf.array(GgufType.INT32, vocab.types)],
    ['tokenizer.ggml.bos_token_id', gguf.u32(BOS_ID)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(EOS_ID)],
    ['tokenizer.ggml.unknown_token_id', gguf.u32(UNK_ID)],
    ['tokenizer.ggml.padding_token_id', gguf.u32(UNK_ID)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(true)],
    ['tokenizer.ggml.add_eos_token', gguf.bool(false)],
    ['tokenizer.ggml.add_space_prefix', gguf.bool(true)],
  ];
}

function textModelContent(spec: TinyModelSpec, seed: number): GgufContent {
  checkSpec(spec, seed);
  const t = spec.text;
  const nVocab = tinyVocab(spec.vocabSize).tokens.length;
  const headDim = t.nEmbd / t.nHead;
  const metadata = llavaTextMetadata(spec, `${spec.name} (random weights)`);
  if (spec.chatTemplate !== undefined) metadata.push(['tokenizer.chat_template', gguf.str(spec.chatTemplate)]);
  metadata.push([FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))]);

  const kvWidth = headDim * t.nHeadKv;
  const quantized = spec.textType === 'q4_k_m';
  // Q4_K_M: Q6_K where llama.cpp's mix keeps more bits, Q4_K elsewhere.
  const [mostly, more] = quantized ? [GgmlType.Q4_K, GgmlType.Q6_K] : [GgmlType.F16, GgmlType.F16];
  const recipes: Recipe[] = [weight('token_embd.weight', [t.nEmbd, nVocab], TEXT_INIT.embedding, mostly)];
  for (let i = 0; i < t.nLayer; i++) {
    recipes.push(
      ones(`blk.${i}.attn_norm.weight`, t.nEmbd),
      scaledWeight(`blk.${i}.attn_q.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.queryKey, mostly),
      scaledWeight(`blk.${i}.attn_k.weight`, [t.nEmbd, kvWidth], TEXT_INIT.queryKey, mostly),
      scaledWeight(`blk.${i}.attn_v.weight`, [t.nEmbd, kvWidth], TEXT_INIT.valueOutput, more),
      scaledWeight(`blk.${i}.attn_output.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.valueOutput, mostly),
      ...gatedFeedForward(`blk.${i}`, t, mostly, more),
    );
  }
  // Unquantized, <unk>, <s>, </s> and the byte tokens get zero logits (outputHead).
  recipes.push(...(quantized ? [ones('output_norm.weight', t.nEmbd), weight('output.weight', [t.nEmbd, nVocab], 4 / Math.sqrt(t.nEmbd), more)] : outputHead(t.nEmbd, nVocab, FIRST_NORMAL_ID)));
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

/** Metadata and tensors of the CLIP projector (mmproj). */
/**
 * The metadata of a LLaVA-1.5 mmproj (CLIP vision encoder, `mlp` projector) with `spec`'s vision
 * shape; `name` is `general.name`. Shared with the trained demo pair (demo-model.ts).
 */
/**
 * The vision encoder's keys that clip.cpp reads of every projector, from the image size to the
 * normalization, in the order the tiny projectors write them.
 */
export function clipVisionKeys(v: TinyVisionSpec, projectionDim: number, normalize: { mean: readonly number[]; std: readonly number[] }): [string, GgufValue][] {
  return [
    ['clip.vision.image_size', gguf.u32(v.imageSize)],
    ['clip.vision.patch_size', gguf.u32(v.patchSize)],
    ['clip.vision.embedding_length', gguf.u32(v.nEmbd)],
    ['clip.vision.feed_forward_length', gguf.u32(v.nFf)],
    ['clip.vision.projection_dim', gguf.u32(projectionDim)],
    ['clip.vision.attention.head_count', gguf.u32(v.nHead)],
    ['clip.vision.attention.layer_norm_epsilon', gguf.f32(v.layerNormEps)],
    ['clip.vision.block_count', gguf.u32(v.nLayer)],
    ['clip.vision.image_mean', gguf.array(GgufType.FLOAT32, normalize.mean)],
    ['clip.vision.image_std', gguf.array(GgufType.FLOAT32, normalize.std)],
  ];
}

/** The head of the other families' tiny projectors: a random-weight f16 vision encoder of `projectorType`, then its {@link clipVisionKeys}. */
export function familyMmprojKeys(name: string, projectorType: string, v: TinyVisionSpec, projectionDim: number, normalize: { mean: readonly number[]; std: readonly number[] }): [string, GgufValue][] {
  return [
    ['general.architecture', gguf.str('clip')],
    ['general.name', gguf.str(`${name} mmproj (random weights)`)],
    ['general.file_type', gguf.u32(FILE_TYPE_MOSTLY_F16)],
    ['clip.has_vision_encoder', gguf.bool(true)],
    ['clip.projector_type', gguf.str(projectorType)],
    ...clipVisionKeys(v, projectionDim, normalize),
  ];
}

export function llavaMmprojMetadata(spec: TinyModelSpec, name: string): [string, GgufValue][] {
  const v = spec.vision;
  return [
    ['general.architecture', gguf.str('clip')],
    ['clip.has_text_encoder', gguf.bool(false)],
    ['clip.has_vision_encoder', gguf.bool(true)],
    ['clip.has_llava_projector', gguf.bool(true)],
    ['general.file_type', gguf.u32(spec.textType === 'q4_k_m' ? FILE_TYPE_MOSTLY_Q4_K_M : FILE_TYPE_MOSTLY_F16)],
    ['general.name', gguf.str(name)],
    ['general.description', gguf.str('image encoder for LLaVA')],
    ['clip.projector_type', gguf.str('mlp')],
    // The projection width is CLIP's own visual projection's; LLaVA drops that layer, so clip.cpp
    // reads but never uses it.
    ...clipVisionKeys(v, v.nEmbd, { mean: CLIP_IMAGE_MEAN, std: CLIP_IMAGE_STD }),
    // false selects quick-GELU, CLIP ViT-L's activation.
    ['clip.use_gelu', gguf.bool(false)],
  ];
}

function mmprojContent(spec: TinyModelSpec, seed: number): GgufContent {
  checkSpec(spec, seed);
  const v = spec.vision;
  const outWidth = spec.projectorWidth ?? spec.text.nEmbd;
  const nPositions = imageTokenCount(spec) + 1; // + the class embedding
  const metadata: [string, GgufValue][] = [...llavaMmprojMetadata(spec, `${spec.name} mmproj (random weights)`), [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))]];

  const recipes: Recipe[] = [
    scaledWeight('mm.0.weight', [v.nEmbd, outWidth], TEXT_INIT.projector),
    zeros('mm.0.bias', outWidth),
    scaledWeight('mm.2.weight', [outWidth, outWidth], TEXT_INIT.projector),
    zeros('mm.2.bias', outWidth),
    { name: 'v.class_embd', shape: [v.nEmbd], type: GgmlType.F32, init: { kind: 'random', std: 0.02 } },
    weight('v.patch_embd.weight', [v.patchSize, v.patchSize, 3, v.nEmbd]),
    weight('v.position_embd.weight', [v.nEmbd, nPositions]),
    ones('v.pre_ln.weight', v.nEmbd),
    zeros('v.pre_ln.bias', v.nEmbd),
  ];
  for (let i = 0; i < v.nLayer; i++) {
    const p = `v.blk.${i}`;
    recipes.push(
      weight(`${p}.attn_k.weight`, [v.nEmbd, v.nEmbd]),
      zeros(`${p}.attn_k.bias`, v.nEmbd),
      weight(`${p}.attn_v.weight`, [v.nEmbd, v.nEmbd]),
      zeros(`${p}.attn_v.bias`, v.nEmbd),
      weight(`${p}.attn_q.weight`, [v.nEmbd, v.nEmbd]),
      zeros(`${p}.attn_q.bias`, v.nEmbd),
      weight(`${p}.attn_out.weight`, [v.nEmbd, v.nEmbd]),
      zeros(`${p}.attn_out.bias`, v.nEmbd),
      ones(`${p}.ln1.weight`, v.nEmbd),
      zeros(`${p}.ln1.bias`, v.nEmbd),
      // Legacy names: `ffn_down` holds fc1 (width -> nFf) and `ffn_up` fc2; clip.cpp swaps them back.
      weight(`${p}.ffn_down.weight`, [v.nEmbd, v.nFf]),
      zeros(`${p}.ffn_down.bias`, v.nFf),
      weight(`${p}.ffn_up.weight`, [v.nFf, v.nEmbd]),
      zeros(`${p}.ffn_up.bias`, v.nEmbd),
      ones(`${p}.ln2.weight`, v.nEmbd),
      zeros(`${p}.ln2.bias`, v.nEmbd),
    );
  }
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

/** Writes to a unique temporary name, then renames: readers never see a half-written file. */
export async function writeAtomically(path: string, content: GgufContent): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeGguf(tmp, content);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The paths of the pair named `name` in `dir`: `<name>.gguf` and `<name>-mmproj.gguf`. */
export function pairPaths(dir: string, name: string): TinyLlavaFiles {
  return { model: join(dir, `${name}.gguf`), mmproj: join(dir, `${name}-mmproj.gguf`) };
}

/** The paths a pair with this spec has in `dir`. */
export function tinyLlavaPaths(dir: string, spec: TinyModelSpec = TINY_LLAVA): TinyLlavaFiles {
  return pairPaths(dir, spec.name);
}

/** Writes a pair's two files into `dir` (created if needed). */
export async function writePair(dir: string, name: string, content: { model: () => GgufContent; mmproj: () => GgufContent }): Promise<TinyLlavaFiles> {
  const files = pairPaths(dir, name);
  await mkdir(dir, { recursive: true });
  await writeAtomically(files.model, content.model());
  await writeAtomically(files.mmproj, content.mmproj());
  return files;
}

/**
 * {@link writePair}, unless both files there already record `expected` (the fingerprint of their
 * generator version, spec and seed), so test suites pay the generation cost once.
 */
export async function ensurePair(dir: string, name: string, expected: string, content: { model: () => GgufContent; mmproj: () => GgufContent }): Promise<TinyLlavaFiles> {
  const files = pairPaths(dir, name);
  const [modelOk, mmprojOk] = await Promise.all([hasFingerprint(files.model, expected), hasFingerprint(files.mmproj, expected)]);
  return modelOk && mmprojOk ? files : writePair(dir, name, content);
}

/**
 * Writes a tiny LLaVA-1.5 pair into `dir` (created if needed) as `<name>.gguf` and
 * `<name>-mmproj.gguf`. The same spec and seed always give byte-identical files.
 */
export async function writeTinyLlava(dir: string, spec: TinyModelSpec = TINY_LLAVA, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> {
  return writePair(dir, spec.name, { model: () => textModelContent(spec, seed), mmproj: () => mmprojContent(spec, seed) });
}

/** Whether the file at `path` records fingerprint `expected` under {@link FINGERPRINT_KEY}. */
export async function hasFingerprint(path: string, expected: string): Promise<boolean> {
  try {
    const value = (await readGgufHeader(path)).kv.get(FINGERPRINT_KEY);
    return value?.type === GgufType.STRING && value.value === expected;
  } catch {
    return false; // missing or unreadable: rewrite it
  }
}

/**
 * Like {@link writeTinyLlava}, but keeps existing files whose recorded fingerprint (generator
 * version, spec and seed) matches, so test suites pay the generation cost once.
 */
export async function ensureTinyLlava(dir: string, spec: TinyModelSpec = TINY_LLAVA, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> {
  checkSpec(spec, seed);
  return ensurePair(dir, spec.name, fingerprint(spec, seed), { model: () => textModelContent(spec, seed), mmproj: () => mmprojContent(spec, seed) });
}
