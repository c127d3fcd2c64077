/**
 * The header checks of Gemma 3's files (lib/gguf/gemma3.ts): the tiny pair passes, and each edit
 * that breaks what llama.cpp's Gemma 3 text graph or clip.cpp's `gemma3` projector needs is
 * refused with a message naming what is wrong, while edits llama.cpp loads pass.
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { checkGguf } from '../../lib/gguf/check';
import { GgmlType, type GgufValue } from '../../lib/gguf/format';
import { gguf } from '../../lib/gguf/writer';
import { ensureTinyGemma3 } from '../../lib/models/tiny-gemma3';
import { MODEL_CACHE } from '../support/models';
import { base, caseFolder, constant, fieldOf, patched, rejectsWithCode, renameKey, renameTensor, retyped, rewritten, setU32, swapDims, u32, type Base } from './gguf-cases';

/** `b` rewritten with the keys of `set` (replaced where present, else added) and `extra` tensors (0.01 each). */
function rebuilt(b: Base, set: readonly [string, GgufValue][], extra: readonly [name: string, shape: number[]][] = []): Promise<Buffer> {
  return rewritten(b, { set, extra: extra.map(([name, shape]) => constant(name, shape, 0.01)) });
}

describe('checkGguf on Gemma 3 files', () => {
  const { write } = caseFolder('cos-gguf-gemma3-');
  let mmproj: Base;
  let text: Base;

  before(async () => {
    const files = await ensureTinyGemma3(MODEL_CACHE);
    mmproj = await base(files.mmproj);
    text = await base(files.model);
  });

  describe('the projector', () => {
    it('passes the tiny projector, giving 256 values (mm.input_projection.weight is [256, 64]) per token', async () => {
      const facts = await checkGguf(mmproj.path, 'projector');
      assert.equal(facts.projectorType, 'gemma3');
      assert.equal(facts.projectorOutputWidth, 256);
    });

    it('compares its output width with the text model', async () => {
      await checkGguf(mmproj.path, 'projector', { textEmbeddingSize: 256 });
      await assert.rejects(checkGguf(mmproj.path, 'projector', { textEmbeddingSize: 512 }), (error: unknown) => (error as ChainOfSpotError).code === 'ERR_PROJECTOR_MISMATCH');
    });

    it('an input projection in bf16 passes (ggml transposes it); a quantized one is refused (scripts/fuzz.mjs found it abort)', async () => {
      // f16 and bf16 are both 2 bytes: the type field alone changes (verified to run in llama.cpp).
      const bf16 = patched(mmproj.bytes, [fieldOf(mmproj, 'tensor_type', 'mm.input_projection.weight').offset, u32(GgmlType.BF16)]);
      assert.equal((await checkGguf(await write(bf16), 'projector')).projectorType, 'gemma3');
      await rejectsWithCode(await write(await retyped(mmproj, 'mm.input_projection.weight', GgmlType.Q8_0)), 'projector', 'ERR_PROJECTOR_LOAD', /tensor 'mm.input_projection.weight' is q8_0; Gemma 3 transposes its input projection/);
    });

    it('a position embedding in f16 is refused (added as it is, in f32 only: scripts/fuzz.mjs found it abort)', async () => {
      await rejectsWithCode(await write(await retyped(mmproj, 'v.position_embd.weight', GgmlType.F16)), 'projector', 'ERR_PROJECTOR_LOAD', /tensor 'v.position_embd.weight' is f16; the position embedding is added to the patches as it is/);
    });

    it('passes what clip.cpp runs: a pooling kernel of 2 (8 x 8 tokens), no position embedding', async () => {
      const kernel2 = await write(await rebuilt(mmproj, [['clip.vision.projector.scale_factor', gguf.u32(2)]]));
      assert.equal((await checkGguf(kernel2, 'projector')).projectorOutputWidth, 256);
      const noPosition = await write(renameTensor(mmproj, 'v.position_embd.weight', 'Z'));
      assert.equal((await checkGguf(noPosition, 'projector')).projectorType, 'gemma3');
    });

    const cases: [what: string, edit: (b: Base) => Buffer | Promise<Buffer>, message: RegExp][] = [
      // Missing tensors.
      ['without the input projection', (b) => renameTensor(b, 'mm.input_projection.weight', 'Z'), /no tensor 'mm.input_projection.weight', which a Gemma 3 projector needs/],
      ['without the soft embedding norm', (b) => renameTensor(b, 'mm.soft_emb_norm.weight', 'Z'), /no tensor 'mm.soft_emb_norm.weight', which a Gemma 3 projector needs/],
      ['without a query projection (segfaults)', (b) => renameTensor(b, 'v.blk.1.attn_q.weight', 'Z'), /no tensor 'v.blk.1.attn_q.weight'/],
      ['without the patch convolution', (b) => renameTensor(b, 'v.patch_embd.weight', 'Z'), /no tensor 'v.patch_embd.weight'/],
      // Wrong shapes (the same size, so the data layout still holds).
      ['with the input projection the wrong way round', (b) => swapDims(b, 'mm.input_projection.weight'), /tensor 'mm.input_projection.weight' has shape \[64, 256\]; .* must be \[64, 64\]/],
      ['with the position embedding the wrong way round', (b) => swapDims(b, 'v.position_embd.weight'), /tensor 'v.position_embd.weight' has shape \[256, 64\]; .* must be \[64, 256\]/],
      ['with a feed-forward up projection the wrong way round', (b) => swapDims(b, 'v.blk.0.ffn_up.weight'), /tensor 'v.blk.0.ffn_up.weight' has shape \[128, 64\]; .* must be \[64, 64\]/],
      ['with a fused qkv beside q, k and v (clip.cpp takes it instead, here too narrow: it aborts)', (b) => rebuilt(b, [], [['v.blk.0.attn_qkv.weight', [64, 64]]]), /tensor 'v.blk.0.attn_qkv.weight', which a Gemma 3 SigLIP layer has not/],
      // Keys.
      ['without its projection width (clip.cpp requires it)', (b) => renameKey(b, 'clip.vision.projection_dim'), /no 'clip.vision.projection_dim'/],
      ['with its projection width stored as i32', (b) => patched(b.bytes, [fieldOf(b, 'value_type', 'clip.vision.projection_dim').offset, u32(5)]), /'clip.vision.projection_dim' is stored as i32, but llama.cpp reads it as u32/],
      [
        'with a pooling kernel of 3 on 16 patches a side (the token count disagrees: it aborts)',
        (b) => rebuilt(b, [['clip.vision.projector.scale_factor', gguf.u32(3)]]),
        /the pooling kernel, 3 \('clip.vision.projector.scale_factor'\), does not divide the 16-patch side/,
      ],
      ['with a pooling kernel of 0', (b) => rebuilt(b, [['clip.vision.projector.scale_factor', gguf.u32(0)]]), /the pooling kernel, 0 \('clip.vision.projector.scale_factor'\)/],
      [
        'with 200-pixel images: 14 patches a side, which the default kernel of 4 does not divide',
        (b) => setU32(b, 'clip.vision.image_size', 200),
        /the pooling kernel, clip.cpp's default of 4 \(the file has no 'clip.vision.projector.scale_factor'\), does not divide the 14-patch side of 200-pixel images/,
      ],
      [
        'with fewer key/value heads than heads',
        (b) => rebuilt(b, [['clip.vision.attention.head_count_kv', gguf.u32(1)]]),
        /'clip.vision.attention.head_count_kv' is 1 but 'clip.vision.attention.head_count' 2/,
      ],
    ];
    for (const [what, edit, message] of cases) {
      it(`${what}: ERR_PROJECTOR_LOAD`, async () => {
        await rejectsWithCode(await write(await edit(mmproj)), 'projector', 'ERR_PROJECTOR_LOAD', message);
      });
    }
  });

  describe('the text model', () => {
    it('passes the tiny text model', async () => {
      assert.equal((await checkGguf(text.path, 'text-model')).architecture, 'gemma3');
    });

    it('passes what llama.cpp loads: all layers sliding-window with wider heads than key_length says; a sliding-window rotary width without sliding windows', async () => {
      const allSwa = await rebuilt(text, [
        ['gemma3.attention.sliding_window_pattern', gguf.u32(0)],
        ['gemma3.attention.key_length', gguf.u32(64)],
        ['gemma3.attention.key_length_swa', gguf.u32(128)],
      ]);
      assert.equal((await checkGguf(await write(allSwa), 'text-model')).architecture, 'gemma3');
      const noWindow = await rebuilt(text, [
        ['gemma3.attention.sliding_window', gguf.u32(0)],
        ['gemma3.rope.dimension_count_swa', gguf.u32(130)],
      ]);
      assert.equal((await checkGguf(await write(noWindow), 'text-model')).architecture, 'gemma3');
    });

    const cases: [what: string, edit: (b: Base) => Buffer | Promise<Buffer>, message: RegExp][] = [
      [
        'a layer pattern of 1 (no sliding-window layer: llama.cpp asserts one)',
        (b) => setU32(b, 'gemma3.attention.sliding_window_pattern', 1),
        /'gemma3.attention.sliding_window_pattern' is 1 with a sliding window of 128/,
      ],
      [
        'a rotary width above the head width',
        (b) => rebuilt(b, [['gemma3.rope.dimension_count', gguf.u32(130)]]),
        /the rotary width \('gemma3.rope.dimension_count'\) is 130; it must be even and at most the 128-wide heads of layer 0/,
      ],
      ['an odd rotary width', (b) => rebuilt(b, [['gemma3.rope.dimension_count', gguf.u32(63)]]), /the rotary width \('gemma3.rope.dimension_count'\) is 63; it must be even/],
      [
        'a sliding-window rotary width above the head width (layer 0 is a sliding-window layer)',
        (b) => rebuilt(b, [['gemma3.rope.dimension_count_swa', gguf.u32(130)]]),
        /the rotary width \('gemma3.rope.dimension_count_swa'\) is 130/,
      ],
      [
        'global layers with other key widths than the sliding-window ones',
        (b) => rebuilt(b, [
          ['gemma3.attention.key_length', gguf.u32(64)],
          ['gemma3.attention.key_length_swa', gguf.u32(128)],
        ]),
        /its sliding-window layers have 128-wide keys and 128-wide values, its global layers 64 and 128/,
      ],
      [
        'global layers with other value widths than the sliding-window ones',
        (b) => rebuilt(b, [
          ['gemma3.attention.value_length', gguf.u32(64)],
          ['gemma3.attention.value_length_swa', gguf.u32(128)],
        ]),
        /its global layers 128 and 64/,
      ],
      [
        'a default rotary width (the key width) above the sliding-window heads of layer 0',
        (b) => rebuilt(b, [
          ['gemma3.attention.sliding_window_pattern', gguf.u32(0)],
          ['gemma3.attention.key_length', gguf.u32(256)],
          ['gemma3.attention.key_length_swa', gguf.u32(128)],
        ]),
        /the rotary width \('gemma3.attention.key_length'\) is 256; it must be even and at most the 128-wide heads of layer 0/,
      ],
    ];
    for (const [what, edit, message] of cases) {
      it(`${what}: ERR_MODEL_LOAD`, async () => {
        await rejectsWithCode(await write(await edit(text)), 'text-model', 'ERR_MODEL_LOAD', message);
      });
    }
  });
});
