/**
 * The projector rules of InternVL 2.5 / 3 (`internvl`): what clip.cpp's loader requires of their
 * mmproj files and what `tools/mtmd/models/internvl.cpp`, the shared ViT (`build_vit`) and mtmd's
 * InternVL tiling dereference or assert, beyond the keys every projector has (lib/gguf/llava.ts
 * checks those, then hands this type here).
 *
 * - Keys: `clip.vision.projection_dim`, `feed_forward_length` and `attention.layer_norm_epsilon`
 *   (read as required); `clip.vision.projector.scale_factor` (the pixel shuffle's block side, 1
 *   when absent) must split the patch grid of a tile, `image_size / patch_size` per side, into
 *   whole blocks (the reshapes abort otherwise); `clip.vision.preproc_min_tiles` and
 *   `preproc_max_tiles` (1 and 12 when absent) an ordered range (asserted) that gives at least one
 *   tile grid (mtmd asserts it has one on the first image), of a size the loader can enumerate;
 *   `clip.vision.attention.head_count_kv`, when present, the head count (the key and value
 *   projections are as wide as the encoder).
 * - The encoder (InternViT): the patch convolution (its bias optional); the class embedding and the
 *   position embedding, one row per patch of a tile and one for the class token (both asserted;
 *   the embedding is added to every tile's rows); per layer separate q/k/v (the converter splits
 *   InternViT's fused qkv), with the layer scales `ls1` / `ls2` and the 6B ViT's q/k norms, all as
 *   wide as the encoder, when present; no tensor that switches a layer onto another model's path
 *   (a fused qkv, a mixture of experts, Gemma 4's post norms and output scale).
 * - The projector (`mlp1` in InternVL): `mm.model.mlp.0` (layer norm over the shuffled patches),
 *   `mm.model.mlp.1` and `mm.model.mlp.3` (linear, GELU, linear), each with its bias, all required
 *   by the loader; `mm.model.mlp.3.weight` gives the width.
 *
 * Owns: the InternVL projector rules. May import: ./reader, ./llava and node builtins.
 */
import { GgufFormatError, REDOWNLOAD, type ParsedGgufHeader, type ParsedTensor } from './reader';
import { applyRules, checkAddedPositionEmbedding, checkConvolutionType, encoderNormRules, int32Items, layerRules, numberValue, shapeText, type EncoderFacts, type TensorRule } from './llava';

/** The projector types this module has rules for. */
export const INTERNVL_PROJECTOR_TYPES: ReadonlySet<string> = new Set(['internvl']);

/** clip.cpp's tile range when the keys are absent (older conversions). */
const DEFAULT_MIN_TILES = 1;
const DEFAULT_MAX_TILES = 12;
/**
 * The most tiles accepted, far above InternVL's 12: the loader lists every grid of up to `max`
 * tiles (about max * ln(max) of them), so a huge value stalls the load (10^8 took over 8 GB and
 * more than 30 s before it was stopped).
 */
const MAX_TILES = 1024;
const INT32_MAX = 0x7fffffff;

const OWNER = 'an InternVL projector';

/** Per-layer tensors of other models' layers that clip.cpp's shared ViT uses whenever they are there. */
const FOREIGN_LAYER_TENSORS: readonly [suffix: string, what: string][] = [
  ['attn_qkv.weight', 'a fused qkv projection (the InternVL converter splits it)'],
  ['ffn_gate_exps.weight', 'a mixture-of-experts feed-forward (it asserts a SiLU activation and an expert count)'],
  ['attn_post_norm.weight', "a post-attention norm (Gemma 4's)"],
  ['ffn_post_norm.weight', "a post-feed-forward norm (Gemma 4's)"],
  ['out_scale.weight', "a layer output scale (Gemma 4's)"],
];

/**
 * Checks an `internvl` projector and returns the width of what it gives per image token
 * (`mm.model.mlp.3`'s output: the text model's embedding width).
 */
export function checkInternVlProjector(parsed: ParsedGgufHeader, tensors: ReadonlyMap<string, ParsedTensor>, h: EncoderFacts): number {
  const E = h.width;
  const P = h.patchSize;
  for (const [name, why] of [
    ['clip.vision.projection_dim', 'clip.cpp requires'],
    ['clip.vision.feed_forward_length', 'clip.cpp requires'],
    ['clip.vision.attention.layer_norm_epsilon', 'clip.cpp requires (the encoder norms use it)'],
  ] as const) {
    if (!parsed.entries.has(name)) throw new GgufFormatError(`it has no '${name}', which ${why}: use an mmproj converted by llama.cpp's tools`);
  }
  const headsKv = numberValue(parsed, 'clip.vision.attention.head_count_kv');
  if (headsKv !== undefined && headsKv !== h.heads) {
    throw new GgufFormatError(
      `'clip.vision.attention.head_count_kv' is ${headsKv}, but InternViT's key and value projections have all ${h.heads} heads (clip.cpp aborts reshaping them): ${REDOWNLOAD}`,
    );
  }

  // The pixel shuffle cuts each tile's grid of `side` x `side` patches into scale x scale blocks.
  const scale = numberValue(parsed, 'clip.vision.projector.scale_factor') ?? 1;
  const side = Math.floor(h.imageSize / P);
  if (!(scale >= 1) || side % scale !== 0) {
    throw new GgufFormatError(
      `'clip.vision.projector.scale_factor' is ${scale}, but a tile is ${side} patches a side ('clip.vision.image_size' ${h.imageSize} / 'clip.vision.patch_size' ${P}): ` +
        `the pixel shuffle needs a scale factor of at least 1 that divides it (llama.cpp aborts otherwise): ${REDOWNLOAD}`,
    );
  }
  checkTiles(parsed, h.imageSize);

  for (const name of ['v.class_embd', 'v.position_embd.weight']) {
    if (!tensors.has(name)) throw new GgufFormatError(`it has no tensor '${name}', which llama.cpp's InternVL graph asserts (it aborts): ${REDOWNLOAD}`);
  }
  const encoder: TensorRule[] = [
    { name: 'v.patch_embd.weight', shape: [P, P, 3, E], use: 'required' },
    { name: 'v.patch_embd.bias', shape: [E], use: 'optional' },
    { name: 'v.class_embd', shape: [E], use: 'required' },
    ...encoderNormRules(E),
  ];
  applyRules(tensors, encoder, new Map(), OWNER);
  checkConvolutionType(tensors.get('v.patch_embd.weight')!);
  // The class token is appended to the patches, and the embedding added to all of them.
  const position = tensors.get('v.position_embd.weight')!;
  const rows = side * side + 1;
  if (position.shape[0] !== E || (position.shape[1] ?? 1) !== rows || position.shape.slice(2).some((d) => d !== 1)) {
    throw new GgufFormatError(
      `tensor 'v.position_embd.weight' has shape ${shapeText(position.shape)}, but ${h.imageSize}-pixel tiles in ${P}-pixel patches and the class token need ` +
        `${shapeText([E, rows])} (llama.cpp aborts otherwise): ${REDOWNLOAD}`,
    );
  }
  checkAddedPositionEmbedding(position);

  for (let il = 0; il < h.layers; il++) {
    const p = `v.blk.${il}`;
    for (const [suffix, what] of FOREIGN_LAYER_TENSORS) {
      if (tensors.has(`${p}.${suffix}`)) {
        throw new GgufFormatError(`it has a tensor '${p}.${suffix}', ${what}, which no InternVL layer has and which switches llama.cpp's graph onto another model's path: ${REDOWNLOAD}`);
      }
    }
    // clip.cpp never swaps an InternVL layer's up and down projections back.
    const extras: TensorRule[] = ['ls1', 'ls2', 'attn_q_norm', 'attn_k_norm'].map((part) => ({ name: `${p}.${part}.weight`, shape: [E], use: 'optional' }));
    applyRules(tensors, [...layerRules(p, E, 'ffn_up', 'ffn_down'), ...extras], new Map(), OWNER);
  }

  const shuffled = E * scale * scale;
  const norm = tensors.get('mm.model.mlp.0.weight');
  if (norm && norm.shape[0] !== shuffled) {
    throw new GgufFormatError(
      `tensor 'mm.model.mlp.0.weight' has shape ${shapeText(norm.shape)}, but the pixel shuffle gives ${shuffled} values per token ` +
        `(${E} wide patches in ${scale}x${scale} blocks, 'clip.vision.projector.scale_factor' ${parsed.entries.has('clip.vision.projector.scale_factor') ? scale : 'absent: 1'}): ${REDOWNLOAD}`,
    );
  }
  const dims = new Map([['IN', shuffled]]);
  applyRules(
    tensors,
    [
      { name: 'mm.model.mlp.0.weight', shape: ['IN'], use: 'required' },
      { name: 'mm.model.mlp.0.bias', shape: ['IN'], use: 'required' },
      { name: 'mm.model.mlp.1.weight', shape: ['IN', 'H'], use: 'required' },
      { name: 'mm.model.mlp.1.bias', shape: ['H'], use: 'required' },
      { name: 'mm.model.mlp.3.weight', shape: ['H', 'O'], use: 'required' },
      { name: 'mm.model.mlp.3.bias', shape: ['O'], use: 'required' },
    ],
    dims,
    OWNER,
  );
  return dims.get('O')!;
}

/**
 * The tile range. clip.cpp lists as candidate grids every a x b tiles with `min <= a`, `b <= max`,
 * `a * b <= max` and `b >= min` (so none unless min * min <= max, and none at all for a min of 0)
 * and asserts `min <= max < INT32_MAX`; mtmd asserts a candidate on every image (LLaVA-1.6's
 * `image_grid_pinpoints`, when present, add theirs). The candidates' areas in pixels are ints.
 */
function checkTiles(parsed: ParsedGgufHeader, imageSize: number): void {
  const min = numberValue(parsed, 'clip.vision.preproc_min_tiles') ?? DEFAULT_MIN_TILES;
  const max = numberValue(parsed, 'clip.vision.preproc_max_tiles') ?? DEFAULT_MAX_TILES;
  const range = `'clip.vision.preproc_min_tiles' ${min} to 'clip.vision.preproc_max_tiles' ${max}`;
  if (min > max) throw new GgufFormatError(`the tile range ${range} is empty (clip.cpp aborts): ${REDOWNLOAD}`);
  if (max > MAX_TILES || max * imageSize * imageSize > INT32_MAX) {
    throw new GgufFormatError(
      `the tile range ${range} goes past ${Math.min(MAX_TILES, Math.floor(INT32_MAX / (imageSize * imageSize)))} tiles of ${imageSize} pixels, ` +
        `more than llama.cpp enumerates and measures as ints: ${REDOWNLOAD}`,
    );
  }
  const pinpoints = int32Items(parsed, 'clip.vision.image_grid_pinpoints') ?? [];
  if ((min < 1 || min * min > max) && pinpoints.length === 0) {
    throw new GgufFormatError(`the tile range ${range} gives llama.cpp no tile grid to cut an image into (mtmd aborts on the first image): ${REDOWNLOAD}`);
  }
}
