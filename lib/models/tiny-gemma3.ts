/**
 * A deterministic tiny Gemma 3 vision model pair with random weights, for tests.
 *
 * Owns: the pair's spec, its vocabulary (Gemma's special tokens in front of the SentencePiece
 * pieces of ./tiny-model), its text model (llama.cpp's `gemma3` architecture) and its projector
 * (`clip.projector_type` `gemma3`), written with the keys and tensor names llama.cpp's
 * `src/models/gemma3.cpp`, `src/llama-vocab.cpp`, `tools/mtmd/clip.cpp` and
 * `tools/mtmd/models/siglip.cpp` read, in the layout of the published Gemma 3 GGUFs:
 * - the text model: RMS norms before and after both attention and feed-forward, per-head RMS norms
 *   of q and k, a GELU-gated feed-forward, token embeddings scaled by sqrt(width) (image embeddings
 *   are not), and sliding-window
 *   attention in all layers but every `slidingWindowPattern`-th, whose RoPE uses its own base;
 *   heads wider than width / heads (`attention.key_length`), as in Gemma 3;
 * - the vocabulary: SentencePiece (`tokenizer.ggml.model` `llama`, as Gemma 3's; `gemma4` is
 *   Gemma 4's BPE) without a space prefix, `<bos>` added;
 * - the projector: a SigLIP encoder (layer norms with biases, separate q/k/v with biases, GELU
 *   feed-forward, a learned position embedding) on a fixed square image, then Gemma 3's
 *   multimodal projector: the patch grid average-pooled by `poolKernel` per side (the default
 *   of 4 clip.cpp assumes when `clip.vision.projector.scale_factor` is absent, as in the published
 *   mmprojs), an RMS norm (`mm.soft_emb_norm.weight`) and a linear map to the text width
 *   (`mm.input_projection.weight`, stored text width first).
 * May import: ./tiny-model (the vocabulary and weight recipes), ./chat-templates, ../gguf.
 */

import { GgmlType, GgufType, type GgufValue } from '../gguf/format';
import { gguf, type GgufContent } from '../gguf/writer';
import { GEMMA3_TEMPLATE } from './chat-templates';
import {
  BYTE_TOKEN_BASE,
  DEFAULT_SEED,
  FILE_TYPE_MOSTLY_F16,
  FINGERPRINT_KEY,
  TEXT_INIT,
  ensurePair,
  familyMmprojKeys,
  gatedFeedForward,
  materialize,
  ones,
  outputHead,
  pairPaths,
  scaledWeight,
  tinyVocab,
  TokenType,
  weight,
  zeros,
  type Recipe,
  type TinyLlavaFiles,
  type TinyTextSpec,
  type TinyVocab,
} from './tiny-model';

/** Everything that determines the tiny Gemma 3 pair (together with the seed). */
export interface TinyGemma3Spec {
  /** File-name stem: `<name>.gguf` and `<name>-mmproj.gguf`. */
  readonly name: string;
  readonly text: TinyTextSpec & {
    /** `gemma3.attention.key_length` (and value_length): the head width, which Gemma 3 sets apart from width / heads. */
    readonly headDim: number;
    /** `gemma3.attention.sliding_window`: the tokens a sliding-window layer sees. */
    readonly slidingWindow: number;
    /** `gemma3.attention.sliding_window_pattern`: every this-th layer attends to the whole context. */
    readonly slidingWindowPattern: number;
    /** `gemma3.rope.freq_base_swa`: the RoPE base of the sliding-window layers. */
    readonly ropeFreqBaseSwa: number;
  };
  readonly vision: {
    /** `clip.vision.image_size`: every image is letterboxed to this square. */
    readonly imageSize: number;
    readonly patchSize: number;
    /** The average pooling's kernel and stride per side (clip.cpp's default for Gemma 3: 4, no key written). */
    readonly poolKernel: 4;
    readonly nEmbd: number;
    readonly nLayer: number;
    readonly nHead: number;
    readonly nFf: number;
    readonly layerNormEps: number;
  };
}

/**
 * Gemma 3's geometry at a tiny scale: 224-pixel images in 14-pixel patches, a 16 x 16 grid pooled
 * 4 x 4, so every image is 16 tokens; a 2-layer text model whose layer 0 has sliding-window
 * attention and layer 1 global attention, with 128-wide heads (2 x width / heads) and 2 KV heads.
 * The encoder's feed-forward width differs from its width: clip.cpp swaps `ffn_up` and `ffn_down`
 * back when `ffn_down` takes the width (old conversions), which equal widths would trigger.
 */
export const TINY_GEMMA3: TinyGemma3Spec = {
  name: 'tiny-gemma3',
  text: {
    nEmbd: 256,
    nLayer: 2,
    nHead: 4,
    nHeadKv: 2,
    headDim: 128,
    nFf: 512,
    contextLength: 8192,
    ropeFreqBase: 1000000,
    ropeFreqBaseSwa: 10000,
    rmsEps: 1e-6,
    slidingWindow: 128,
    slidingWindowPattern: 2,
  },
  vision: { imageSize: 224, patchSize: 14, poolKernel: 4, nEmbd: 64, nLayer: 2, nHead: 2, nFf: 128, layerNormEps: 1e-6 },
};

/** The special tokens of the tiny Gemma 3 vocabulary, at Gemma's ids for the first four. */
export const GEMMA3_SPECIAL_TOKENS = ['<pad>', '<eos>', '<bos>', '<unk>', '<start_of_turn>', '<end_of_turn>', '<start_of_image>', '<end_of_image>'] as const;
const PAD_ID = 0;
const EOS_ID = 1;
const BOS_ID = 2;
const UNK_ID = 3;

/**
 * The tiny Gemma 3 vocabulary: {@link GEMMA3_SPECIAL_TOKENS} (ids 0 to 7, `<unk>` UNKNOWN, the
 * others CONTROL, so that mtmd's `<start_of_image>` / `<end_of_image>` and the template's turn
 * markers are one token each), then the byte tokens and pieces of tiny-model.ts's vocabulary.
 */
export function tinyGemma3Vocab(): TinyVocab {
  const base = tinyVocab();
  const specials = GEMMA3_SPECIAL_TOKENS.map((_, id) => (id === UNK_ID ? TokenType.UNKNOWN : TokenType.CONTROL));
  return {
    tokens: [...GEMMA3_SPECIAL_TOKENS, ...base.tokens.slice(BYTE_TOKEN_BASE)],
    scores: [...GEMMA3_SPECIAL_TOKENS.map(() => 0), ...base.scores.slice(BYTE_TOKEN_BASE)],
    types: [...specials, ...base.types.slice(BYTE_TOKEN_BASE)],
  };
}

/** SigLIP's normalization constants, as Gemma 3's mmproj records them. */
const SIGLIP_IMAGE_MEAN: readonly number[] = [0.5, 0.5, 0.5];
const SIGLIP_IMAGE_STD: readonly number[] = [0.5, 0.5, 0.5];

/** Tokens per image: the patch grid's side pooled by the kernel, squared. */
export function gemma3ImageTokens(spec: TinyGemma3Spec): number {
  return (spec.vision.imageSize / spec.vision.patchSize / spec.vision.poolKernel) ** 2;
}

// --- spec checks and fingerprint -----------------------------------------------------------------

/** Bump when the generated bytes change for an unchanged spec and seed, so cached files are rewritten. */
const GENERATOR_VERSION = 2; // 2: the f32 position embedding random, not block-patterned

function checkSpec(spec: TinyGemma3Spec, seed: number): void {
  const { text, vision } = spec;
  const fail = (why: string): never => {
    throw new RangeError(`invalid tiny Gemma 3 spec ${spec.name}: ${why}`);
  };
  if (!/^[\w.-]+$/.test(spec.name)) fail('name must be a plain file-name stem');
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail('seed must be a uint32');
  if (text.nHead % text.nHeadKv !== 0) fail('text.nHead must be divisible by text.nHeadKv');
  if (text.headDim % 2 !== 0) fail('text.headDim must be even (RoPE rotates pairs)');
  if (!(text.slidingWindowPattern >= 2 && text.slidingWindowPattern <= text.nLayer)) fail('the layers must include sliding-window and global ones');
  // The pooling must tile the grid: clip.cpp counts side² / kernel² tokens, the graph gives (side / kernel)².
  if (vision.imageSize % (vision.patchSize * vision.poolKernel) !== 0) fail('vision.imageSize must be a multiple of patchSize * poolKernel');
  if (vision.nEmbd % vision.nHead !== 0) fail('vision.nEmbd must be divisible by vision.nHead');
  if (vision.nFf === vision.nEmbd) fail('vision.nFf must differ from vision.nEmbd (clip.cpp would swap ffn_up and ffn_down)');
}

function fingerprint(spec: TinyGemma3Spec, seed: number): string {
  const { text: t, vision: v } = spec;
  return JSON.stringify({
    generator: GENERATOR_VERSION,
    seed,
    name: spec.name,
    text: [t.nEmbd, t.nLayer, t.nHead, t.nHeadKv, t.headDim, t.nFf, t.contextLength, t.ropeFreqBase, t.ropeFreqBaseSwa, t.rmsEps, t.slidingWindow, t.slidingWindowPattern],
    vision: [v.imageSize, v.patchSize, v.poolKernel, v.nEmbd, v.nLayer, v.nHead, v.nFf, v.layerNormEps],
  });
}

// --- the text model ------------------------------------------------------------------------------

function textModelContent(spec: TinyGemma3Spec, seed: number): GgufContent {
  const t = spec.text;
  const vocab = tinyGemma3Vocab();
  const nVocab = vocab.tokens.length;
  const qWidth = t.headDim * t.nHead;
  const kvWidth = t.headDim * t.nHeadKv;
  const metadata: [string, GgufValue][] = [
    ['general.architecture', gguf.str('gemma3')],
    ['general.name', gguf.str(`${spec.name} (random weights)`)],
    ['general.file_type', gguf.u32(FILE_TYPE_MOSTLY_F16)],
    ['gemma3.context_length', gguf.u32(t.contextLength)],
    ['gemma3.embedding_length', gguf.u32(t.nEmbd)],
    ['gemma3.block_count', gguf.u32(t.nLayer)],
    ['gemma3.feed_forward_length', gguf.u32(t.nFf)],
    ['gemma3.attention.head_count', gguf.u32(t.nHead)],
    ['gemma3.attention.head_count_kv', gguf.u32(t.nHeadKv)],
    ['gemma3.attention.key_length', gguf.u32(t.headDim)],
    ['gemma3.attention.value_length', gguf.u32(t.headDim)],
    ['gemma3.attention.layer_norm_rms_epsilon', gguf.f32(t.rmsEps)],
    ['gemma3.attention.sliding_window', gguf.u32(t.slidingWindow)],
    ['gemma3.attention.sliding_window_pattern', gguf.u32(t.slidingWindowPattern)],
    ['gemma3.rope.freq_base', gguf.f32(t.ropeFreqBase)],
    ['gemma3.rope.freq_base_swa', gguf.f32(t.ropeFreqBaseSwa)],
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.pre', gguf.str('default')],
    ['tokenizer.ggml.tokens', gguf.array(GgufType.STRING, vocab.tokens)],
    ['tokenizer.ggml.scores', gguf.array(GgufType.FLOAT32, vocab.scores)],
    ['tokenizer.ggml.token_type', gguf.array(GgufType.INT32, vocab.types)],
    ['tokenizer.ggml.bos_token_id', gguf.u32(BOS_ID)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(EOS_ID)],
    ['tokenizer.ggml.unknown_token_id', gguf.u32(UNK_ID)],
    ['tokenizer.ggml.padding_token_id', gguf.u32(PAD_ID)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(true)],
    ['tokenizer.ggml.add_eos_token', gguf.bool(false)],
    // Gemma's SentencePiece model adds no dummy prefix.
    ['tokenizer.ggml.add_space_prefix', gguf.bool(false)],
    ['tokenizer.chat_template', gguf.str(GEMMA3_TEMPLATE)],
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  // Scaled by sqrt(width) on input, so the stream starts at unit scale, as with Gemma's small trained embeddings.
  const recipes: Recipe[] = [weight('token_embd.weight', [t.nEmbd, nVocab], TEXT_INIT.embedding / Math.sqrt(t.nEmbd))];
  for (let i = 0; i < t.nLayer; i++) {
    const p = `blk.${i}`;
    recipes.push(
      ones(`${p}.attn_norm.weight`, t.nEmbd),
      scaledWeight(`${p}.attn_q.weight`, [t.nEmbd, qWidth], TEXT_INIT.queryKey),
      scaledWeight(`${p}.attn_k.weight`, [t.nEmbd, kvWidth], TEXT_INIT.queryKey),
      scaledWeight(`${p}.attn_v.weight`, [t.nEmbd, kvWidth], TEXT_INIT.valueOutput),
      ones(`${p}.attn_q_norm.weight`, t.headDim),
      ones(`${p}.attn_k_norm.weight`, t.headDim),
      scaledWeight(`${p}.attn_output.weight`, [qWidth, t.nEmbd], TEXT_INIT.valueOutput),
      ones(`${p}.post_attention_norm.weight`, t.nEmbd),
      ...gatedFeedForward(p, t),
      ones(`${p}.post_ffw_norm.weight`, t.nEmbd),
    );
  }
  // Untied (llama.cpp takes the token embedding when it is absent, as in the published files), so
  // that the special and byte tokens (ids 0 to 263) get zero logits (outputHead).
  recipes.push(...outputHead(t.nEmbd, nVocab, GEMMA3_SPECIAL_TOKENS.length + 256));
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the projector -------------------------------------------------------------------------------

function mmprojContent(spec: TinyGemma3Spec, seed: number): GgufContent {
  const v = spec.vision;
  const E = v.nEmbd;
  const out = spec.text.nEmbd;
  const side = v.imageSize / v.patchSize;
  const metadata: [string, GgufValue][] = [
    // The projection width is read as required by clip.cpp, unused by Gemma 3's graph; the
    // converter writes the text width.
    ...familyMmprojKeys(spec.name, 'gemma3', v, out, { mean: SIGLIP_IMAGE_MEAN, std: SIGLIP_IMAGE_STD }),
    // SigLIP's feed-forward: GELU (tanh approximation).
    ['clip.use_gelu', gguf.bool(true)],
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  const linear = (name: string, shape: readonly [number, number]): Recipe[] => [weight(`${name}.weight`, shape), zeros(`${name}.bias`, shape[1])];
  const norm = (name: string): Recipe[] => [ones(`${name}.weight`, E), zeros(`${name}.bias`, E)];
  const recipes: Recipe[] = [
    weight('v.patch_embd.weight', [v.patchSize, v.patchSize, 3, E]),
    zeros('v.patch_embd.bias', E),
    weight('v.position_embd.weight', [E, side * side], 0.02, GgmlType.F32),
  ];
  for (let i = 0; i < v.nLayer; i++) {
    const p = `v.blk.${i}`;
    recipes.push(
      ...norm(`${p}.ln1`),
      ...linear(`${p}.attn_q`, [E, E]),
      ...linear(`${p}.attn_k`, [E, E]),
      ...linear(`${p}.attn_v`, [E, E]),
      ...linear(`${p}.attn_out`, [E, E]),
      ...norm(`${p}.ln2`),
      ...linear(`${p}.ffn_up`, [E, v.nFf]),
      ...linear(`${p}.ffn_down`, [v.nFf, E]),
    );
  }
  recipes.push(
    ...norm('v.post_ln'),
    ones('mm.soft_emb_norm.weight', E),
    // Stored [text width, vision width] (the graph multiplies by its transpose); fan-in is the vision width.
    weight('mm.input_projection.weight', [out, E], TEXT_INIT.projector / Math.sqrt(E)),
  );
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the two files -------------------------------------------------------------------------------

/** The paths a pair with this spec has in `dir`. */
export function tinyGemma3Paths(dir: string, spec: TinyGemma3Spec = TINY_GEMMA3): TinyLlavaFiles {
  return pairPaths(dir, spec.name);
}

/**
 * Writes the tiny Gemma 3 pair into `dir` (created if needed), unless both files there already
 * record its fingerprint (generator version, spec and seed). The same seed always gives
 * byte-identical files.
 */
export async function ensureTinyGemma3(dir: string, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> {
  const spec = TINY_GEMMA3;
  checkSpec(spec, seed);
  return ensurePair(dir, spec.name, fingerprint(spec, seed), { model: () => textModelContent(spec, seed), mmproj: () => mmprojContent(spec, seed) });
}
