/**
 * Deterministic tiny Qwen2.5-VL and Qwen3-VL model pairs with random weights, for tests.
 *
 * Owns: the specs of the two pairs, their text models (`qwen2vl` and `qwen3vl` architectures with
 * the byte-level BPE vocabulary of ./tiny-bpe-vocab) and their projectors (`qwen2.5vl_merger`,
 * `qwen3vl_merger`), written with the keys and tensor names llama.cpp's `src/models/qwen2vl.cpp`,
 * `src/models/qwen3vl.cpp`, `tools/mtmd/clip.cpp` and `tools/mtmd/models/qwen{2,3}vl.cpp` read,
 * in the layout llama.cpp's converter gives the published GGUFs:
 * - both encoders cut the image into `P`-pixel patches with two convolutions (the two temporal
 *   slices of the original 3-D patch convolution: `v.patch_embd.weight` and `.weight.1`), run a
 *   ViT with 2-D M-RoPE, and merge each 2x2 block of patches into one token (an MLP on the four
 *   patches side by side: `mm.0`, GELU, `mm.2`);
 * - Qwen2.5-VL: RMS norms without bias, gated SiLU feed-forward, separate q/k/v with biases, window
 *   attention in all layers but every `n_wa_pattern`-th;
 * - Qwen3-VL: layer norms with bias, GELU feed-forward, a fused `attn_qkv`, a patch bias, a learned
 *   position embedding (interpolated to the image), and deepstack mergers on some layers whose
 *   outputs are appended to each token's embedding: the projector gives `n_embd * (1 + deepstack
 *   layers)` values per token, and the text model adds the extra slices to its first layers'
 *   outputs (`qwen3vl.n_deepstack_layers`).
 * May import: ./tiny-model (the shared weight recipes), ./tiny-bpe-vocab, ./chat-templates, ../gguf.
 */

import { GgmlType, GgufType, type GgufValue } from '../gguf/format';
import { gguf, type GgufContent } from '../gguf/writer';
import { QWEN25_VL_TEMPLATE, QWEN3_VL_TEMPLATE } from './chat-templates';
import { bpeVocabMetadata, tinyBpeVocab, type TinyBpeVocab } from './tiny-bpe-vocab';
import {
  CLIP_IMAGE_MEAN,
  CLIP_IMAGE_STD,
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
  weight,
  zeros,
  type Recipe,
  type TinyLlavaFiles,
  type TinyTextSpec,
} from './tiny-model';

/** Which of the two families a spec is. */
export type QwenVlFamily = 'qwen2.5-vl' | 'qwen3-vl';

/** Shape of a Qwen-VL vision encoder and merger. */
export interface TinyQwenVisionSpec {
  /** `clip.vision.image_size`: the side of the square image the warmup and token budget use. */
  readonly imageSize: number;
  readonly patchSize: number;
  /** Patches merged per side into one token (`clip.vision.spatial_merge_size`); llama.cpp's graphs only run 2. */
  readonly spatialMerge: 2;
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nFf: number;
  readonly layerNormEps: number;
  /** Qwen2.5-VL: every `windowPattern`-th layer attends to the whole image, the others within windows. */
  readonly windowPattern?: number;
  /** Qwen3-VL: the encoder layers with a deepstack merger. */
  readonly deepstackLayers?: readonly number[];
}

/** Everything that determines a tiny Qwen-VL pair (together with the seed). */
export interface TinyQwenVlSpec {
  /** File-name stem: `<name>.gguf` and `<name>-mmproj.gguf`. */
  readonly name: string;
  readonly family: QwenVlFamily;
  readonly text: TinyTextSpec & {
    /** `<arch>.rope.dimension_sections`: M-RoPE's rotary pairs for time, height, width (and unused); they sum to half a head. */
    readonly ropeSections: readonly [number, number, number, number];
  };
  readonly vision: TinyQwenVisionSpec;
}

/** The special tokens of the tiny Qwen vocabularies, as in Qwen2's tokenizer, all CONTROL. */
export const QWEN_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>', '<|vision_end|>', '<|image_pad|>'] as const;

/** The tiny Qwen vocabulary: {@link QWEN_SPECIAL_TOKENS} (ids 0 to 5), the 256 bytes, merged pieces. */
export function tinyQwenVocab(): TinyBpeVocab {
  return tinyBpeVocab(QWEN_SPECIAL_TOKENS);
}

/** Text model of both pairs: as tiny-model.ts's (256 wide, 4 heads of 64), with 2 KV heads and Qwen's RoPE base. */
const QWEN_TEXT: TinyTextSpec = {
  nEmbd: 256,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 2,
  nFf: 512,
  contextLength: 4096,
  ropeFreqBase: 1000000,
  rmsEps: 1e-6,
};

/**
 * Qwen2.5-VL's geometry: 14-pixel patches merged 2x2, so one token per 28x28 pixels; window
 * attention in layer 0, full attention in layer 1 (`n_wa_pattern` 2). M-RoPE sections in the
 * proportions of Qwen2.5-VL's 16/24/24 for 64-wide heads.
 */
export const TINY_QWEN25_VL: TinyQwenVlSpec = {
  name: 'tiny-qwen25-vl',
  family: 'qwen2.5-vl',
  text: { ...QWEN_TEXT, ropeSections: [8, 12, 12, 0] },
  vision: { imageSize: 224, patchSize: 14, spatialMerge: 2, nEmbd: 64, nLayer: 2, nHead: 2, nFf: 128, layerNormEps: 1e-6, windowPattern: 2 },
};

/**
 * Qwen3-VL's geometry: 16-pixel patches merged 2x2, so one token per 32x32 pixels; a deepstack
 * merger on encoder layer 0 of 2, so the projector gives 2 x 256 = 512 values per token (one
 * deepstack layer only: the 2-layer text model can take fewer than 2).
 * M-RoPE sections in the proportions of Qwen3-VL's 24/20/20.
 */
export const TINY_QWEN3_VL: TinyQwenVlSpec = {
  name: 'tiny-qwen3-vl',
  family: 'qwen3-vl',
  text: { ...QWEN_TEXT, ropeSections: [12, 10, 10, 0] },
  vision: { imageSize: 256, patchSize: 16, spatialMerge: 2, nEmbd: 64, nLayer: 2, nHead: 2, nFf: 128, layerNormEps: 1e-6, deepstackLayers: [0] },
};

/** Qwen3-VL's normalization constants (SigLIP's). */
const SIGLIP_IMAGE_MEAN: readonly number[] = [0.5, 0.5, 0.5];
const SIGLIP_IMAGE_STD: readonly number[] = [0.5, 0.5, 0.5];

/** The width of what the projector gives per token: the text width, once more per deepstack layer. */
export function qwenVlProjectorWidth(spec: TinyQwenVlSpec): number {
  return spec.text.nEmbd * (1 + (spec.vision.deepstackLayers?.length ?? 0));
}

// --- spec checks and fingerprint -----------------------------------------------------------------

/** Bump when the generated bytes change for an unchanged spec and seed, so cached files are rewritten. */
const GENERATOR_VERSION = 3; // 2: the f32 position embedding random, not block-patterned; 3: spatial_merge_size after the shared CLIP keys

function checkSpec(spec: TinyQwenVlSpec, seed: number): void {
  const { text, vision } = spec;
  const fail = (why: string): never => {
    throw new RangeError(`invalid tiny Qwen-VL spec ${spec.name}: ${why}`);
  };
  if (!/^[\w.-]+$/.test(spec.name)) fail('name must be a plain file-name stem');
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail('seed must be a uint32');
  const headDim = text.nEmbd / text.nHead;
  if (!Number.isInteger(headDim) || text.nHead % text.nHeadKv !== 0) fail('text heads must divide the width, KV heads the heads');
  if (text.ropeSections.reduce((a, b) => a + b, 0) !== headDim / 2) fail('text.ropeSections must sum to half a head');
  if (vision.imageSize % (vision.patchSize * vision.spatialMerge) !== 0) fail('vision.imageSize must be a multiple of patchSize * spatialMerge');
  // The encoder's M-RoPE splits each head into 4 sections.
  if (vision.nEmbd % vision.nHead !== 0 || (vision.nEmbd / vision.nHead) % 4 !== 0) fail('vision heads must be a multiple of 4 wide');
  const deepstack = vision.deepstackLayers ?? [];
  if (spec.family === 'qwen2.5-vl' ? deepstack.length > 0 || !(vision.windowPattern! >= 1) : vision.windowPattern !== undefined) {
    fail('Qwen2.5-VL has a window pattern and no deepstack layers; Qwen3-VL no window pattern');
  }
  if (deepstack.some((l) => !Number.isInteger(l) || l < 0 || l >= vision.nLayer) || new Set(deepstack).size !== deepstack.length) {
    fail('vision.deepstackLayers must be distinct encoder layers');
  }
  // The text model adds deepstack slice i to the output of its layer i, but not to the last one,
  // which keeps only the rows of the output tokens (llama.cpp aborts on the mismatch).
  if (deepstack.length >= text.nLayer) fail('fewer deepstack layers than text layers');
}

function fingerprint(spec: TinyQwenVlSpec, seed: number): string {
  const { text: t, vision: v } = spec;
  return JSON.stringify({
    generator: GENERATOR_VERSION,
    seed,
    name: spec.name,
    family: spec.family,
    text: [t.nEmbd, t.nLayer, t.nHead, t.nHeadKv, t.nFf, t.contextLength, t.ropeFreqBase, t.rmsEps, t.ropeSections],
    vision: [v.imageSize, v.patchSize, v.spatialMerge, v.nEmbd, v.nLayer, v.nHead, v.nFf, v.layerNormEps, v.windowPattern ?? null, v.deepstackLayers ?? null],
  });
}

// --- the text model ------------------------------------------------------------------------------

function textModelContent(spec: TinyQwenVlSpec, seed: number): GgufContent {
  const t = spec.text;
  const qwen3 = spec.family === 'qwen3-vl';
  const arch = qwen3 ? 'qwen3vl' : 'qwen2vl';
  const vocab = tinyQwenVocab();
  const nVocab = vocab.tokens.length;
  const headDim = t.nEmbd / t.nHead;
  const kvWidth = headDim * t.nHeadKv;
  const metadata: [string, GgufValue][] = [
    ['general.architecture', gguf.str(arch)],
    ['general.name', gguf.str(`${spec.name} (random weights)`)],
    ['general.file_type', gguf.u32(FILE_TYPE_MOSTLY_F16)],
    [`${arch}.context_length`, gguf.u32(t.contextLength)],
    [`${arch}.embedding_length`, gguf.u32(t.nEmbd)],
    [`${arch}.block_count`, gguf.u32(t.nLayer)],
    [`${arch}.feed_forward_length`, gguf.u32(t.nFf)],
    [`${arch}.attention.head_count`, gguf.u32(t.nHead)],
    [`${arch}.attention.head_count_kv`, gguf.u32(t.nHeadKv)],
    [`${arch}.attention.layer_norm_rms_epsilon`, gguf.f32(t.rmsEps)],
    [`${arch}.rope.freq_base`, gguf.f32(t.ropeFreqBase)],
    [`${arch}.rope.dimension_sections`, gguf.array(GgufType.INT32, t.ropeSections)],
    ...(qwen3 ? ([[`${arch}.n_deepstack_layers`, gguf.u32(spec.vision.deepstackLayers!.length)]] as [string, GgufValue][]) : []),
    ...bpeVocabMetadata(vocab, { eos: '<|im_end|>', padding: '<|endoftext|>' }),
    ['tokenizer.chat_template', gguf.str(qwen3 ? QWEN3_VL_TEMPLATE : QWEN25_VL_TEMPLATE)],
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  const recipes: Recipe[] = [weight('token_embd.weight', [t.nEmbd, nVocab], TEXT_INIT.embedding)];
  for (let i = 0; i < t.nLayer; i++) {
    const p = `blk.${i}`;
    recipes.push(
      ones(`${p}.attn_norm.weight`, t.nEmbd),
      scaledWeight(`${p}.attn_q.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.queryKey),
      scaledWeight(`${p}.attn_k.weight`, [t.nEmbd, kvWidth], TEXT_INIT.queryKey),
      scaledWeight(`${p}.attn_v.weight`, [t.nEmbd, kvWidth], TEXT_INIT.valueOutput),
      // Qwen2's attention has q/k/v biases; Qwen3 has none but RMS-normalizes q and k per head.
      ...(qwen3
        ? [ones(`${p}.attn_q_norm.weight`, headDim), ones(`${p}.attn_k_norm.weight`, headDim)]
        : [zeros(`${p}.attn_q.bias`, t.nEmbd), zeros(`${p}.attn_k.bias`, kvWidth), zeros(`${p}.attn_v.bias`, kvWidth)]),
      scaledWeight(`${p}.attn_output.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.valueOutput),
      ...gatedFeedForward(p, t),
    );
  }
  // The special tokens (ids 0 to 5) get zero logits (outputHead).
  recipes.push(...outputHead(t.nEmbd, nVocab, QWEN_SPECIAL_TOKENS.length));
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the projector -------------------------------------------------------------------------------

function mmprojContent(spec: TinyQwenVlSpec, seed: number): GgufContent {
  const v = spec.vision;
  const qwen3 = spec.family === 'qwen3-vl';
  const E = v.nEmbd;
  const merged = E * v.spatialMerge * v.spatialMerge; // four patches side by side
  const out = spec.text.nEmbd; // each merger's output; deepstack ones are appended
  const metadata: [string, GgufValue][] = [
    // The projection width is the merger's output width; Qwen2.5-VL's window attention reorders
    // its output rows by it.
    ...familyMmprojKeys(spec.name, qwen3 ? 'qwen3vl_merger' : 'qwen2.5vl_merger', v, out, qwen3 ? { mean: SIGLIP_IMAGE_MEAN, std: SIGLIP_IMAGE_STD } : { mean: CLIP_IMAGE_MEAN, std: CLIP_IMAGE_STD }),
    ['clip.vision.spatial_merge_size', gguf.u32(v.spatialMerge)],
    // Qwen2.5-VL's feed-forward is gated SiLU, Qwen3-VL's plain GELU (tanh approximation).
    qwen3 ? ['clip.use_gelu', gguf.bool(true)] : ['clip.use_silu', gguf.bool(true)],
    ...(qwen3 ? [] : ([['clip.vision.n_wa_pattern', gguf.u32(v.windowPattern!)]] as [string, GgufValue][])),
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  const recipes: Recipe[] = [
    weight('v.patch_embd.weight', [v.patchSize, v.patchSize, 3, E]),
    weight('v.patch_embd.weight.1', [v.patchSize, v.patchSize, 3, E]),
  ];
  if (qwen3) {
    const side = v.imageSize / v.patchSize;
    recipes.push(zeros('v.patch_embd.bias', E), weight('v.position_embd.weight', [E, side * side], 0.02, GgmlType.F32));
  }
  // A norm: RMS (weight only) in Qwen2.5-VL, layer norm (weight and bias) in Qwen3-VL.
  const norm = (name: string, n: number): Recipe[] => (qwen3 ? [ones(`${name}.weight`, n), zeros(`${name}.bias`, n)] : [ones(`${name}.weight`, n)]);
  const linear = (name: string, shape: readonly [number, number]): Recipe[] => [weight(`${name}.weight`, shape), zeros(`${name}.bias`, shape[1])];
  for (let i = 0; i < v.nLayer; i++) {
    const p = `v.blk.${i}`;
    recipes.push(
      ...norm(`${p}.ln1`, E),
      ...(qwen3 ? linear(`${p}.attn_qkv`, [E, 3 * E]) : [...linear(`${p}.attn_q`, [E, E]), ...linear(`${p}.attn_k`, [E, E]), ...linear(`${p}.attn_v`, [E, E])]),
      ...linear(`${p}.attn_out`, [E, E]),
      ...norm(`${p}.ln2`, E),
      ...(qwen3 ? [] : linear(`${p}.ffn_gate`, [E, v.nFf])),
      ...linear(`${p}.ffn_up`, [E, v.nFf]),
      ...linear(`${p}.ffn_down`, [v.nFf, E]),
    );
  }
  // The merger: a norm over each patch, then the MLP over the four merged patches.
  const merger = (name: (layer: number) => string): Recipe[] => [
    scaledWeight(`${name(0)}.weight`, [merged, merged], TEXT_INIT.projector),
    zeros(`${name(0)}.bias`, merged),
    scaledWeight(`${name(2)}.weight`, [merged, out], TEXT_INIT.projector),
    zeros(`${name(2)}.bias`, out),
  ];
  recipes.push(...norm('v.post_ln', E), ...merger((l) => `mm.${l}`));
  // Deepstack mergers normalize the four merged patches together (Qwen3-VL's postshuffle norm).
  for (const layer of v.deepstackLayers ?? []) {
    const p = `v.deepstack.${layer}`;
    recipes.push(...norm(`${p}.norm`, merged), ...merger((l) => `${p}.fc${l === 0 ? 1 : 2}`));
  }
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the two files -------------------------------------------------------------------------------

/** The paths a pair with this spec has in `dir`. */
export function tinyQwenVlPaths(dir: string, spec: TinyQwenVlSpec): TinyLlavaFiles {
  return pairPaths(dir, spec.name);
}

/**
 * Writes `spec`'s pair into `dir` (created if needed), unless both files there already record its
 * fingerprint (generator version, spec and seed). The same spec and seed always give byte-identical files.
 */
export async function ensureTinyQwenVl(dir: string, spec: TinyQwenVlSpec, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> {
  checkSpec(spec, seed);
  return ensurePair(dir, spec.name, fingerprint(spec, seed), { model: () => textModelContent(spec, seed), mmproj: () => mmprojContent(spec, seed) });
}

/** {@link ensureTinyQwenVl} for {@link TINY_QWEN25_VL}. */
export const ensureTinyQwen25Vl = (dir: string, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> => ensureTinyQwenVl(dir, TINY_QWEN25_VL, seed);

/** {@link ensureTinyQwenVl} for {@link TINY_QWEN3_VL}. */
export const ensureTinyQwen3Vl = (dir: string, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> => ensureTinyQwenVl(dir, TINY_QWEN3_VL, seed);
