/**
 * The header checks of InternVL projectors (lib/gguf/internvl.ts) and of InternVL's Qwen2 text
 * model: the tiny pair passes, and each edit that breaks what llama.cpp's InternVL graph, its
 * loader or mtmd's tiling needs is refused with a message naming what is wrong.
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { checkGguf } from '../../lib/gguf/check';
import { GgmlType, GgufType, type GgufValue } from '../../lib/gguf/format';
import { gguf, type GgufTensor } from '../../lib/gguf/writer';
import { ensureTinyInternVl } from '../../lib/models/tiny-internvl';
import { MODEL_CACHE } from '../support/models';
import { base, caseFolder, constant, fieldOf, patched, rejectsWithCode, renameKey, renameTensor, retyped, rewritten, setU32, swapDims, u32, type Base } from './gguf-cases';

describe('checkGguf on InternVL projectors', () => {
  const { write } = caseFolder('cos-gguf-internvl-');
  let mmproj: Base;
  let text: string;

  before(async () => {
    const files = await ensureTinyInternVl(MODEL_CACHE);
    mmproj = await base(files.mmproj);
    text = files.model;
  });

  it('passes the tiny projector, which gives the text width (256) per token', async () => {
    const summary = await checkGguf(mmproj.path, 'projector');
    assert.equal(summary.projectorType, 'internvl');
    assert.equal(summary.projectorOutputWidth, 256);
  });

  it('passes the tiny Qwen2 text model', async () => {
    assert.equal((await checkGguf(text, 'text-model')).architecture, 'qwen2');
  });

  it('compares the projector with the text model it feeds', async () => {
    await checkGguf(mmproj.path, 'projector', { textEmbeddingSize: 256 });
    await assert.rejects(checkGguf(mmproj.path, 'projector', { textEmbeddingSize: 128 }), (error: unknown) => (error as ChainOfSpotError).code === 'ERR_PROJECTOR_MISMATCH');
  });

  const edits: [what: string, edit: (b: Base) => Buffer, message: RegExp][] = [
    // Missing tensors.
    ['without the class embedding (asserted)', (b) => renameTensor(b, 'v.class_embd', 'Z'), /no tensor 'v.class_embd', which llama.cpp's InternVL graph asserts/],
    ['without the position embedding (asserted)', (b) => renameTensor(b, 'v.position_embd.weight', 'Z'), /no tensor 'v.position_embd.weight', which llama.cpp's InternVL graph asserts/],
    ['without the patch convolution', (b) => renameTensor(b, 'v.patch_embd.weight', 'Z'), /no tensor 'v.patch_embd.weight', which an InternVL projector needs/],
    ['without a key projection', (b) => renameTensor(b, 'v.blk.1.attn_k.weight', 'Z'), /no tensor 'v.blk.1.attn_k.weight'/],
    ["without the projector's layer norm", (b) => renameTensor(b, 'mm.model.mlp.0.weight', 'Z'), /no tensor 'mm.model.mlp.0.weight', which an InternVL projector needs/],
    ["without the projector's output bias", (b) => renameTensor(b, 'mm.model.mlp.3.bias', 'Z'), /no tensor 'mm.model.mlp.3.bias'/],
    // Wrong shapes (the same size, so the data layout still holds).
    ['with its position embedding the wrong way round', (b) => swapDims(b, 'v.position_embd.weight'), /'v.position_embd.weight' has shape \[17, 64\], but 56-pixel tiles in 14-pixel patches and the class token need \[64, 17\]/],
    ['with a feed-forward down projection the wrong way round', (b) => swapDims(b, 'v.blk.0.ffn_down.weight'), /'v.blk.0.ffn_down.weight' has shape \[64, 128\]; .* must be \[128, 64\]/],
    // Keys.
    ['without its projection width (clip.cpp requires it)', (b) => renameKey(b, 'clip.vision.projection_dim'), /no 'clip.vision.projection_dim'/],
    ['without its layer norm epsilon (clip.cpp requires it)', (b) => renameKey(b, 'clip.vision.attention.layer_norm_epsilon'), /no 'clip.vision.attention.layer_norm_epsilon'/],
    // Without the key clip.cpp shuffles nothing (scale 1): the projector's norm is 4 times too wide.
    ['without its scale factor', (b) => renameKey(b, 'clip.vision.projector.scale_factor'), /'mm.model.mlp.0.weight' has shape \[256\], but the pixel shuffle gives 64 values per token .*absent: 1/],
    ['with a scale factor of 3 (a tile is 4 patches a side)', (b) => setU32(b, 'clip.vision.projector.scale_factor', 3), /'clip.vision.projector.scale_factor' is 3, but a tile is 4 patches a side/],
    ['with a scale factor of 0', (b) => setU32(b, 'clip.vision.projector.scale_factor', 0), /'clip.vision.projector.scale_factor' is 0/],
    ['with its scale factor stored as an i32', (b) => patched(b.bytes, [fieldOf(b, 'value_type', 'clip.vision.projector.scale_factor').offset, u32(GgufType.INT32)]), /'clip.vision.projector.scale_factor' is stored as i32, but llama.cpp reads it as u32/],
    ['with its tile count stored as an f32', (b) => patched(b.bytes, [fieldOf(b, 'value_type', 'clip.vision.preproc_max_tiles').offset, u32(GgufType.FLOAT32)]), /'clip.vision.preproc_max_tiles' is stored as f32/],
    ['with at most 0 tiles (min 1: asserted)', (b) => setU32(b, 'clip.vision.preproc_max_tiles', 0), /tile range 'clip.vision.preproc_min_tiles' 1 to 'clip.vision.preproc_max_tiles' 0 is empty/],
    ['with at least 3 tiles of at most 6 (no grid of 3 x 3 or more fits)', (b) => setU32(b, 'clip.vision.preproc_min_tiles', 3), /tile range .* 3 to .* 6 gives llama.cpp no tile grid/],
    ['with at least 0 tiles (the loader lists no grid)', (b) => setU32(b, 'clip.vision.preproc_min_tiles', 0), /tile range .* 0 to .* 6 gives llama.cpp no tile grid/],
    ['with at most 5000 tiles', (b) => setU32(b, 'clip.vision.preproc_max_tiles', 5000), /tile range .* 1 to .* 5000 goes past 1024 tiles of 56 pixels/],
  ];
  for (const [what, edit, message] of edits) {
    it(`${what}: ERR_PROJECTOR_LOAD`, async () => {
      await rejectsWithCode(await write(edit(mmproj)), 'projector', 'ERR_PROJECTOR_LOAD', message);
    });
  }

  const additions: [what: string, keys: [string, GgufValue][], tensors: GgufTensor[], message: RegExp][] = [
    ['with a fused qkv projection besides q/k/v', [], [constant('v.blk.0.attn_qkv.weight', [64, 192], 0)], /tensor 'v.blk.0.attn_qkv.weight', a fused qkv projection/],
    ['with a mixture-of-experts feed-forward', [], [constant('v.blk.1.ffn_gate_exps.weight', [64, 128, 2], 0)], /tensor 'v.blk.1.ffn_gate_exps.weight', a mixture-of-experts feed-forward/],
    ['with a per-head query norm (InternViT-6B normalizes across heads)', [], [constant('v.blk.0.attn_q_norm.weight', [32], 1)], /'v.blk.0.attn_q_norm.weight' has shape \[32\]; .* must be \[64\]/],
    ["with Gemma 4's layer output scale", [], [constant('v.blk.1.out_scale.weight', [64], 1)], /tensor 'v.blk.1.out_scale.weight', a layer output scale/],
    ['with fewer key/value heads than heads', [['clip.vision.attention.head_count_kv', gguf.u32(1)]], [], /'clip.vision.attention.head_count_kv' is 1, but InternViT's key and value projections have all 2 heads/],
  ];
  for (const [what, keys, tensors, message] of additions) {
    it(`${what}: ERR_PROJECTOR_LOAD`, async () => {
      await rejectsWithCode(await write(await rewritten(mmproj, { set: keys, extra: tensors })), 'projector', 'ERR_PROJECTOR_LOAD', message);
    });
  }

  it('a position embedding in f16 is refused (added as it is, in f32 only: scripts/fuzz.mjs found it abort)', async () => {
    await rejectsWithCode(await write(await retyped(mmproj, 'v.position_embd.weight', GgmlType.F16)), 'projector', 'ERR_PROJECTOR_LOAD', /tensor 'v.position_embd.weight' is f16; the position embedding is added to the patches as it is/);
  });

  it('passes a tile range that gives no grid when grid pinpoints give the candidates', async () => {
    const pinpoints = gguf.array(GgufType.INT32, [112, 56, 56, 112]);
    const withPinpoints = await base(await write(await rewritten(mmproj, { set: [['clip.vision.image_grid_pinpoints', pinpoints]] })));
    const file = await write(setU32(withPinpoints, 'clip.vision.preproc_min_tiles', 3));
    assert.equal((await checkGguf(file, 'projector')).projectorOutputWidth, 256);
  });
});
