/**
 * The header checks of Qwen2.5-VL and Qwen3-VL projectors (lib/gguf/qwen-vl.ts) and of Qwen3-VL's
 * text model: the tiny pairs pass, and each edit that breaks what llama.cpp's Qwen graphs need is
 * refused with a message naming what is wrong.
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { checkGguf } from '../../lib/gguf/check';
import { ensureTinyQwen25Vl, ensureTinyQwen3Vl } from '../../lib/models/tiny-qwen-vl';
import { MODEL_CACHE } from '../support/models';
import { GgmlType } from '../../lib/gguf/format';
import { base, caseFolder, fieldOf, patched, rejectsWithCode, renameKey, renameTensor, retyped, swapDims, u32, type Base } from './gguf-cases';

describe('checkGguf on Qwen-VL projectors', () => {
  const { write } = caseFolder('cos-gguf-qwen-');
  let qwen25: Base;
  let qwen3: Base;
  let qwen3Text: Base;

  before(async () => {
    const [a, b] = await Promise.all([ensureTinyQwen25Vl(MODEL_CACHE), ensureTinyQwen3Vl(MODEL_CACHE)]);
    qwen25 = await base(a.mmproj);
    qwen3 = await base(b.mmproj);
    qwen3Text = await base(b.model);
  });

  it('passes the tiny projectors, with their output widths (Qwen3-VL: 256 for the merger and 256 for its deepstack merger)', async () => {
    const a = await checkGguf(qwen25.path, 'projector');
    assert.equal(a.projectorType, 'qwen2.5vl_merger');
    assert.equal(a.projectorOutputWidth, 256);
    const b = await checkGguf(qwen3.path, 'projector');
    assert.equal(b.projectorType, 'qwen3vl_merger');
    assert.equal(b.projectorOutputWidth, 512);
  });

  it('passes the tiny text models', async () => {
    assert.equal((await checkGguf(qwen3Text.path, 'text-model')).architecture, 'qwen3vl');
    assert.equal((await checkGguf((await ensureTinyQwen25Vl(MODEL_CACHE)).model, 'text-model')).architecture, 'qwen2vl');
  });

  it('compares the projector with the text model that takes its deepstack slices', async () => {
    await checkGguf(qwen3.path, 'projector', { textEmbeddingSize: 512 });
    await assert.rejects(checkGguf(qwen3.path, 'projector', { textEmbeddingSize: 256 }), (error: unknown) => (error as ChainOfSpotError).code === 'ERR_PROJECTOR_MISMATCH');
  });

  const cases: [what: string, file: () => Base, edit: (b: Base) => Buffer, message: RegExp][] = [
    // Missing tensors.
    ['Qwen2.5-VL without the second patch convolution', () => qwen25, (b) => renameTensor(b, 'v.patch_embd.weight.1', '2'), /no tensor 'v.patch_embd.weight.1', which a Qwen-VL projector needs/],
    ['Qwen2.5-VL without a query bias (added unconditionally)', () => qwen25, (b) => renameTensor(b, 'v.blk.0.attn_q.bias', 'Z'), /no tensor 'v.blk.0.attn_q.bias'/],
    ['Qwen2.5-VL without the merger output bias', () => qwen25, (b) => renameTensor(b, 'mm.2.bias', 'Z'), /no tensor 'mm.2.bias'/],
    ['Qwen3-VL without a fused qkv bias', () => qwen3, (b) => renameTensor(b, 'v.blk.1.attn_qkv.bias', 'Z'), /no tensor 'v.blk.1.attn_qkv.bias'/],
    ['Qwen3-VL without its patch bias (asserted)', () => qwen3, (b) => renameTensor(b, 'v.patch_embd.bias', 'Z'), /no tensor 'v.patch_embd.bias'/],
    ['Qwen3-VL without its position embedding (asserted)', () => qwen3, (b) => renameTensor(b, 'v.position_embd.weight', 'Z'), /no tensor 'v.position_embd.weight'/],
    ['Qwen3-VL with a deepstack merger that lost its second layer', () => qwen3, (b) => renameTensor(b, 'v.deepstack.0.fc2.weight', '3', 'v.deepstack.0.fc'.length), /has tensor 'v.deepstack.0.fc1.weight' but no 'v.deepstack.0.fc2.weight'/],
    // Wrong shapes (the same size, so the data layout still holds).
    ['Qwen2.5-VL with a feed-forward gate the wrong way round', () => qwen25, (b) => swapDims(b, 'v.blk.0.ffn_gate.weight'), /tensor 'v.blk.0.ffn_gate.weight' has shape \[128, 64\]; .* must be \[64, 128\]/],
    ['Qwen3-VL with a fused qkv the wrong way round', () => qwen3, (b) => swapDims(b, 'v.blk.0.attn_qkv.weight'), /tensor 'v.blk.0.attn_qkv.weight' has shape \[192, 64\]; .* must be \[64, 192\]/],
    ['Qwen3-VL with its position embedding the wrong way round', () => qwen3, (b) => swapDims(b, 'v.position_embd.weight'), /tensor 'v.position_embd.weight' has shape \[256, 64\]; it must be 64 wide/],
    // Keys.
    ['Qwen2.5-VL without its window pattern (clip.cpp requires it)', () => qwen25, (b) => renameKey(b, 'clip.vision.n_wa_pattern'), /no 'clip.vision.n_wa_pattern'/],
    ['Qwen3-VL without its projection width (clip.cpp requires it)', () => qwen3, (b) => renameKey(b, 'clip.vision.projection_dim'), /no 'clip.vision.projection_dim'/],
    // scripts/fuzz.mjs found these two abort llama.cpp.
    ['Qwen2.5-VL with a window pattern of 1 (no window layer: the unused mask aborts)', () => qwen25, (b) => patched(b.bytes, [fieldOf(b, 'value', 'clip.vision.n_wa_pattern').offset, u32(1)]), /'clip.vision.n_wa_pattern' is 1, which leaves no window-attention layer/],
    ['Qwen3-VL with 64 heads of one value each (an empty rotary section aborts)', () => qwen3, (b) => patched(b.bytes, [fieldOf(b, 'value', 'clip.vision.attention.head_count').offset, u32(64)]), /head_count' 64 leaves heads 1 wide in a 64-wide encoder/],
    ['a spatial merge of 3 (the graphs merge 2x2)', () => qwen3, (b) => patched(b.bytes, [fieldOf(b, 'value', 'clip.vision.spatial_merge_size').offset, u32(3)]), /'clip.vision.spatial_merge_size' is 3/],
    ['Qwen2.5-VL with window attention and a projection width other than the merger output', () => qwen25, (b) => patched(b.bytes, [fieldOf(b, 'value', 'clip.vision.projection_dim').offset, u32(128)]), /'clip.vision.projection_dim' is 128, but the merger gives 256/],
  ];
  for (const [what, file, edit, message] of cases) {
    it(`${what}: ERR_PROJECTOR_LOAD`, async () => {
      await rejectsWithCode(await write(edit(file())), 'projector', 'ERR_PROJECTOR_LOAD', message);
    });
  }

  // scripts/fuzz.mjs found it: ggml_interpolate asserts an f32 input (the converter forces f32).
  for (const type of [GgmlType.F16, GgmlType.Q8_0]) {
    it(`Qwen3-VL with its position embedding in ${type === GgmlType.F16 ? 'f16' : 'q8_0'} (its resize aborts): ERR_PROJECTOR_LOAD`, async () => {
      await rejectsWithCode(await write(await retyped(qwen3, 'v.position_embd.weight', type)), 'projector', 'ERR_PROJECTOR_LOAD', /tensor 'v.position_embd.weight' is (f16|q8_0); Qwen3-VL resizes its position embedding, which ggml does in f32 only/);
    });
  }

  it('a Qwen3-VL text model whose deepstack reaches its last layer: ERR_MODEL_LOAD', async () => {
    const edited = patched(qwen3Text.bytes, [fieldOf(qwen3Text, 'value', 'qwen3vl.n_deepstack_layers').offset, u32(2)]);
    await rejectsWithCode(await write(edited), 'text-model', 'ERR_MODEL_LOAD', /'qwen3vl.n_deepstack_layers' is 2; it must be less than 'qwen3vl.block_count' 2/);
  });
});
