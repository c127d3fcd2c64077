/**
 * GGUF test material shared by test/unit/gguf-check.test.ts (header checks), test/system/gguf-crash.test.ts
 * (the same files loaded through llama.cpp in child processes) and scripts/fuzz.mjs (its bases):
 * - byte-level helpers to mutate a file's header at a field found by the reader;
 * - {@link writeForeignMmproj}: the tiny mmproj laid out as other GGUF writers lay out a LLaVA
 *   mmproj (gguf-py through llama.cpp's legacy `convert_image_encoder_to_gguf.py`), not as ours does;
 * - {@link CRASHING}: edits that each aborted or segfaulted the process before the check caught them.
 *
 * Holds no tests itself (mocha loads it and finds none).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { GgmlType, GgufType, type GgufValue } from '../../lib/gguf/format';
import { ggufFields, parseGgufHeader, readGgufHeader, type GgufField } from '../../lib/gguf/reader';
import { gguf, tensorByteSize, writeGguf, type GgufTensor } from '../../lib/gguf/writer';
import { ChainOfSpotError } from '../../lib/common/errors';
import { checkGguf, type GgufRole } from '../../lib/gguf/check';

/** A file to mutate: its bytes and where its header fields are. */
export interface Base {
  readonly path: string;
  readonly bytes: Buffer;
  readonly fields: GgufField[];
  /** Where the tensor data starts. */
  readonly dataOffset: number;
}

export async function base(file: string): Promise<Base> {
  const bytes = await readFile(file);
  const fields = ggufFields(bytes);
  const { dataOffset } = parseGgufHeader(bytes, { fileSize: bytes.length, complete: true, maxHeaderBytes: bytes.length });
  return { path: file, bytes, fields, dataOffset };
}

/** The first field of `kind` (belonging to the key or tensor `owner`, when given). */
export function fieldOf(b: Base, kind: string, owner?: string): GgufField {
  const f = b.fields.find((x) => x.kind === kind && (owner === undefined || x.owner === owner));
  assert.ok(f, `no ${kind} field${owner ? ` of ${owner}` : ''} in ${b.path}`);
  return f;
}

export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
export const u64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
};
export const f32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return b;
};

/** A copy of `bytes` with `data` written at each offset. */
export function patched(bytes: Buffer, ...edits: [at: number, data: Buffer][]): Buffer {
  const out = Buffer.from(bytes);
  for (const [at, data] of edits) data.copy(out, at);
  return out;
}

/** The name bytes of a key or tensor (after the 8-byte length of `lengthField`). */
export function nameAt(lengthField: GgufField): number {
  return lengthField.offset + 8;
}

/** `bytes` with one byte of tensor `name`'s name changed to `to` (at `index`, default its last). */
export function renameTensor(b: Base, name: string, to: string, index = name.length - 1): Buffer {
  return patched(b.bytes, [nameAt(fieldOf(b, 'tensor_name_length', name)) + index, Buffer.from(to, 'latin1')]);
}

/**
 * For one describe block: a scratch folder, made before its tests and removed after them
 * (`path()`), and `write`, which writes the next case file there and gives its path.
 */
export function caseFolder(prefix: string): { path: () => string; write: (bytes: Buffer) => Promise<string> } {
  let dir = '';
  let counter = 0;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), prefix));
  });
  after(async () => rm(dir, { recursive: true, force: true }));
  return {
    path: () => dir,
    write: async (bytes) => {
      const file = path.join(dir, `case-${counter++}.gguf`);
      await writeFile(file, bytes);
      return file;
    },
  };
}

/** `b` with tensor `name`'s first two dimensions swapped: the same size, another shape. */
export function swapDims(b: Base, name: string): Buffer {
  const [first, second] = b.fields.filter((f) => f.kind === 'dim' && f.owner === name);
  assert.ok(first && second, `${name} has two dimensions`);
  return patched(b.bytes, [first.offset, u64(b.bytes.readBigUInt64LE(second.offset))], [second.offset, u64(b.bytes.readBigUInt64LE(first.offset))]);
}

/** `b` with one letter of key `key` changed (its last), so that the key is gone. */
export function renameKey(b: Base, key: string): Buffer {
  return patched(b.bytes, [nameAt(fieldOf(b, 'key_length', key)) + key.length - 1, Buffer.from('#')]);
}

/** `b` with u32 key `key` holding `value`. */
export function setU32(b: Base, key: string, value: number): Buffer {
  return patched(b.bytes, [fieldOf(b, 'value', key).offset, u32(value)]);
}

/** Asserts that checking `file` as `role` rejects with a ChainOfSpotError of `code` whose message matches `pattern`. */
export async function rejectsWithCode(file: string, role: GgufRole, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(checkGguf(file, role), (error: unknown) => {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

/** An f32 tensor of `shape`, all `value`. */
export function constant(name: string, shape: readonly number[], value: number): GgufTensor {
  return { name, shape, type: GgmlType.F32, data: () => [new Float32Array(shape.reduce((a, d) => a * d, 1)).fill(value)] };
}

/**
 * `b` rewritten by our writer: the keys of `set` replaced where present (else added), tensors of
 * `retype` in another type (their data zeros of that type's size: the layout holds, the type may
 * be one the graph cannot take), and `extra` tensors added.
 */
export async function rewritten(
  b: Base,
  edits: { set?: readonly [string, GgufValue][]; retype?: Readonly<Record<string, GgmlType>>; extra?: readonly GgufTensor[] },
): Promise<Buffer> {
  const header = await readGgufHeader(b.path);
  const replaced = new Map(edits.set ?? []);
  const metadata: [string, GgufValue][] = [...[...header.kv].filter(([key]) => !replaced.has(key)), ...replaced];
  const tensors: GgufTensor[] = header.tensors.map((t) => {
    const type = edits.retype?.[t.name];
    if (type !== undefined) return { name: t.name, shape: t.shape, type, data: () => [Buffer.alloc(tensorByteSize(type, t.shape))] };
    const start = header.dataOffset + t.offset;
    const data = b.bytes.subarray(start, start + tensorByteSize(t.type as GgmlType, t.shape));
    return { name: t.name, shape: t.shape, type: t.type as GgmlType, data: () => [data] };
  });
  for (const name of Object.keys(edits.retype ?? {})) assert.ok(header.tensors.some((t) => t.name === name), `${b.path} has no tensor ${name}`);
  const file = path.join(tmpdir(), `cos-rewritten-${process.pid}-${Math.random().toString(36).slice(2)}.gguf`);
  try {
    await writeGguf(file, { metadata, tensors: [...tensors, ...(edits.extra ?? [])] });
    return await readFile(file);
  } finally {
    await rm(file, { force: true });
  }
}

/** `b` with tensor `name` in `type` (see {@link rewritten}). */
export function retyped(b: Base, name: string, type: GgmlType): Promise<Buffer> {
  return rewritten(b, { retype: { [name]: type } });
}

// --- other writers' layouts ------------------------------------------------------------------------

/**
 * How other writers lay out a LLaVA mmproj:
 * - `legacy`: gguf-py's GGUFWriter as llama.cpp's `convert_image_encoder_to_gguf.py` drives it for
 *   LLaVA-1.5: its keys in its order (no fingerprint, `general.description` "image encoder for
 *   LLaVA / Phi-3"), the projector's tensors first, then CLIP's state dict (the last layer and
 *   `post_layernorm` dropped); integer lists as INT32 arrays, as gguf-py types Python ints.
 * - `surgery`: the same converter after LLaVA-1.6's `llava_surgery_v2.py`: the optional keys of a
 *   1.6 vision config (`image_grid_pinpoints`, `image_crop_resolution`, `image_aspect_ratio`,
 *   `image_split_resolution`, `mm_patch_merge_type`, `mm_projector_type`), an explicit
 *   `feature_layer`, `model.image_newline`, tensors sorted by name (as safetensors hands them over:
 *   every bias before its weight), and a 64-byte `general.alignment`.
 */
export type ForeignLayout = 'legacy' | 'surgery';

export const FOREIGN_LAYOUTS: readonly ForeignLayout[] = ['legacy', 'surgery'];

/**
 * Rewrites the mmproj `src` (written by lib/models/tiny-model.ts) at `dst` in another writer's
 * layout, with `extra` keys at the end.
 */
export async function writeForeignMmproj(src: string, dst: string, layout: ForeignLayout, extra: readonly [string, GgufValue][] = []): Promise<void> {
  const [header, bytes] = await Promise.all([readGgufHeader(src), readFile(src)]);
  const kv = (key: string): GgufValue => {
    const value = header.kv.get(key);
    assert.ok(value, `${src} has no ${key}`);
    return value;
  };
  const number = (key: string): number => kv(key).value as number;
  const side = number('clip.vision.image_size');
  const layers = number('clip.vision.block_count');
  const metadata: [string, GgufValue][] = [['general.architecture', gguf.str('clip')]];
  if (layout === 'surgery') metadata.push(['general.alignment', gguf.u32(64)]);
  metadata.push(
    ['clip.has_text_encoder', gguf.bool(false)],
    ['clip.has_vision_encoder', gguf.bool(true)],
    ['clip.has_llava_projector', gguf.bool(true)],
    ['general.file_type', gguf.u32(1)],
    ['general.name', gguf.str(layout === 'legacy' ? 'openai/clip-vit-large-patch14-336' : 'llava-v1.6-vision-tower')],
    ['general.description', gguf.str('image encoder for LLaVA / Phi-3')],
    ['clip.projector_type', gguf.str('mlp')],
  );
  for (const key of ['image_size', 'patch_size', 'embedding_length', 'feed_forward_length', 'projection_dim', 'attention.head_count', 'attention.layer_norm_epsilon', 'block_count']) {
    metadata.push([`clip.vision.${key}`, kv(`clip.vision.${key}`)]);
  }
  if (layout === 'surgery') {
    metadata.push(
      ['clip.vision.image_grid_pinpoints', gguf.array(GgufType.INT32, [side, 2 * side, 2 * side, side, 2 * side, 2 * side, 3 * side, side, side, 3 * side])],
      ['clip.vision.image_crop_resolution', gguf.u32(side)],
      ['clip.vision.image_aspect_ratio', gguf.str('anyres')],
      ['clip.vision.image_split_resolution', gguf.u32(side)],
      ['clip.vision.mm_patch_merge_type', gguf.str('spatial_unpad')],
      ['clip.vision.mm_projector_type', gguf.str('mlp2x_gelu')],
      // mm_vision_select_layer -2 made non-negative: block_count is its maximum, every stored layer runs.
      ['clip.vision.feature_layer', gguf.array(GgufType.INT32, [layers])],
    );
  }
  metadata.push(['clip.vision.image_mean', kv('clip.vision.image_mean')], ['clip.vision.image_std', kv('clip.vision.image_std')], ['clip.use_gelu', gguf.bool(false)]);
  metadata.push(...extra);

  const tensors: GgufTensor[] = header.tensors.map((t) => {
    const start = header.dataOffset + t.offset;
    const data = bytes.subarray(start, start + tensorByteSize(t.type as GgmlType, t.shape));
    return { name: t.name, shape: t.shape, type: t.type as GgmlType, data: () => [data] };
  });
  if (layout === 'surgery') {
    const width = header.tensors.find((t) => t.name === 'mm.2.weight')!.shape[1]!;
    tensors.push({ name: 'model.image_newline', shape: [width], type: GgmlType.F32, data: () => [new Float32Array(width).fill(0.01)] });
    tensors.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  await writeGguf(dst, { metadata, tensors });
}

// --- what crashed the process ----------------------------------------------------------------------

/** The files a case edits: the tiny pair, and the mmproj in the other layouts. */
export type BaseName = 'model' | 'mmproj' | ForeignLayout;

/** One edit that kept the file structurally valid for gguf.cpp and then aborted or segfaulted llama.cpp. */
export interface CrashCase {
  readonly what: string;
  readonly role: GgufRole;
  readonly base: BaseName;
  readonly edit: (b: Base) => Buffer;
  /** What the check says. */
  readonly message: RegExp;
  /** Whether test/system/gguf-crash.test.ts also shows the crash with the check skipped. */
  readonly reproduce?: boolean;
}

/** Found by experiment: each case aborted or segfaulted the process before the check caught it. */
export const CRASHING: readonly CrashCase[] = [
  { what: 'two vocabulary tokens with the same text (llama-vocab.cpp GGML_ASSERT)', role: 'text-model', base: 'model', edit: (m) => {
    const items = m.fields.filter((f) => f.kind === 'array_item' && f.owner === 'tokenizer.ggml.tokens');
    const a = items[300]!;
    const b = items.slice(301).find((f) => f.width === a.width)!;
    return patched(m.bytes, [b.offset, m.bytes.subarray(a.offset, a.offset + a.width)]);
  }, message: /tokens 300 and \d+ of the vocabulary are both .* must be unique/ },
  { what: 'block_count 0 (llama-model.cpp GGML_ASSERT)', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'value', 'llama.block_count').offset, u32(0)]), message: /block_count' is 0; llama.cpp loads 1 to 512 layers/ },
  { what: 'block_count 4095', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'value', 'llama.block_count').offset, u32(4095)]), message: /block_count' is 4095/ },
  { what: 'an RMS norm epsilon of NaN (ggml-cpu GGML_ASSERT(eps >= 0))', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'value', 'llama.attention.layer_norm_rms_epsilon').offset, f32(NaN)]), message: /epsilon' is NaN/ },
  { what: 'a negative RMS norm epsilon', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'value', 'llama.attention.layer_norm_rms_epsilon').offset, f32(-1)]), message: /epsilon' is -1/ },
  { what: 'a weight of type i16 (segfault in the matrix multiply)', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'tensor_type', 'blk.0.ffn_down.weight').offset, u32(25)]), message: /'blk.0.ffn_down.weight' has type i16, which llama.cpp cannot compute with/ },
  { what: 'a norm weight of type i32 (ggml binary-op abort)', role: 'text-model', base: 'model', edit: (m) => patched(m.bytes, [fieldOf(m, 'tensor_type', 'blk.0.attn_norm.weight').offset, u32(26)]), message: /'blk.0.attn_norm.weight' \[256\] is i32; llama.cpp needs one-dimensional tensors in f32/ },
  { what: 'a missing projector tensor (clip.cpp segfault)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [nameAt(fieldOf(p, 'tensor_name_length', 'mm.0.weight')), Buffer.from('mm&0')]), message: /no tensor 'mm.0.weight'/ },
  { what: 'a missing attention weight', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [nameAt(fieldOf(p, 'tensor_name_length', 'v.blk.0.attn_v.weight')), Buffer.from('v.blk.0.attn_O')]), message: /no tensor 'v.blk.0.attn_v.weight'/ },
  { what: 'a norm weight one shorter (ggml_can_repeat GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'dim', 'v.blk.0.ln1.weight').offset, u64(127n)]), message: /'v.blk.0.ln1.weight' has shape \[127\]; .* must be \[128\]/ },
  { what: 'a head count that does not divide the width (ggml_reshape GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.attention.head_count').offset, u32(3)]), message: /embedding_length' 128 is not a multiple of 'clip.vision.attention.head_count' 3/ },
  { what: 'a width that differs from the tensors', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.embedding_length').offset, u32(64)]), message: /must be \[14, 14, 3, 64\]/ },
  { what: 'a layer norm epsilon of -1', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.attention.layer_norm_epsilon').offset, f32(-1)]), message: /epsilon' is -1/ },
  { what: 'image_size 0 (ggml_conv GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.image_size').offset, u32(0)]), message: /image_size' is 0/ },
  { what: 'image_size 224: more patches than position embeddings (get_rows GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.image_size').offset, u32(224)]), message: /224-pixel images in 14-pixel patches need \[128, 257\]/ },
  { what: 'patch_size 7', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value', 'clip.vision.patch_size').offset, u32(7)]), message: /must be \[7, 7, 3, 128\]/ },
  { what: 'image_size stored as i32 (gguf.cpp type GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value_type', 'clip.vision.image_size').offset, u32(5)]), message: /'clip.vision.image_size' is stored as i32, but llama.cpp reads it as u32/ },
  { what: 'use_gelu stored as u8', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value_type', 'clip.use_gelu').offset, u32(0)]), message: /'clip.use_gelu' is stored as u8, but llama.cpp reads it as bool/ },
  { what: 'the epsilon stored as u32', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'value_type', 'clip.vision.attention.layer_norm_epsilon').offset, u32(4)]), message: /stored as u32, but llama.cpp reads it as f32/ },
  { what: 'a bias of type f16 (ggml binary-op abort)', role: 'projector', base: 'mmproj', edit: (p) => {
    // Twice the values at half the size each: the same 512 bytes, so the offsets still hold.
    return patched(p.bytes, [fieldOf(p, 'dim', 'v.blk.0.ln1.bias').offset, u64(256n)], [fieldOf(p, 'tensor_type', 'v.blk.0.ln1.bias').offset, u32(1)]);
  }, message: /'v.blk.0.ln1.bias' \[256\] is f16; llama.cpp needs one-dimensional tensors in f32/ },
  { what: 'a patch embedding of type bf16 (ggml backend GGML_ASSERT)', role: 'projector', base: 'mmproj', edit: (p) => patched(p.bytes, [fieldOf(p, 'tensor_type', 'v.patch_embd.weight').offset, u32(30)]), message: /'v.patch_embd.weight' is bf16; the patch convolution needs f32 or f16/ },
  { what: 'a tensor whose data lies past the end of the file (ggml-backend GGML_ASSERT(buffer))', role: 'projector', base: 'mmproj', edit: (p) => {
    const last = p.fields.filter((f) => f.kind === 'dim').at(-1)!;
    return patched(p.bytes, [last.offset, u64(2n ** 41n + 128n)]);
  }, message: /the data of tensor '[^']+' \([^)]+\) runs to byte \d+/ },
  // Issue 11 §3: clip_n_mmproj_embd reads mm_2_w->ne[1] for every `mlp` projector; the check took a
  // missing mm.2.weight for a one-layer projector.
  { what: 'mm.2.weight renamed, mm.2.bias left alone, in our layout (clip_n_mmproj_embd segfault)', role: 'projector', base: 'mmproj', edit: (p) => renameTensor(p, 'mm.2.weight', 'W'), message: /no tensor 'mm.2.weight'/, reproduce: true },
  { what: 'mm.2.weight renamed in the legacy converter\'s layout', role: 'projector', base: 'legacy', edit: (p) => renameTensor(p, 'mm.2.weight', 'W'), message: /no tensor 'mm.2.weight'/, reproduce: true },
  { what: 'mm.2.weight renamed in the LLaVA-1.6 surgery layout (bias before weight)', role: 'projector', base: 'surgery', edit: (p) => renameTensor(p, 'mm.2.weight', 'W'), message: /no tensor 'mm.2.weight'/, reproduce: true },
  { what: 'a feature layer deeper than the encoder (layer index out of range)', role: 'projector', base: 'surgery', edit: (p) => patched(p.bytes, [fieldOf(p, 'array_item', 'clip.vision.feature_layer').offset, u32(7)]), message: /'clip.vision.feature_layer' names layer 7, but the encoder has 2/ },
  { what: 'mm.2.bias renamed, mm.2.weight left alone (graph segfault: ggml_add of a missing bias)', role: 'projector', base: 'legacy', edit: (p) => renameTensor(p, 'mm.2.bias', 'B'), message: /it has tensor 'mm.2.weight' but no 'mm.2.bias', which clip.cpp uses with it/ },
  { what: 'an mlp projector whose mm.2.weight became mm.3.weight, built as mlp_norm (graph segfault on mm_1_w)', role: 'projector', base: 'mmproj', edit: (p) => renameTensor(p, 'mm.2.weight', '3', 3), message: /no tensor 'mm.1.weight'/ },
];
