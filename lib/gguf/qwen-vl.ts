/**
 * The projector rules of Qwen2.5-VL (`qwen2.5vl_merger`) and Qwen3-VL (`qwen3vl_merger`): what
 * clip.cpp's loader requires of their mmproj files and what `tools/mtmd/models/qwen2vl.cpp` and
 * `qwen3vl.cpp` dereference or assert, beyond the keys every projector has (lib/gguf/llava.ts
 * checks those, then hands these types here).
 *
 * - Keys: `clip.vision.projection_dim` (read as required); for Qwen2.5-VL `clip.vision.n_wa_pattern`
 *   (required), and with window attention (a pattern above 0) a projection_dim equal to the merger's
 *   output width (the graph reorders its output rows by it) and patches of at most 56 pixels (the
 *   112-pixel window must span a merged token, or the window loop never ends);
 *   `clip.vision.spatial_merge_size`, when present, 2 (the graphs merge 2x2 patches whatever it says).
 * - The encoder: both patch convolutions (`v.patch_embd.weight` and `.weight.1`); no class
 *   embedding (asserted); Qwen2.5-VL no patch bias (asserted), Qwen3-VL a patch bias and a
 *   position embedding over a square grid (asserted, and reshaped to it); per layer Qwen2.5-VL's
 *   q/k/v with their biases (added unconditionally), Qwen3-VL's fused `attn_qkv` with its bias.
 * - The merger: `mm.0` and `mm.2` with biases (required by the loader; `mm.2.bias` gives the width),
 *   and for Qwen3-VL each deepstack merger (`v.deepstack.<layer>.*`) complete, giving the same width.
 *
 * Owns: the Qwen-VL projector rules. May import: ./format, ./reader, ./llava and node builtins.
 */
import { GgmlType } from './format';
import { GgufFormatError, REDOWNLOAD, type ParsedGgufHeader, type ParsedTensor } from './reader';
import { applyRules, checkConvolutionType, checkTensorType, layerRules, numberValue, shapeText, type EncoderFacts, type TensorRule } from './llava';

/** The projector types this module has rules for. */
export const QWEN_VL_PROJECTOR_TYPES: ReadonlySet<string> = new Set(['qwen2.5vl_merger', 'qwen3vl_merger']);

/** The patches the graphs merge per side into one token (hard-coded in both graphs). */
const SPATIAL_MERGE = 2;
/** clip.cpp's window side for Qwen2.5-VL (it reads no key for it). */
const WINDOW_PIXELS = 112;

const OWNER = 'a Qwen-VL projector';

/**
 * Checks a `qwen2.5vl_merger` or `qwen3vl_merger` projector and returns the width of what it gives
 * per image token: `mm.2`'s output, times 1 + the deepstack mergers for Qwen3-VL (the text model
 * must take that many values: its width times 1 + `qwen3vl.n_deepstack_layers`).
 */
export function checkQwenVlProjector(parsed: ParsedGgufHeader, tensors: ReadonlyMap<string, ParsedTensor>, type: string, h: EncoderFacts): number {
  const qwen3 = type === 'qwen3vl_merger';
  const E = h.width;
  const P = h.patchSize;
  const key = (name: string, why: string): number => {
    const value = numberValue(parsed, name);
    if (value === undefined) throw new GgufFormatError(`it has no '${name}', which ${why}: use an mmproj converted by llama.cpp's tools`);
    return value;
  };
  const merge = numberValue(parsed, 'clip.vision.spatial_merge_size');
  if (merge !== undefined && merge !== SPATIAL_MERGE) {
    throw new GgufFormatError(`'clip.vision.spatial_merge_size' is ${merge}; llama.cpp's Qwen-VL graphs merge ${SPATIAL_MERGE}x${SPATIAL_MERGE} patches only (it aborts otherwise): ${REDOWNLOAD}`);
  }
  const projectionDim = key('clip.vision.projection_dim', 'clip.cpp requires');
  const windowPattern = qwen3 ? 0 : key('clip.vision.n_wa_pattern', "clip.cpp requires of a Qwen2.5-VL projector (its window attention's layer pattern)");
  // Every n-th layer attends to the whole image, the others within windows: with 1, no layer uses
  // the window mask the graph sets up, and clip.cpp aborts setting it.
  if (windowPattern === 1) {
    throw new GgufFormatError(`'clip.vision.n_wa_pattern' is 1, which leaves no window-attention layer (clip.cpp aborts on the unused window mask; Qwen2.5-VL has 8): ${REDOWNLOAD}`);
  }
  // The 2-D rotary embedding gives each of its four sections a quarter of a head: none may be empty.
  const headWidth = Math.floor(E / h.heads);
  if (headWidth < 4) {
    throw new GgufFormatError(
      `'clip.vision.attention.head_count' ${h.heads} leaves heads ${headWidth} wide in a ${E}-wide encoder; Qwen-VL's rotary embedding needs at least 4 (ggml aborts otherwise): ${REDOWNLOAD}`,
    );
  }

  for (const name of ['v.class_embd', ...(qwen3 ? [] : ['v.patch_embd.bias'])]) {
    if (tensors.has(name)) throw new GgufFormatError(`it has a tensor '${name}', which llama.cpp's ${qwen3 ? 'Qwen3-VL' : 'Qwen2.5-VL'} graph refuses (it aborts): ${REDOWNLOAD}`);
  }
  const encoder: TensorRule[] = [
    { name: 'v.patch_embd.weight', shape: [P, P, 3, E], use: 'required' },
    { name: 'v.patch_embd.weight.1', shape: [P, P, 3, E], use: 'required' },
    ...(qwen3 ? [{ name: 'v.patch_embd.bias', shape: [E], use: 'required' } as const] : []),
    { name: 'v.pre_ln.weight', shape: [E], use: 'optional' },
    { name: 'v.pre_ln.bias', shape: [E], use: 'optional' },
    { name: 'v.post_ln.weight', shape: [E], use: 'optional' },
    { name: 'v.post_ln.bias', shape: [E], use: 'optional' },
  ];
  applyRules(tensors, encoder, new Map(), OWNER);
  checkConvolutionType(tensors.get('v.patch_embd.weight')!);
  checkConvolutionType(tensors.get('v.patch_embd.weight.1')!);
  if (qwen3) checkPositionGrid(tensors, E);

  for (let il = 0; il < h.layers; il++) {
    const p = `v.blk.${il}`;
    // Qwen2.5-VL's loader swaps up and down back when `ffn_down` takes the width (old conversions); Qwen3-VL's never does.
    const swapped = !qwen3 && tensors.get(`${p}.ffn_down.weight`)?.shape[0] === E && tensors.has(`${p}.ffn_up.weight`);
    const common = swapped ? layerRules(p, E, 'ffn_down', 'ffn_up') : layerRules(p, E, 'ffn_up', 'ffn_down');
    const attention: TensorRule[] = qwen3
      ? [
          { name: `${p}.attn_qkv.weight`, shape: [E, 3 * E], use: 'required' },
          { name: `${p}.attn_qkv.bias`, shape: [3 * E], use: 'required' },
        ]
      : ['attn_q', 'attn_k', 'attn_v'].map((part) => ({ name: `${p}.${part}.bias`, shape: [E], use: 'required' }));
    // Qwen3-VL's graph reads only the fused projection: the separate q/k/v rules do not apply.
    const rules = qwen3 ? common.filter((r) => !/\.attn_[qkv]\./.test(r.name)) : common;
    applyRules(tensors, [...rules, ...attention], new Map(), OWNER);
  }

  const dims = new Map([['IN', E * SPATIAL_MERGE * SPATIAL_MERGE]]);
  applyRules(
    tensors,
    [
      { name: 'mm.0.weight', shape: ['IN', 'H'], use: 'required' },
      { name: 'mm.0.bias', shape: ['H'], use: 'required' },
      { name: 'mm.2.weight', shape: ['H', 'O'], use: 'required' },
      { name: 'mm.2.bias', shape: ['O'], use: 'required' },
    ],
    dims,
    OWNER,
  );
  const O = dims.get('O')!;

  if (windowPattern > 0) {
    if (projectionDim !== O) {
      throw new GgufFormatError(
        `'clip.vision.projection_dim' is ${projectionDim}, but the merger gives ${O} values per token; window attention reorders the output by it (clip.cpp aborts): ${REDOWNLOAD}`,
      );
    }
    if (Math.floor(WINDOW_PIXELS / P / SPATIAL_MERGE) < 1) {
      throw new GgufFormatError(`'clip.vision.patch_size' is ${P}: with window attention, llama.cpp's ${WINDOW_PIXELS}-pixel windows need patches of at most ${WINDOW_PIXELS / SPATIAL_MERGE} pixels (it hangs otherwise): ${REDOWNLOAD}`);
    }
  }
  return O * (1 + (qwen3 ? checkDeepstack(tensors, E, h.layers, O) : 0));
}

/** Qwen3-VL's learned position embedding: one row per patch of a square grid, which the graph reshapes and interpolates. */
function checkPositionGrid(tensors: ReadonlyMap<string, ParsedTensor>, E: number): void {
  const position = tensors.get('v.position_embd.weight');
  if (!position) throw new GgufFormatError(`it has no tensor 'v.position_embd.weight', which ${OWNER} needs: ${REDOWNLOAD}`);
  const rows = position.shape[1] ?? 1;
  const side = Math.round(Math.sqrt(rows));
  if (position.shape[0] !== E || side * side !== rows || position.shape.slice(2).some((d) => d !== 1)) {
    throw new GgufFormatError(
      `tensor 'v.position_embd.weight' has shape ${shapeText(position.shape)}; it must be ${E} wide with one row per patch of a square grid (clip.cpp aborts otherwise): ${REDOWNLOAD}`,
    );
  }
  // The graph interpolates it to the image's grid, which ggml does in f32 only (as the converter writes it).
  checkTensorType(position, [GgmlType.F32], 'Qwen3-VL resizes its position embedding, which ggml does in f32 only (it aborts otherwise)');
}

/**
 * Qwen3-VL's deepstack mergers: a layer has one when `v.deepstack.<layer>.fc1.weight` is there;
 * its norm, biases and `fc2` are used with it, and each gives `O` values (clip.cpp counts the
 * width as `O` per merger). Returns how many there are.
 */
function checkDeepstack(tensors: ReadonlyMap<string, ParsedTensor>, E: number, layers: number, O: number): number {
  const merged = E * SPATIAL_MERGE * SPATIAL_MERGE;
  let count = 0;
  for (let il = 0; il < layers; il++) {
    const p = `v.deepstack.${il}`;
    const fc1 = `${p}.fc1.weight`;
    const fc2 = `${p}.fc2.weight`;
    applyRules(
      tensors,
      [
        { name: `${p}.norm.weight`, shape: [merged], use: { with: fc1 } },
        { name: `${p}.norm.bias`, shape: [merged], use: { with: fc1 } },
        { name: fc1, shape: [merged, 'H'], use: 'optional' },
        { name: `${p}.fc1.bias`, shape: ['H'], use: { with: fc1 } },
        { name: fc2, shape: ['H', O], use: { with: fc1 } },
        { name: `${p}.fc2.bias`, shape: [O], use: { with: fc2 } },
      ],
      new Map(),
      OWNER,
    );
    if (tensors.has(fc1)) count++;
  }
  return count;
}
