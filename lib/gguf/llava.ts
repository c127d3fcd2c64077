/**
 * The rules of the two files of a LLaVA model, beyond what any GGUF file needs: what llama.cpp's
 * text-model loader (src/llama-model.cpp, src/llama-vocab.cpp) and its CLIP projector
 * (tools/mtmd/clip.cpp) trust without checking, so that a file breaking them aborts or segfaults
 * the process instead of failing to load.
 *
 * - The role: `general.architecture` present, a string, and the one the role needs (`clip` is a
 *   projector, anything else a text model; a file with `clip.*` keys is a projector whatever it says).
 * - A text model: `<arch>.block_count` from 1 to 512, normalization epsilons finite and at least 0,
 *   and a vocabulary (`tokenizer.ggml.tokens`) of strings with no two alike.
 * - A projector: every `clip.*` key clip.cpp reads stored in the type it reads it as; a vision
 *   encoder and no audio one; width, heads, layers, image and patch sizes positive and consistent; feature layers and
 *   grid pinpoints in range; a projector type this module has rules for; and every tensor the graph
 *   dereferences present, with the shape the hyperparameters give ({@link ENCODER_RULES},
 *   {@link PROJECTOR_RULES}: clip.cpp loads most of them as optional and trusts what it finds).
 *
 * Owns: the LLaVA / llama / CLIP rules, and the dispatch to other families' rules (./qwen-vl's and
 * ./internvl's projectors, ./gemma3's text model and projector). May import: ./format, ./reader,
 * ./qwen-vl, ./internvl, ./gemma3 and node builtins.
 */
import { GgmlType, GgufType, valueTypeLabel } from './format';
import { GgufFormatError, REDOWNLOAD, type GgufEntry, type ParsedGgufHeader, type ParsedTensor } from './reader';
import { GEMMA3_ARCHITECTURE, GEMMA3_PROJECTOR_TYPE, checkGemma3Projector, checkGemma3TextModel } from './gemma3';
import { INTERNVL_PROJECTOR_TYPES, checkInternVlProjector } from './internvl';
import { QWEN_VL_PROJECTOR_TYPES, checkQwenVlProjector } from './qwen-vl';

/** What a file is expected to be: the LLaVA text model, or its CLIP projector (mmproj). */
export type GgufRole = 'text-model' | 'projector';

/** What the role rules found. */
export interface RoleFacts {
  readonly architecture: string;
  readonly role: GgufRole;
  /** For a projector: `clip.projector_type` as stored (`mlp` for LLaVA-1.5). */
  readonly projectorType: string | undefined;
  /** For a projector: the width of the embeddings it gives. */
  readonly projectorOutputWidth: number | undefined;
}

/** llama.cpp's LLAMA_MAX_LAYERS: a text model with more (or no) layers aborts the load. */
const LLAMA_MAX_LAYERS = 512;
/** clip.cpp's largest image side. */
const CLIP_MAX_IMAGE_SIZE = 8192;

/** `[a, b]`, for messages. */
export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Whether `shape` equals `expected` (ggml order; trailing 1s do not count). */
function sameShape(shape: readonly number[], expected: readonly number[]): boolean {
  const trim = (s: readonly number[]): number[] => {
    const out = [...s];
    while (out.length > 0 && out[out.length - 1] === 1) out.pop();
    return out;
  };
  const a = trim(shape);
  const b = trim(expected);
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A metadata number, or undefined when the key is absent or not a number. */
export function numberValue(parsed: ParsedGgufHeader, key: string): number | undefined {
  const entry = parsed.entries.get(key);
  if (entry === undefined || entry.type === GgufType.ARRAY) return undefined;
  if (typeof entry.value === 'number') return entry.value;
  if (typeof entry.value === 'bigint') return Number(entry.value);
  return undefined;
}

function stringValue(parsed: ParsedGgufHeader, key: string): string | undefined {
  const entry = parsed.entries.get(key);
  return entry?.type === GgufType.STRING ? (entry.value as string) : undefined;
}

/** The items of an INT32 array, or undefined when the key is absent or not one. */
export function int32Items(parsed: ParsedGgufHeader, key: string): number[] | undefined {
  const entry = parsed.entries.get(key);
  if (entry?.type !== GgufType.ARRAY || entry.itemType !== GgufType.INT32) return undefined;
  return Array.from({ length: entry.length }, (_, i) => parsed.buf.readInt32LE(entry.start + 4 * i));
}

function checkEpsilon(parsed: ParsedGgufHeader, key: string): void {
  const eps = numberValue(parsed, key);
  if (eps !== undefined && !(Number.isFinite(eps) && eps >= 0)) {
    throw new GgufFormatError(`'${key}' is ${eps}; a normalization epsilon must be a finite number of at least 0 (ggml aborts otherwise): ${REDOWNLOAD}`);
  }
}

// --- the role --------------------------------------------------------------------------------------

/** The file's architecture and role, which must be `expect`. */
export function roleOf(parsed: ParsedGgufHeader, expect: GgufRole): { architecture: string; role: GgufRole } {
  const entry = parsed.entries.get('general.architecture');
  if (entry === undefined) {
    throw new GgufFormatError("it has no 'general.architecture' key, so llama.cpp cannot tell what model it is: use a GGUF converted by llama.cpp's tools");
  }
  const architecture = entry.type === GgufType.STRING ? (entry.value as string) : '';
  if (architecture.length === 0) throw new GgufFormatError(`'general.architecture' must be a non-empty string: ${REDOWNLOAD}`);
  const role: GgufRole = architecture === 'clip' ? 'projector' : 'text-model';
  const clipKeys = [...parsed.entries.keys()].some((key) => key.startsWith('clip.'));
  if (role === 'text-model' && clipKeys) {
    // clip.cpp never reads the architecture, so a damaged one is found here.
    throw new GgufFormatError(
      expect === 'projector'
        ? `its 'general.architecture' is ${JSON.stringify(architecture)} where a projector has "clip": ${REDOWNLOAD}`
        : `this is a projector (mmproj) file (with a damaged 'general.architecture' ${JSON.stringify(architecture)}), not a text model; pass the LLaVA language model GGUF as model`,
    );
  }
  if (role !== expect) {
    throw new GgufFormatError(
      role === 'projector'
        ? 'this is a projector (mmproj) file, not a text model; pass it as mmproj, and the LLaVA language model GGUF as model'
        : `this is a text model (architecture '${architecture}'), not a projector; pass it as model, and the mmproj GGUF that came with it as mmproj`,
    );
  }
  return { architecture, role };
}

/** Checks the rules of the role {@link roleOf} found. */
export function checkRoleRules(parsed: ParsedGgufHeader, found: { architecture: string; role: GgufRole }): RoleFacts {
  if (found.role === 'text-model') {
    checkTextModel(parsed, found.architecture);
    return { ...found, projectorType: undefined, projectorOutputWidth: undefined };
  }
  const { type, outputWidth } = checkProjector(parsed);
  return { ...found, projectorType: type, projectorOutputWidth: outputWidth };
}

// --- the text model --------------------------------------------------------------------------------

/**
 * The first two items of a string array with the same bytes, or undefined. An open-addressing
 * table of item indices keyed by an FNV-1a hash of the bytes: no strings are made, so a
 * 150,000-token vocabulary takes about a millisecond. An empty item counts as `[EMPTY_<i>]`, the
 * text llama.cpp gives it.
 */
function findDuplicateString(buf: Buffer, array: { readonly length: number; readonly start: number }): [number, number] | undefined {
  const n = array.length;
  const starts = new Float64Array(n);
  const ends = new Float64Array(n);
  const empties = new Map<number, Buffer>();
  let size = 16;
  while (size < n * 2) size *= 2;
  const mask = size - 1;
  const table = new Int32Array(size).fill(-1);
  const hashes = new Int32Array(n);
  const bytesOf = (i: number): Buffer => empties.get(i) ?? buf.subarray(starts[i], ends[i]);
  let at = array.start;
  for (let i = 0; i < n; i++) {
    const length = buf.readUInt32LE(at); // the reader checked the high half
    let start = at + 8;
    let end = start + length;
    at = end;
    let bytes: Buffer = buf;
    if (length === 0) {
      bytes = Buffer.from(`[EMPTY_${i}]`, 'latin1');
      empties.set(i, bytes);
      start = 0;
      end = bytes.length;
    }
    starts[i] = start;
    ends[i] = end;
    let h = 0x811c9dc5;
    for (let j = start; j < end; j++) h = Math.imul(h ^ bytes[j]!, 0x01000193);
    hashes[i] = h;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const other = table[slot]!;
      if (other === -1) {
        table[slot] = i;
        break;
      }
      if (hashes[other] === h && ends[other]! - starts[other]! === end - start && bytesOf(other).equals(bytesOf(i))) return [other, i];
    }
  }
  return undefined;
}

function checkTextModel(parsed: ParsedGgufHeader, architecture: string): void {
  const blocks = numberValue(parsed, `${architecture}.block_count`);
  if (blocks !== undefined && !(blocks >= 1 && blocks <= LLAMA_MAX_LAYERS)) {
    throw new GgufFormatError(`'${architecture}.block_count' is ${blocks}; llama.cpp loads 1 to ${LLAMA_MAX_LAYERS} layers (it aborts otherwise): ${REDOWNLOAD}`);
  }
  // Qwen3-VL adds deepstack slice i to layer i's output; the last layer's keeps only the output
  // tokens' rows, and the add aborts (ggml_can_repeat).
  const deepstack = numberValue(parsed, `${architecture}.n_deepstack_layers`);
  if (deepstack !== undefined && blocks !== undefined && deepstack >= blocks) {
    throw new GgufFormatError(`'${architecture}.n_deepstack_layers' is ${deepstack}; it must be less than '${architecture}.block_count' ${blocks} (llama.cpp aborts otherwise): ${REDOWNLOAD}`);
  }
  checkEpsilon(parsed, `${architecture}.attention.layer_norm_rms_epsilon`);
  checkEpsilon(parsed, `${architecture}.attention.layer_norm_epsilon`);
  if (architecture === GEMMA3_ARCHITECTURE) checkGemma3TextModel(parsed);

  const tokens = parsed.entries.get('tokenizer.ggml.tokens');
  if (tokens === undefined) return;
  if (tokens.type !== GgufType.ARRAY || tokens.itemType !== GgufType.STRING) {
    throw new GgufFormatError(`'tokenizer.ggml.tokens' must be an array of strings: ${REDOWNLOAD}`);
  }
  // llama.cpp maps each token's text to its id and aborts when two tokens share a text.
  const duplicate = findDuplicateString(parsed.buf, tokens);
  if (duplicate) {
    const [first, second] = duplicate;
    let at = tokens.start;
    for (let i = 0; i < first; i++) at += 8 + parsed.buf.readUInt32LE(at);
    const text = parsed.buf.toString('utf8', at + 8, at + 8 + parsed.buf.readUInt32LE(at));
    throw new GgufFormatError(`tokens ${first} and ${second} of the vocabulary are both ${JSON.stringify(text)}; each token must be unique: ${REDOWNLOAD}`);
  }
}

// --- the projector: keys ---------------------------------------------------------------------------

/** The GGUF type clip.cpp reads each key as; a key of another type aborts it (gguf.cpp's type GGML_ASSERT). */
function clipKeyType(key: string): GgufType | 'array' | undefined {
  if (!key.startsWith('clip.')) return key === 'general.name' || key === 'general.description' ? GgufType.STRING : undefined;
  if (/^clip\.((vision|audio|gen\.audio)\.)?projector_type$/.test(key) || key === 'clip.vision.mm_patch_merge_type' || key === 'clip.gen.audio.model_variant') return GgufType.STRING;
  if (/^clip\.(has_(vision|audio|gen_audio)_encoder|use_gelu|use_silu)$/.test(key)) return GgufType.BOOL;
  if (/^clip\.(vision|audio|gen\.audio)\.attention\.layer_norm_epsilon$/.test(key)) return GgufType.FLOAT32;
  if (key === 'clip.minicpmv_version') return GgufType.INT32;
  if (/\.(image_mean|image_std|image_grid_pinpoints|feature_layer|wa_layer_indexes|wa_pattern_mode|spatial_offsets|codebook_size)$/.test(key)) return 'array';
  if (
    /^clip\.(vision|audio|gen\.audio)\.(embedding_length|feed_forward_length|block_count|projection_dim|attention\.head_count|attention\.head_count_kv|attention\.head_dim)$/.test(key) ||
    /^clip\.vision\.(image_size|image_min_pixels|image_max_pixels|preproc_min_tiles|preproc_max_tiles|preproc_image_size|patch_size|projector\.scale_factor|projector\.query_side|projector\.window_side|spatial_merge_size|n_wa_pattern|window_size|sam\.head_count|sam\.block_count|sam\.embedding_length|expert_used_count)$/.test(key) ||
    /^clip\.audio\.(num_mel_bins|projector\.stack_factor|chunk_size|conv_kernel_size|max_pos_emb|projector\.window_size|projector\.downsample_rate|projector\.head_count|rvq\.num_quantizers|window_size|local_block_count|local_group_size|subsampling_factor)$/.test(key) ||
    key === 'clip.minicpmv_query_num'
  ) {
    return GgufType.UINT32;
  }
  return undefined;
}

function checkClipKeyTypes(entries: ReadonlyMap<string, GgufEntry>): void {
  for (const [key, entry] of entries) {
    const expected = clipKeyType(key);
    if (expected === undefined) continue;
    if (expected === 'array' ? entry.type !== GgufType.ARRAY : entry.type !== expected) {
      throw new GgufFormatError(
        `'${key}' is stored as ${valueTypeLabel(entry.type)}, but llama.cpp reads it as ${expected === 'array' ? 'an array' : valueTypeLabel(expected)} (and aborts): ${REDOWNLOAD}`,
      );
    }
  }
}

// --- the projector: tensors ------------------------------------------------------------------------

/**
 * How clip.cpp uses a tensor:
 * - `required`: dereferenced unconditionally (by the graph, by `clip_n_mmproj_embd`, or by a
 *   required `get_tensor` in the loader): without it the process segfaults (or the load throws);
 * - `optional`: used when present, on its own;
 * - `{ with: W }`: used whenever W is, never alone: required with W; present without W, it is a
 *   sign that W was renamed or lost, and rejected.
 */
export type Use = 'required' | 'optional' | { readonly with: string };

/**
 * One tensor rule. A dimension is a number, or a symbol bound by the first rule that meets it
 * (the width of the projector's hidden layer, of its output...), then required alike.
 */
export interface TensorRule {
  readonly name: string;
  readonly shape: readonly (number | string)[];
  readonly use: Use;
}

/**
 * The tensors of clip.cpp's `clip_graph_llava` encoder (tools/mtmd/models/llava.cpp), which every
 * LLaVA projector type runs, for width `E` and `P`-pixel patches. The patch and position embeddings
 * are dereferenced unconditionally (`build_inp`'s conv, `ggml_get_rows`); the class embedding,
 * patch bias and pre/post layer norms only when present (`if (model.x)`); the position embedding's
 * rows are checked apart (they must cover every patch). Per layer, see {@link layerRules}.
 */
function encoderRules(E: number, P: number): TensorRule[] {
  return [
    { name: 'v.patch_embd.weight', shape: [P, P, 3, E], use: 'required' },
    { name: 'v.patch_embd.bias', shape: [E], use: 'optional' },
    { name: 'v.class_embd', shape: [E], use: 'optional' },
    ...encoderNormRules(E),
  ];
}

/** The encoder's layer norms before and after its layers, each optional, a bias only with its weight. */
export function encoderNormRules(E: number): TensorRule[] {
  return [
    { name: 'v.pre_ln.weight', shape: [E], use: 'optional' },
    { name: 'v.pre_ln.bias', shape: [E], use: { with: 'v.pre_ln.weight' } },
    { name: 'v.post_ln.weight', shape: [E], use: 'optional' },
    { name: 'v.post_ln.bias', shape: [E], use: { with: 'v.post_ln.weight' } },
  ];
}

/**
 * One encoder layer: `build_mm(layer.q_w / k_w / v_w)` unconditionally (the loader takes them as
 * optional: a missing one segfaults), the output projection and the feed-forward pair through
 * required `get_tensor`s, biases and layer norms when present, the gate and its bias when the gate
 * is there. `F` is the feed-forward width; `up` and `down` are the stored names in clip.cpp's order
 * (old conversions swap them; clip.cpp swaps them back when `ffn_down` takes `E` values).
 */
export function layerRules(p: string, E: number, up: string, down: string): TensorRule[] {
  const rules: TensorRule[] = [];
  for (const part of ['attn_q', 'attn_k', 'attn_v', 'attn_out']) {
    rules.push({ name: `${p}.${part}.weight`, shape: [E, E], use: 'required' }, { name: `${p}.${part}.bias`, shape: [E], use: 'optional' });
  }
  for (const part of ['ln1', 'ln2']) {
    rules.push({ name: `${p}.${part}.weight`, shape: [E], use: 'optional' }, { name: `${p}.${part}.bias`, shape: [E], use: 'optional' });
  }
  rules.push(
    { name: `${p}.${up}.weight`, shape: [E, 'F'], use: 'required' },
    { name: `${p}.${up}.bias`, shape: ['F'], use: 'optional' },
    { name: `${p}.${down}.weight`, shape: ['F', E], use: 'required' },
    { name: `${p}.${down}.bias`, shape: [E], use: 'optional' },
    { name: `${p}.ffn_gate.weight`, shape: [E, 'F'], use: 'optional' },
    { name: `${p}.ffn_gate.bias`, shape: ['F'], use: { with: `${p}.ffn_gate.weight` } },
  );
  return rules;
}

/**
 * The projector types this module has rules for, and the tensors each dereferences after the
 * encoder (`IN` is the encoder's output width, `H` the hidden width, `O` the output width, the text
 * model's embedding width). Any other type is refused: clip.cpp's graphs for them dereference
 * tensors the loader takes as optional, and without their rules a damaged file could crash.
 */
export const PROJECTOR_RULES: Readonly<Record<'mlp' | 'mlp_norm', readonly TensorRule[]>> = {
  // LLaVA-1.5: linear, GELU, linear. `mm.0` is used unconditionally by the graph; `mm.2.weight` by
  // clip_n_mmproj_embd (`mm_2_w->ne[1]`, on every load and graph build), and `mm.2.bias` is added
  // whenever `mm.2.weight` is multiplied. A missing `mm.2.weight` is no one-layer projector: it
  // segfaults.
  mlp: [
    { name: 'mm.0.weight', shape: ['IN', 'H'], use: 'required' },
    { name: 'mm.0.bias', shape: ['H'], use: 'required' },
    { name: 'mm.2.weight', shape: ['H', 'O'], use: 'required' },
    { name: 'mm.2.bias', shape: ['O'], use: { with: 'mm.2.weight' } },
  ],
  // Yi-style (`mlp_norm`, or `mlp` with an `mm.3.weight`): linear, layer norm, GELU, linear, layer
  // norm, every tensor used unconditionally; the output width is `mm_3_b->ne[0]`.
  mlp_norm: [
    { name: 'mm.0.weight', shape: ['IN', 'H'], use: 'required' },
    { name: 'mm.0.bias', shape: ['H'], use: 'required' },
    { name: 'mm.1.weight', shape: ['H'], use: 'required' },
    { name: 'mm.1.bias', shape: ['H'], use: 'required' },
    { name: 'mm.3.weight', shape: ['H', 'O'], use: 'required' },
    { name: 'mm.3.bias', shape: ['O'], use: 'required' },
    { name: 'mm.4.weight', shape: ['O'], use: 'required' },
    { name: 'mm.4.bias', shape: ['O'], use: 'required' },
  ],
};

/** Applies `rules` to the tensors, binding symbolic dimensions in `dims`; `owner` names what needs a required tensor. */
export function applyRules(tensors: ReadonlyMap<string, ParsedTensor>, rules: readonly TensorRule[], dims: Map<string, number>, owner = 'a LLaVA projector'): void {
  for (const rule of rules) {
    const t = tensors.get(rule.name);
    const partner = typeof rule.use === 'object' ? rule.use.with : undefined;
    if (!t) {
      if (rule.use === 'required') throw new GgufFormatError(`it has no tensor '${rule.name}', which ${owner} needs: ${REDOWNLOAD}`);
      if (partner !== undefined && tensors.has(partner)) {
        throw new GgufFormatError(`it has tensor '${partner}' but no '${rule.name}', which clip.cpp uses with it: ${REDOWNLOAD}`);
      }
      continue;
    }
    if (partner !== undefined && !tensors.has(partner)) {
      throw new GgufFormatError(`it has tensor '${rule.name}' but no '${partner}', without which clip.cpp cannot use it (a renamed or lost tensor): ${REDOWNLOAD}`);
    }
    const expected = rule.shape.map((d, i) => {
      if (typeof d === 'number') return d;
      if (!dims.has(d)) dims.set(d, t.shape[i] ?? 1);
      return dims.get(d)!;
    });
    if (!sameShape(t.shape, expected)) {
      throw new GgufFormatError(`tensor '${rule.name}' has shape ${shapeText(t.shape)}; with the projector's hyperparameters it must be ${shapeText(expected)}: ${REDOWNLOAD}`);
    }
  }
}

/** The encoder's hyperparameters, as the projector checks need them. */
export interface EncoderFacts {
  width: number;
  heads: number;
  layers: number;
  imageSize: number;
  patchSize: number;
}

function checkProjector(parsed: ParsedGgufHeader): { type: string; outputWidth: number } {
  checkClipKeyTypes(parsed.entries);
  const hasVision = parsed.entries.get('clip.has_vision_encoder');
  if (hasVision?.type !== GgufType.BOOL || hasVision.value !== true) {
    throw new GgufFormatError("it has no vision encoder ('clip.has_vision_encoder' is not true), so it cannot read images: pass the mmproj file of a vision model");
  }
  // clip.cpp also loads an audio encoder a file says it has, by rules this module does not hold.
  for (const key of ['clip.has_audio_encoder', 'clip.has_gen_audio_encoder']) {
    const entry = parsed.entries.get(key);
    if (entry?.type === GgufType.BOOL && entry.value === true) {
      throw new GgufFormatError(`it has an audio encoder ('${key}' is true), which chain-of-spot does not check: pass the mmproj file of a vision model of a family it runs (README, "Model families")`);
    }
  }
  // clip.cpp reads the vision key when the general one is absent or empty.
  const type = stringValue(parsed, 'clip.projector_type') || stringValue(parsed, 'clip.vision.projector_type') || '';
  const required = (key: string, min: number, max = 0x7fffffff): number => {
    const value = numberValue(parsed, key);
    if (value === undefined) throw new GgufFormatError(`it has no '${key}': use an mmproj converted by llama.cpp's tools`);
    if (!(value >= min && value <= max)) throw new GgufFormatError(`'${key}' is ${value}, outside ${min} to ${max}: ${REDOWNLOAD}`);
    return value;
  };
  const width = required('clip.vision.embedding_length', 1);
  const heads = required('clip.vision.attention.head_count', 1);
  const layers = required('clip.vision.block_count', 1, 4096);
  const imageSize = required('clip.vision.image_size', 1, CLIP_MAX_IMAGE_SIZE);
  const patchSize = required('clip.vision.patch_size', 1, imageSize);
  checkEpsilon(parsed, 'clip.vision.attention.layer_norm_epsilon');
  // The attention reshapes the width into heads of `head_dim` (or width / heads): GGML_ASSERT otherwise.
  const headDim = numberValue(parsed, 'clip.vision.attention.head_dim') ?? 0;
  if (headDim > 0 ? headDim * heads !== width : width % heads !== 0) {
    throw new GgufFormatError(
      headDim > 0
        ? `'clip.vision.attention.head_dim' ${headDim} times 'clip.vision.attention.head_count' ${heads} is not 'clip.vision.embedding_length' ${width} (clip.cpp aborts): ${REDOWNLOAD}`
        : `'clip.vision.embedding_length' ${width} is not a multiple of 'clip.vision.attention.head_count' ${heads} (clip.cpp aborts): ${REDOWNLOAD}`,
    );
  }
  // LLaVA-1.6's resolution candidates, sizes in pixels a large image is cut to: select_best_resolution
  // multiplies them as ints (overflow past 46340), and none of 0 or less makes sense.
  for (const pinpoint of int32Items(parsed, 'clip.vision.image_grid_pinpoints') ?? []) {
    if (!(pinpoint >= 1 && pinpoint <= CLIP_MAX_IMAGE_SIZE)) {
      throw new GgufFormatError(`'clip.vision.image_grid_pinpoints' holds ${pinpoint}, not an image side from 1 to ${CLIP_MAX_IMAGE_SIZE}: ${REDOWNLOAD}`);
    }
  }
  if (!type) throw new GgufFormatError("it has no 'clip.projector_type', so llama.cpp cannot tell how to project images: use an mmproj converted by llama.cpp's tools");
  const tensors = new Map(parsed.tensors.map((t) => [t.name, t]));
  const encoder: EncoderFacts = { width, heads, layers, imageSize, patchSize };
  // Other families' projectors: their own rules (lib/gguf/<family>.ts).
  if (QWEN_VL_PROJECTOR_TYPES.has(type)) return { type, outputWidth: checkQwenVlProjector(parsed, tensors, type, encoder) };
  if (INTERNVL_PROJECTOR_TYPES.has(type)) return { type, outputWidth: checkInternVlProjector(parsed, tensors, encoder) };
  if (type === GEMMA3_PROJECTOR_TYPE) return { type, outputWidth: checkGemma3Projector(parsed, tensors, encoder) };
  // A `mlp` file with an `mm.3.weight` is built as `mlp_norm` (clip.cpp's Yi hack).
  const effective = type === 'mlp' && tensors.has('mm.3.weight') ? 'mlp_norm' : type;
  if (effective !== 'mlp' && effective !== 'mlp_norm') {
    const known = ['mlp', 'mlp_norm', ...QWEN_VL_PROJECTOR_TYPES, ...INTERNVL_PROJECTOR_TYPES, GEMMA3_PROJECTOR_TYPE].map((name) => `'${name}'`).join(', ');
    throw new GgufFormatError(
      `its projector type '${type}' is none chain-of-spot runs and checks (${known}: LLaVA-1.5, Qwen2.5-VL, Qwen3-VL, InternVL, Gemma 3): ` +
        'pass the mmproj file of one of these models',
    );
  }
  const inputWidth = checkEncoderTensors(parsed, tensors, encoder);
  const dims = new Map([['IN', inputWidth]]);
  const mm0 = tensors.get('mm.0.weight');
  if (mm0 && mm0.shape[0] !== inputWidth) {
    throw new GgufFormatError(`tensor 'mm.0.weight' takes ${mm0.shape[0]} values, but the encoder gives ${inputWidth}: ${REDOWNLOAD}`);
  }
  applyRules(tensors, PROJECTOR_RULES[effective], dims);
  return { type, outputWidth: dims.get('O')! };
}

/** A patch convolution's kernel: ggml's im2col takes f32 or f16 only (it aborts otherwise). */
export function checkConvolutionType(kernel: ParsedTensor): void {
  checkTensorType(kernel, [GgmlType.F32, GgmlType.F16], 'the patch convolution needs f32 or f16');
}

/** A position embedding the graph adds to the patches as it is: ggml adds f32 to f32 only (the converters write it so). */
export function checkAddedPositionEmbedding(position: ParsedTensor): void {
  checkTensorType(position, [GgmlType.F32], 'the position embedding is added to the patches as it is, which ggml does in f32 only (it aborts otherwise)');
}

/** A tensor the graph can use only in some types (an op without kernels for the others aborts). */
export function checkTensorType(tensor: ParsedTensor, allowed: readonly GgmlType[], why: string): void {
  if (!allowed.includes(tensor.type)) throw new GgufFormatError(`tensor '${tensor.name}' is ${tensor.typeInfo.name}; ${why}: ${REDOWNLOAD}`);
}

/**
 * The encoder's tensors (clip.cpp's `clip_graph_llava`), and the width of what it hands the
 * projector: the last feature layer's output, or the feature layers' outputs stacked.
 */
function checkEncoderTensors(parsed: ParsedGgufHeader, tensors: ReadonlyMap<string, ParsedTensor>, h: EncoderFacts): number {
  const E = h.width;
  applyRules(tensors, encoderRules(E, h.patchSize), new Map());
  checkConvolutionType(tensors.get('v.patch_embd.weight')!);
  const side = Math.floor(h.imageSize / h.patchSize);
  const positions = side * side + (tensors.has('v.class_embd') ? 1 : 0);
  const position = tensors.get('v.position_embd.weight');
  if (!position) throw new GgufFormatError(`it has no tensor 'v.position_embd.weight', which a LLaVA projector needs: ${REDOWNLOAD}`);
  if (position.shape[0] !== E || (position.shape[1] ?? 1) < positions || position.shape.slice(2).some((d) => d !== 1)) {
    throw new GgufFormatError(
      `tensor 'v.position_embd.weight' has shape ${shapeText(position.shape)}, but ${h.imageSize}-pixel images in ${h.patchSize}-pixel ` +
        `patches need ${shapeText([E, positions])}: ${REDOWNLOAD}`,
    );
  }
  for (let il = 0; il < h.layers; il++) {
    const p = `v.blk.${il}`;
    // clip.cpp swaps up and down back when `ffn_down` takes the width (the legacy converter's names).
    const swapped = tensors.get(`${p}.ffn_down.weight`)?.shape[0] === E && tensors.has(`${p}.ffn_up.weight`);
    applyRules(tensors, swapped ? layerRules(p, E, 'ffn_down', 'ffn_up') : layerRules(p, E, 'ffn_up', 'ffn_down'), new Map());
  }

  // The graph runs layers 0 to max_feature_layer - 1: the deepest feature layer, or all but the last.
  const featureLayers = int32Items(parsed, 'clip.vision.feature_layer') ?? [];
  const deepest = Math.max(-1, ...featureLayers);
  if (deepest > h.layers) {
    throw new GgufFormatError(`'clip.vision.feature_layer' names layer ${deepest}, but the encoder has ${h.layers}: ${REDOWNLOAD}`);
  }
  const maxFeatureLayer = deepest < 0 ? h.layers - 1 : deepest;
  // Each feature layer from 0 (the encoder's input) to max_feature_layer (its output) is stacked once.
  const stacked = new Set(featureLayers.filter((layer) => layer >= 0 && layer <= maxFeatureLayer)).size;
  return E * Math.max(1, stacked);
}
