/**
 * A deterministic tiny InternVL (2.5 / 3) model pair with random weights, for tests.
 *
 * Owns: the spec of the pair, its text model (llama.cpp's `qwen2` architecture, as InternVL 2.5 / 3
 * ship Qwen2.5 LLMs, on the byte-level BPE vocabulary of ./tiny-bpe-vocab with InternVL's image
 * tokens) and its projector (`internvl`), written with the keys and tensor names llama.cpp's
 * `src/models/qwen2.cpp`, `tools/mtmd/clip.cpp` and `tools/mtmd/models/internvl.cpp` read, in the
 * layout llama.cpp's converter gives the published GGUFs of the InternViT-300M models (1B to 14B):
 * - the encoder cuts each `imageSize` tile into `P`-pixel patches (a convolution with a bias),
 *   appends a class token, adds a learned position embedding (one row per patch, one for the class
 *   token), and runs a ViT with layer norms, separate q/k/v with biases, a GELU feed-forward and
 *   the layer scales `ls1` / `ls2` on both residual branches;
 * - the class token is dropped and the pixel shuffle puts each `scaleFactor` x `scaleFactor` block
 *   of patches side by side into one token, which InternVL's `mlp1` projects: a layer norm
 *   (`mm.model.mlp.0`), linear (`.1`), GELU, linear (`.3`) to the text width.
 * mtmd cuts an image larger than a tile into a grid of tiles (between `minTiles` and `maxTiles`)
 * and adds the whole image as a last tile; each tile is `(imageSize / P / scaleFactor)^2` tokens.
 * May import: ./tiny-model (the shared weight recipes), ./tiny-bpe-vocab, ./chat-templates, ../gguf.
 */

import { GgmlType, type GgufValue } from '../gguf/format';
import { gguf, type GgufContent } from '../gguf/writer';
import { INTERNVL_TEMPLATE } from './chat-templates';
import { bpeVocabMetadata, tinyBpeVocab, type TinyBpeVocab } from './tiny-bpe-vocab';
import {
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

/** Shape of an InternViT encoder, its pixel shuffle and the tiling mtmd applies to it. */
export interface TinyInternVisionSpec {
  /** `clip.vision.image_size`: the side of a tile. */
  readonly imageSize: number;
  readonly patchSize: number;
  /** `clip.vision.projector.scale_factor`: patches per side shuffled into one token (InternVL's 1 / downsample_ratio). */
  readonly scaleFactor: number;
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nFf: number;
  readonly layerNormEps: number;
  /** `clip.vision.preproc_min_tiles` / `preproc_max_tiles`: InternVL's min / max_dynamic_patch. */
  readonly minTiles: number;
  readonly maxTiles: number;
}

/** Everything that determines a tiny InternVL pair (together with the seed). */
export interface TinyInternVlSpec {
  /** File-name stem: `<name>.gguf` and `<name>-mmproj.gguf`. */
  readonly name: string;
  readonly text: TinyTextSpec;
  readonly vision: TinyInternVisionSpec;
}

/**
 * The special tokens of the tiny InternVL vocabulary, all CONTROL: Qwen2's, and the image tokens
 * InternVL adds (`<img>` and `</img>`, which mtmd puts around an image, and `<IMG_CONTEXT>`, the
 * placeholder the Python processor repeats in their place).
 */
export const INTERNVL_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<img>', '</img>', '<IMG_CONTEXT>'] as const;

/** The tiny InternVL vocabulary: {@link INTERNVL_SPECIAL_TOKENS} (ids 0 to 5), the 256 bytes, merged pieces. */
export function tinyInternVlVocab(): TinyBpeVocab {
  return tinyBpeVocab(INTERNVL_SPECIAL_TOKENS);
}

/**
 * The tiny pair: the Qwen pairs' text model (256 wide, 4 heads, 2 KV heads, Qwen's RoPE base);
 * 56-pixel tiles of 4 x 4 patches of 14 pixels, shuffled 2 x 2, so 4 tokens a tile (InternVL's
 * 448-pixel tiles give 256); 1 to 6 tiles (InternVL uses 1 to 12; 6 keeps the grids few enough to
 * work out by hand).
 */
export const TINY_INTERNVL: TinyInternVlSpec = {
  name: 'tiny-internvl',
  text: { nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 512, contextLength: 4096, ropeFreqBase: 1000000, rmsEps: 1e-6 },
  vision: { imageSize: 56, patchSize: 14, scaleFactor: 2, nEmbd: 64, nLayer: 2, nHead: 2, nFf: 128, layerNormEps: 1e-6, minTiles: 1, maxTiles: 6 },
};

/** InternVL's normalization constants (ImageNet's). */
const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];
/** The layer scales' value: InternViT starts them at `initializer_factor` (0.1 by default) times ones. */
const LAYER_SCALE = 0.1;

/** The image tokens of one tile. */
export function internVlTileTokens(spec: TinyInternVlSpec): number {
  const side = spec.vision.imageSize / spec.vision.patchSize / spec.vision.scaleFactor;
  return side * side;
}

// --- spec checks and fingerprint -----------------------------------------------------------------

/** Bump when the generated bytes change for an unchanged spec and seed, so cached files are rewritten. */
const GENERATOR_VERSION = 1;

function checkSpec(spec: TinyInternVlSpec, seed: number): void {
  const { text, vision } = spec;
  const fail = (why: string): never => {
    throw new RangeError(`invalid tiny InternVL spec ${spec.name}: ${why}`);
  };
  if (!/^[\w.-]+$/.test(spec.name)) fail('name must be a plain file-name stem');
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail('seed must be a uint32');
  if (text.nEmbd % text.nHead !== 0 || text.nHead % text.nHeadKv !== 0) fail('text heads must divide the width, KV heads the heads');
  if (vision.nEmbd % vision.nHead !== 0) fail('vision heads must divide the width');
  if (vision.imageSize % (vision.patchSize * vision.scaleFactor) !== 0) fail('vision.imageSize must be a multiple of patchSize * scaleFactor');
  if (!(vision.minTiles >= 1 && vision.minTiles * vision.minTiles <= vision.maxTiles)) fail('the tile range must give llama.cpp a grid (1 <= minTiles, minTiles^2 <= maxTiles)');
}

function fingerprint(spec: TinyInternVlSpec, seed: number): string {
  const { text: t, vision: v } = spec;
  return JSON.stringify({
    generator: GENERATOR_VERSION,
    seed,
    name: spec.name,
    family: 'internvl',
    text: [t.nEmbd, t.nLayer, t.nHead, t.nHeadKv, t.nFf, t.contextLength, t.ropeFreqBase, t.rmsEps],
    vision: [v.imageSize, v.patchSize, v.scaleFactor, v.nEmbd, v.nLayer, v.nHead, v.nFf, v.layerNormEps, v.minTiles, v.maxTiles],
  });
}

// --- the text model ------------------------------------------------------------------------------

function textModelContent(spec: TinyInternVlSpec, seed: number): GgufContent {
  const t = spec.text;
  const arch = 'qwen2';
  const vocab = tinyInternVlVocab();
  const nVocab = vocab.tokens.length;
  const kvWidth = (t.nEmbd / t.nHead) * t.nHeadKv;
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
    ...bpeVocabMetadata(vocab, { eos: '<|im_end|>', padding: '<|endoftext|>' }),
    ['tokenizer.chat_template', gguf.str(INTERNVL_TEMPLATE)],
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  const recipes: Recipe[] = [weight('token_embd.weight', [t.nEmbd, nVocab], TEXT_INIT.embedding)];
  for (let i = 0; i < t.nLayer; i++) {
    const p = `blk.${i}`;
    recipes.push(
      ones(`${p}.attn_norm.weight`, t.nEmbd),
      // Qwen2's attention: separate q/k/v, each with a bias.
      scaledWeight(`${p}.attn_q.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.queryKey),
      zeros(`${p}.attn_q.bias`, t.nEmbd),
      scaledWeight(`${p}.attn_k.weight`, [t.nEmbd, kvWidth], TEXT_INIT.queryKey),
      zeros(`${p}.attn_k.bias`, kvWidth),
      scaledWeight(`${p}.attn_v.weight`, [t.nEmbd, kvWidth], TEXT_INIT.valueOutput),
      zeros(`${p}.attn_v.bias`, kvWidth),
      scaledWeight(`${p}.attn_output.weight`, [t.nEmbd, t.nEmbd], TEXT_INIT.valueOutput),
      ...gatedFeedForward(p, t),
    );
  }
  // The special tokens (ids 0 to 5) get zero logits (outputHead).
  recipes.push(...outputHead(t.nEmbd, nVocab, INTERNVL_SPECIAL_TOKENS.length));
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the projector -------------------------------------------------------------------------------

function mmprojContent(spec: TinyInternVlSpec, seed: number): GgufContent {
  const v = spec.vision;
  const E = v.nEmbd;
  const shuffled = E * v.scaleFactor * v.scaleFactor;
  const out = spec.text.nEmbd;
  const side = v.imageSize / v.patchSize;
  const metadata: [string, GgufValue][] = [
    ...familyMmprojKeys(spec.name, 'internvl', v, out, { mean: IMAGENET_MEAN, std: IMAGENET_STD }),
    // InternViT's `hidden_act` is GELU (clip.cpp's default would be the quick approximation).
    ['clip.use_gelu', gguf.bool(true)],
    ['clip.vision.projector.scale_factor', gguf.u32(v.scaleFactor)],
    ['clip.vision.preproc_min_tiles', gguf.u32(v.minTiles)],
    ['clip.vision.preproc_max_tiles', gguf.u32(v.maxTiles)],
    [FINGERPRINT_KEY, gguf.str(fingerprint(spec, seed))],
  ];

  const layerScale = (name: string): Recipe => ({ name, shape: [E], type: GgmlType.F32, init: { kind: 'const', value: LAYER_SCALE } });
  const linear = (name: string, shape: readonly [number, number]): Recipe[] => [weight(`${name}.weight`, shape), zeros(`${name}.bias`, shape[1])];
  const norm = (name: string, n: number): Recipe[] => [ones(`${name}.weight`, n), zeros(`${name}.bias`, n)];
  // Embeddings stored in f32, as the converter keeps them (tiny-model's `weight` draws random values for f16 only).
  const embedding = (name: string, shape: readonly number[]): Recipe => ({ name, shape, type: GgmlType.F32, init: { kind: 'random', std: 0.02 } });
  const recipes: Recipe[] = [
    weight('v.patch_embd.weight', [v.patchSize, v.patchSize, 3, E]),
    zeros('v.patch_embd.bias', E),
    embedding('v.class_embd', [E]),
    embedding('v.position_embd.weight', [E, side * side + 1]),
  ];
  for (let i = 0; i < v.nLayer; i++) {
    const p = `v.blk.${i}`;
    recipes.push(
      ...norm(`${p}.ln1`, E),
      ...linear(`${p}.attn_q`, [E, E]),
      ...linear(`${p}.attn_k`, [E, E]),
      ...linear(`${p}.attn_v`, [E, E]),
      ...linear(`${p}.attn_out`, [E, E]),
      layerScale(`${p}.ls1.weight`),
      ...norm(`${p}.ln2`, E),
      ...linear(`${p}.ffn_up`, [E, v.nFf]),
      ...linear(`${p}.ffn_down`, [v.nFf, E]),
      layerScale(`${p}.ls2.weight`),
    );
  }
  recipes.push(
    ...norm('mm.model.mlp.0', shuffled),
    scaledWeight('mm.model.mlp.1.weight', [shuffled, out], TEXT_INIT.projector),
    zeros('mm.model.mlp.1.bias', out),
    scaledWeight('mm.model.mlp.3.weight', [out, out], TEXT_INIT.projector),
    zeros('mm.model.mlp.3.bias', out),
  );
  return { metadata, tensors: recipes.map((r) => materialize(r, seed)) };
}

// --- the two files -------------------------------------------------------------------------------

/** The paths a pair with this spec has in `dir`. */
export function tinyInternVlPaths(dir: string, spec: TinyInternVlSpec = TINY_INTERNVL): TinyLlavaFiles {
  return pairPaths(dir, spec.name);
}

/**
 * Writes {@link TINY_INTERNVL}'s pair into `dir` (created if needed), unless both files there
 * already record its fingerprint (generator version, spec and seed). The same seed always gives
 * byte-identical files.
 */
export async function ensureTinyInternVl(dir: string, seed: number = DEFAULT_SEED): Promise<TinyLlavaFiles> {
  const spec = TINY_INTERNVL;
  checkSpec(spec, seed);
  return ensurePair(dir, spec.name, fingerprint(spec, seed), { model: () => textModelContent(spec, seed), mmproj: () => mmprojContent(spec, seed) });
}
