/**
 * The rules of Gemma 3's two files, beyond what lib/gguf/llava.ts checks of every text model and
 * projector: what llama.cpp's `src/models/gemma3.cpp` (with `src/llama-model.cpp`'s shared
 * loading) and the `gemma3` projector of `tools/mtmd/clip.cpp` and `tools/mtmd/models/siglip.cpp`
 * trust without checking, so that a file breaking them aborts or segfaults the process.
 *
 * The text model (`gemma3` architecture):
 * - with sliding-window attention (`attention.sliding_window` above 0), a layer pattern that leaves
 *   at least one sliding-window layer (a pattern of 1 leaves none: llama.cpp asserts one);
 * - one head width for all layers where there are global layers beside the sliding-window ones:
 *   the graph sizes every layer's attention by layer 0's, the KV cache each layer by its own
 *   (`attention.key_length_swa` / `value_length_swa` differing from `key_length` / `value_length`
 *   abort the first decode);
 * - the rotary width layer 0 uses for every layer (`rope.dimension_count_swa` with sliding
 *   windows, else `rope.dimension_count`, by default the head width) even and at most layer 0's
 *   head width (ggml's RoPE asserts both).
 *
 * The projector (`gemma3`): a SigLIP encoder on a fixed square image, average pooling, an RMS
 * norm and a linear map:
 * - keys: `clip.vision.projection_dim` (read as required, though unused);
 *   `clip.vision.projector.scale_factor` (the pooling kernel, 4 when absent) at least 1 and
 *   dividing the patch grid's side (clip.cpp counts side² / kernel² tokens, the pooling gives
 *   (side / kernel)², and clip.cpp aborts on the difference); `clip.vision.attention.head_count_kv`,
 *   when present, equal to the head count (SigLIP's keys and values are as wide as its queries);
 * - the encoder: the patch convolution, and when present its bias, a position embedding with one
 *   row per patch (added to the patches: any other count aborts), pre/post layer norms; per layer
 *   the q/k/v/output projections and feed-forward of {@link layerRules}, and none of the tensors
 *   other encoders' layers have that clip.cpp's shared ViT would apply with unchecked shapes
 *   (fused qkv, q/k norms, layer scales, post norms, experts);
 * - the projector: `mm.soft_emb_norm.weight` (the encoder's width) and `mm.input_projection.weight`
 *   (stored [text width, encoder width]; its first dimension is the output width).
 *
 * Owns: the Gemma 3 rules. May import: ./format, ./reader, ./llava and node builtins.
 */
import { GgmlType, GgufType } from './format';
import { GgufFormatError, REDOWNLOAD, type ParsedGgufHeader, type ParsedTensor } from './reader';
import { applyRules, checkAddedPositionEmbedding, checkConvolutionType, checkTensorType, encoderNormRules, layerRules, numberValue, type EncoderFacts, type TensorRule } from './llava';

/** The projector type this module has rules for. */
export const GEMMA3_PROJECTOR_TYPE = 'gemma3';

/** The text architecture this module has rules for. */
export const GEMMA3_ARCHITECTURE = 'gemma3';

/** clip.cpp's pooling kernel for Gemma 3 when the file has no `clip.vision.projector.scale_factor`. */
const DEFAULT_POOL_KERNEL = 4;
/** llama.cpp's layer pattern for Gemma 3 when the file has no `attention.sliding_window_pattern`. */
const DEFAULT_SWA_PATTERN = 6;

/**
 * The per-layer tensors of other encoders that clip.cpp's shared ViT (`build_vit`) uses whenever
 * it finds them, with shapes no rule here checks (each aborts the graph when it does not fit); a
 * Gemma 3 SigLIP has none of them.
 */
const FOREIGN_LAYER_TENSORS = ['attn_qkv.weight', 'attn_q_norm.weight', 'attn_k_norm.weight', 'ls1.weight', 'ls2.weight', 'out_scale.weight', 'attn_post_norm.weight', 'ffn_post_norm.weight', 'ffn_gate_exps.weight'];

const OWNER = 'a Gemma 3 projector';

/** A key's number, or an integer array's first item (llama.cpp's per-layer values: layer 0's). */
function firstNumber(parsed: ParsedGgufHeader, key: string): number | undefined {
  const entry = parsed.entries.get(key);
  if (entry?.type === GgufType.ARRAY) {
    if (entry.length === 0) return undefined;
    if (entry.itemType === GgufType.UINT32) return parsed.buf.readUInt32LE(entry.start);
    if (entry.itemType === GgufType.INT32) return parsed.buf.readInt32LE(entry.start);
    return undefined;
  }
  return numberValue(parsed, key);
}

/** Checks the `gemma3` text model's keys (llama.cpp checks its tensors' shapes itself). */
export function checkGemma3TextModel(parsed: ParsedGgufHeader): void {
  const key = (name: string): string => `${GEMMA3_ARCHITECTURE}.${name}`;
  const value = (name: string): number | undefined => numberValue(parsed, key(name));
  const layers = value('block_count');
  const window = value('attention.sliding_window');
  const swa = window !== undefined && window > 0;
  // llama.cpp reads the pattern as a scalar only; an array leaves the default.
  const pattern = value('attention.sliding_window_pattern') ?? DEFAULT_SWA_PATTERN;
  if (swa && pattern === 1) {
    throw new GgufFormatError(
      `'${key('attention.sliding_window_pattern')}' is 1 with a sliding window of ${window}: every layer is global, and llama.cpp asserts a sliding-window layer (it aborts): ${REDOWNLOAD}`,
    );
  }
  const isSwa = (il: number): boolean => swa && (pattern === 0 || il % pattern < pattern - 1);

  // The head widths, as llama.cpp defaults them: width / heads, the sliding-window ones the global ones.
  const width = value('embedding_length');
  const heads = firstNumber(parsed, key('attention.head_count'));
  const split = width !== undefined && heads !== undefined && heads > 0 ? Math.floor(width / heads) : undefined;
  const fullK = value('attention.key_length') ?? split;
  const fullV = value('attention.value_length') ?? split;
  const swaK = value('attention.key_length_swa') ?? fullK;
  const swaV = value('attention.value_length_swa') ?? fullV;
  const hasGlobal = layers !== undefined && Array.from({ length: layers }, (_, il) => !isSwa(il)).some(Boolean);
  if (swa && hasGlobal && (swaK !== fullK || swaV !== fullV)) {
    throw new GgufFormatError(
      `its sliding-window layers have ${swaK}-wide keys and ${swaV}-wide values, its global layers ${fullK} and ${fullV}; ` +
        `llama.cpp's Gemma 3 graph sizes every layer by the first (a sliding-window one), its KV cache each by its own (it aborts): ${REDOWNLOAD}`,
    );
  }

  // Layer 0's rotary width, used for every layer; each default names the key it comes from.
  const layer0K = isSwa(0) ? swaK : fullK;
  const candidates: [string, number | undefined][] = [
    ...(isSwa(0) ? ([[key('rope.dimension_count_swa'), value('rope.dimension_count_swa')]] as [string, number | undefined][]) : []),
    [key('rope.dimension_count'), value('rope.dimension_count')],
    [key('attention.key_length'), value('attention.key_length')],
    [`${key('embedding_length')} / ${key('attention.head_count')}`, split],
  ];
  const found = candidates.find(([, n]) => n !== undefined);
  if (found === undefined || layer0K === undefined) return; // llama.cpp fails on the missing keys itself
  const [source, rotary] = found as [string, number];
  if (rotary % 2 !== 0 || rotary > layer0K) {
    throw new GgufFormatError(
      `the rotary width ('${source}') is ${rotary}; it must be even and at most the ${layer0K}-wide heads of layer 0 (ggml's RoPE aborts otherwise): ${REDOWNLOAD}`,
    );
  }
}

/**
 * Checks a `gemma3` projector and returns the width of what it gives per image token
 * (`mm.input_projection.weight`'s first dimension, which the text model's width must equal).
 */
export function checkGemma3Projector(parsed: ParsedGgufHeader, tensors: ReadonlyMap<string, ParsedTensor>, h: EncoderFacts): number {
  const E = h.width;
  const P = h.patchSize;
  const side = Math.floor(h.imageSize / P);
  if (numberValue(parsed, 'clip.vision.projection_dim') === undefined) {
    throw new GgufFormatError("it has no 'clip.vision.projection_dim', which clip.cpp requires: use an mmproj converted by llama.cpp's tools");
  }
  const stored = numberValue(parsed, 'clip.vision.projector.scale_factor');
  const kernel = stored ?? DEFAULT_POOL_KERNEL;
  if (!(kernel >= 1) || side % kernel !== 0) {
    const what = stored === undefined ? `clip.cpp's default of ${kernel} (the file has no 'clip.vision.projector.scale_factor')` : `${kernel} ('clip.vision.projector.scale_factor')`;
    throw new GgufFormatError(
      `the pooling kernel, ${what}, does not divide the ${side}-patch side of ${h.imageSize}-pixel images in ${P}-pixel patches: ` +
        `the pooling and clip.cpp's token count disagree (it aborts): ${REDOWNLOAD}`,
    );
  }
  const heads = numberValue(parsed, 'clip.vision.attention.head_count');
  const kvHeads = numberValue(parsed, 'clip.vision.attention.head_count_kv');
  if (kvHeads !== undefined && kvHeads !== heads) {
    throw new GgufFormatError(
      `'clip.vision.attention.head_count_kv' is ${kvHeads} but 'clip.vision.attention.head_count' ${heads}; SigLIP's keys and values have as many heads as its queries (clip.cpp aborts otherwise): ${REDOWNLOAD}`,
    );
  }

  const encoder: TensorRule[] = [
    { name: 'v.patch_embd.weight', shape: [P, P, 3, E], use: 'required' },
    { name: 'v.patch_embd.bias', shape: [E], use: 'optional' },
    // Added to the patches when present (clip.cpp runs without it): one row per patch.
    { name: 'v.position_embd.weight', shape: [E, side * side], use: 'optional' },
    ...encoderNormRules(E),
  ];
  applyRules(tensors, encoder, new Map(), OWNER);
  checkConvolutionType(tensors.get('v.patch_embd.weight')!);
  const position = tensors.get('v.position_embd.weight');
  if (position) checkAddedPositionEmbedding(position);

  for (let il = 0; il < h.layers; il++) {
    const p = `v.blk.${il}`;
    for (const part of FOREIGN_LAYER_TENSORS) {
      if (tensors.has(`${p}.${part}`)) {
        throw new GgufFormatError(`it has a tensor '${p}.${part}', which a Gemma 3 SigLIP layer has not and clip.cpp would apply unchecked (it aborts on a misfit): ${REDOWNLOAD}`);
      }
    }
    // clip.cpp swaps up and down back when `ffn_down` takes the width (old conversions).
    const swapped = tensors.get(`${p}.ffn_down.weight`)?.shape[0] === E && tensors.has(`${p}.ffn_up.weight`);
    applyRules(tensors, swapped ? layerRules(p, E, 'ffn_down', 'ffn_up') : layerRules(p, E, 'ffn_up', 'ffn_down'), new Map(), OWNER);
  }

  const dims = new Map<string, number>();
  applyRules(
    tensors,
    [
      { name: 'mm.soft_emb_norm.weight', shape: [E], use: 'required' },
      { name: 'mm.input_projection.weight', shape: ['O', E], use: 'required' },
    ],
    dims,
    OWNER,
  );
  // The graph multiplies by its transpose made contiguous, which ggml does not do for quantized types.
  checkTensorType(tensors.get('mm.input_projection.weight')!, [GgmlType.F32, GgmlType.F16, GgmlType.BF16], 'Gemma 3 transposes its input projection, which needs f32, f16 or bf16 (llama.cpp aborts on a quantized one)');
  return dims.get('O')!;
}
