import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpotError } from '../../lib/common/errors';
import { checkGguf, type GgufRole } from '../../lib/gguf/check';
import { PROJECTOR_RULES } from '../../lib/gguf/llava';
import { gguf } from '../../lib/gguf/writer';
import { ensureTinyLlava, tinyVocab, TINY_LLAVA_FAST, withProjectorWidth } from '../../lib/models/tiny-model';
import { MODEL_CACHE, tinyLlavaFast } from '../support/models';
import { base, CRASHING, f32, fieldOf, FOREIGN_LAYOUTS, nameAt, patched, renameTensor, u32, u64, writeForeignMmproj, type Base, type BaseName } from './gguf-cases';

async function rejects(file: string, role: GgufRole, code: string, pattern?: RegExp): Promise<ChainOfSpotError> {
  try {
    await checkGguf(file, role);
  } catch (error) {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    assert.ok(error.message.includes(file), 'the message names the file');
    return error;
  }
  assert.fail(`${file} (${role}) passed the check; expected ${code}`);
}

describe('checkGguf', () => {
  let dir: string;
  let model: Base;
  let mmproj: Base;
  const bases = new Map<BaseName, Base>();
  let counter = 0;
  /** Writes `bytes` to a new file in the test folder. */
  const write = async (bytes: Buffer | string, name = `case-${counter++}.gguf`): Promise<string> => {
    const file = path.join(dir, name);
    await writeFile(file, bytes);
    return file;
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cos-gguf-check-'));
    const pair = await tinyLlavaFast();
    model = await base(pair.model);
    mmproj = await base(pair.mmproj);
    bases.set('model', model).set('mmproj', mmproj);
    for (const layout of FOREIGN_LAYOUTS) {
      const file = path.join(dir, `${layout}-mmproj.gguf`);
      await writeForeignMmproj(pair.mmproj, file, layout);
      bases.set(layout, await base(file));
    }
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  describe('well-formed files', () => {
    it('passes the tiny pair and summarizes its header', async () => {
      const text = await checkGguf(model.path, 'text-model');
      assert.equal(text.architecture, 'llama');
      assert.equal(text.role, 'text-model');
      assert.equal(text.version, 3);
      assert.equal(text.dataOffset, model.dataOffset);
      assert.equal(text.dataOffset + text.dataBytes, model.bytes.length);
      assert.ok(text.tensors.some((t) => t.name === 'token_embd.weight' && t.typeName === 'f16'));
      assert.deepEqual(text.metadata.get('llama.embedding_length'), 256);
      const tokens = text.metadata.get('tokenizer.ggml.tokens');
      assert.ok(typeof tokens === 'object' && tokens !== null && 'length' in tokens && tokens.length > 259);

      const projector = await checkGguf(mmproj.path, 'projector', { textEmbeddingSize: 256 });
      assert.equal(projector.architecture, 'clip');
      assert.equal(projector.projectorType, 'mlp');
      assert.equal(projector.projectorOutputWidth, 256);
      assert.equal(projector.metadata.get('clip.vision.image_size'), 112);
    });

    it('reads only the header: a 4 GB LLaVA-7B-sized file checks as fast as the few-MB tiny model', async function () {
      this.timeout(60_000);
      const file = path.join(dir, 'llava-7b-sized.gguf');
      const size = await writeSparseLlama7b(file);
      assert.ok(size > 3.5e9, `the file is ${size} bytes`);
      const median = async (target: string): Promise<number> => {
        await checkGguf(target, 'text-model'); // warm-up (JIT, page cache)
        const times: number[] = [];
        for (let i = 0; i < 9; i++) {
          const start = performance.now();
          await checkGguf(target, 'text-model');
          times.push(performance.now() - start);
        }
        return times.sort((x, y) => x - y)[4]!;
      };
      const big = await median(file);
      const tiny = await median(model.path);
      // Side by side, so a loaded machine slows both: reading the 4 GB would be a thousand times
      // slower than the tiny file's header; its longer header (291 tensors, a 32000-token vocab)
      // costs a few times more.
      assert.ok(big < 20 * tiny + 5, `4 GB file: median ${big.toFixed(1)} ms; tiny model: ${tiny.toFixed(1)} ms`);
      console.log(`      checkGguf on a ${(size / 2 ** 30).toFixed(1)} GiB file (32000-token vocab, 291 tensors): median ${big.toFixed(1)} ms (tiny model ${tiny.toFixed(1)} ms)`);
    });
  });

  describe('files that are not GGUF models', () => {
    it('missing, a directory, empty, text, an image, a zip, safetensors, old GGML, big-endian GGUF', async () => {
      await rejects(path.join(dir, 'missing.gguf'), 'text-model', 'ERR_MODEL_LOAD', /not found/);
      await mkdir(path.join(dir, 'folder.gguf'));
      await rejects(path.join(dir, 'folder.gguf'), 'text-model', 'ERR_MODEL_LOAD', /is a directory/);
      await rejects(path.join(dir, 'missing-mmproj.gguf'), 'projector', 'ERR_PROJECTOR_LOAD', /not found/);
      await rejects(await write(''), 'text-model', 'ERR_MODEL_LOAD', /empty/);
      await rejects(await write('GGU'), 'text-model', 'ERR_MODEL_LOAD', /only 3 bytes/);
      await rejects(await write('version https://git-lfs.github.com/spec/v1\noid sha256:abc\n'), 'text-model', 'ERR_MODEL_LOAD', /text .*Git LFS/);
      await rejects(await write(Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex')), 'projector', 'ERR_PROJECTOR_LOAD', /not a GGUF file/);
      await rejects(await write(Buffer.from('PK\u0003\u0004 pytorch_model/data.pkl', 'latin1')), 'text-model', 'ERR_MODEL_LOAD', /zip.*convert_hf_to_gguf/);
      const safetensors = Buffer.concat([u64(40n), Buffer.from('{"__metadata__":{"format":"pt"}}       ')]);
      await rejects(await write(safetensors), 'text-model', 'ERR_MODEL_LOAD', /safetensors/);
      await rejects(await write(Buffer.concat([Buffer.from('ggjt'), Buffer.alloc(64)])), 'text-model', 'ERR_MODEL_LOAD', /old GGML format/);
      const bigEndian = Buffer.from(model.bytes.subarray(0, 4096));
      bigEndian.write('FUGG', 0, 'latin1');
      await rejects(await write(bigEndian), 'text-model', 'ERR_MODEL_LOAD', /big-endian/);
    });

    it('GGUF versions 1 and 4, and a byte-swapped version', async () => {
      const at = fieldOf(model, 'version').offset;
      await rejects(await write(patched(model.bytes, [at, u32(1)])), 'text-model', 'ERR_MODEL_LOAD', /version 1/);
      await rejects(await write(patched(model.bytes, [at, u32(4)])), 'text-model', 'ERR_MODEL_LOAD', /version 4/);
      await rejects(await write(patched(model.bytes, [at, u32(0x03000000)])), 'text-model', 'ERR_MODEL_LOAD', /big-endian/);
    });

    it('a text model given as the projector, and a projector given as the text model', async () => {
      await rejects(mmproj.path, 'text-model', 'ERR_MODEL_LOAD', /this is a projector \(mmproj\) file.*pass it as mmproj/);
      await rejects(model.path, 'projector', 'ERR_PROJECTOR_LOAD', /this is a text model.*pass it as model/);
      // clip.cpp never reads the architecture: a damaged one in a projector is still a projector.
      const arch = fieldOf(mmproj, 'value', 'general.architecture');
      const damaged = await write(patched(mmproj.bytes, [arch.offset, Buffer.from('c?ip')]));
      await rejects(damaged, 'projector', 'ERR_PROJECTOR_LOAD', /'general.architecture' is "c\?ip" where a projector has "clip"/);
      await rejects(damaged, 'text-model', 'ERR_MODEL_LOAD', /this is a projector \(mmproj\) file/);
    });

    it('a projector made for another text model: ERR_PROJECTOR_MISMATCH when the width is given', async () => {
      const other = await ensureTinyLlava(MODEL_CACHE, withProjectorWidth(TINY_LLAVA_FAST, 128));
      assert.equal((await checkGguf(other.mmproj, 'projector')).projectorOutputWidth, 128);
      await assert.rejects(checkGguf(other.mmproj, 'projector', { textEmbeddingSize: 256 }), (error: ChainOfSpotError) => {
        assert.equal(error.code, 'ERR_PROJECTOR_MISMATCH');
        assert.match(error.message, /128-wide embeddings, but the text model takes 256/);
        return true;
      });
    });

    it('rejects bad arguments with TypeError / RangeError', async () => {
      await assert.rejects(checkGguf(42 as unknown as string, 'text-model'), TypeError);
      await assert.rejects(checkGguf(model.path, 'model' as GgufRole), TypeError);
      await assert.rejects(checkGguf(model.path, 'text-model', { maxHeaderBytes: 3 }), RangeError);
      await assert.rejects(checkGguf(model.path, 'projector', { textEmbeddingSize: -1 }), RangeError);
    });
  });

  describe('truncated files', () => {
    it('a GGUF cut at any offset in its header is rejected as damaged', async () => {
      // Every field boundary (and the bytes around it; of the vocabulary's strings, every 50th),
      // plus every 97th byte.
      const offsets = new Set<number>();
      model.fields.forEach((f, i) => {
        if (f.kind !== 'array_item' || i % 50 === 0) for (const d of [-1, 0, 1, 3]) offsets.add(f.offset + d);
      });
      for (let at = 0; at < model.dataOffset; at += 97) offsets.add(at);
      const cuts = [...offsets].filter((at) => at > 0 && at <= model.dataOffset).sort((a, b) => a - b);
      assert.ok(cuts.length > 500, `${cuts.length} cuts`);
      const file = path.join(dir, 'cut.gguf');
      for (const at of cuts) {
        await writeFile(file, model.bytes.subarray(0, at));
        await assert.rejects(checkGguf(file, 'text-model'), (error: ChainOfSpotError) => {
          assert.equal(error.code, 'ERR_MODEL_LOAD', `cut at ${at}: ${error.message}`);
          assert.match(error.message, /download|only \d+ bytes|not a GGUF/, `cut at ${at}: ${error.message}`);
          return true;
        });
      }
    });

    it('a GGUF cut in its tensor data says how much of it is there', async () => {
      for (const fraction of [0.01, 0.5, 0.999]) {
        const at = model.dataOffset + Math.floor((model.bytes.length - model.dataOffset) * fraction);
        await rejects(await write(model.bytes.subarray(0, at)), 'text-model', 'ERR_MODEL_LOAD', /the file ends at byte \d+ but the data of tensor '[^']+' \([^)]+\) runs to byte \d+ \(\d+% of the expected size is there\)/);
      }
      const projectorCut = mmproj.bytes.subarray(0, mmproj.bytes.length - 1);
      await rejects(await write(projectorCut), 'projector', 'ERR_PROJECTOR_LOAD', /runs to byte/);
    });
  });

  describe('absurd header fields', () => {
    const cases: [what: string, edit: (b: Base) => Buffer, message: RegExp][] = [
      ['a tensor count of 2^62', (b) => patched(b.bytes, [fieldOf(b, 'n_tensors').offset, u64(1n << 62n)]), /claims \d+ tensors/],
      ['a negative key count', (b) => patched(b.bytes, [fieldOf(b, 'n_kv').offset, u64(-1n)]), /claims .* -1 metadata keys/],
      ['a key count the file cannot hold', (b) => patched(b.bytes, [fieldOf(b, 'n_kv').offset, u64(BigInt(b.bytes.length))]), /more than a \d+-byte file can hold/],
      ['a key length of 2^40', (b) => patched(b.bytes, [fieldOf(b, 'key_length').offset, u64(1n << 40n)]), /claims 1099511627776 bytes, more than the \d+ left/],
      ['a key length over 64 KiB', (b) => patched(b.bytes, [fieldOf(b, 'key_length').offset, u64(100_000n)]), /more than the 65536 allowed/],
      ['an empty key', (b) => patched(b.bytes, [fieldOf(b, 'key_length').offset, u64(0n)]), /empty name|unknown type/],
      ['a string value longer than the file', (b) => patched(b.bytes, [fieldOf(b, 'string_length').offset, u64(BigInt(b.bytes.length))]), /more than the \d+ left in the file/],
      ['an array of 2^31 items', (b) => patched(b.bytes, [fieldOf(b, 'array_length', 'tokenizer.ggml.scores').offset, u64(1n << 31n)]), /claims 2147483648 items/],
      ['a value type of 13', (b) => patched(b.bytes, [fieldOf(b, 'value_type', 'llama.block_count').offset, u32(13)]), /unknown type 13/],
      ['an array of arrays', (b) => patched(b.bytes, [fieldOf(b, 'array_type', 'tokenizer.ggml.scores').offset, u32(9)]), /array of arrays/],
      ['an array of unknown items', (b) => patched(b.bytes, [fieldOf(b, 'array_type', 'tokenizer.ggml.scores').offset, u32(0xffffffff)]), /array of unknown type/],
      ['a duplicate key', (b) => {
        const bos = fieldOf(b, 'key_length');
        const eos = b.fields.find((f) => f.kind === 'key_length' && f !== bos && f.offset > bos.offset && b.bytes.readBigUInt64LE(f.offset) === b.bytes.readBigUInt64LE(bos.offset))!;
        const length = Number(b.bytes.readBigUInt64LE(bos.offset));
        return patched(b.bytes, [nameAt(eos), b.bytes.subarray(nameAt(bos), nameAt(bos) + length)]);
      }, /appears twice/],
      ['a tensor name of 64 bytes', (b) => patched(b.bytes, [fieldOf(b, 'tensor_name_length').offset, u64(64n)]), /64-byte name; ggml allows at most 63/],
      ['a duplicate tensor name', (b) => {
        const q = fieldOf(b, 'tensor_name_length', 'blk.0.attn_q.weight');
        const k = fieldOf(b, 'tensor_name_length', 'blk.0.attn_k.weight');
        return patched(b.bytes, [nameAt(k), b.bytes.subarray(nameAt(q), nameAt(q) + 'blk.0.attn_q.weight'.length)]);
      }, /tensor 'blk.0.attn_q.weight' appears twice/],
      ['5 dimensions', (b) => patched(b.bytes, [fieldOf(b, 'n_dims', 'output_norm.weight').offset, u32(5)]), /5 dimensions; ggml allows at most 4/],
      ['a dimension of 0', (b) => patched(b.bytes, [fieldOf(b, 'dim', 'output_norm.weight').offset, u64(0n)]), /dimension 0 of 0; each must be at least 1/],
      ['a negative dimension', (b) => patched(b.bytes, [fieldOf(b, 'dim', 'output_norm.weight').offset, u64(-5n)]), /dimension 0 of -5/],
      ['dimensions whose product overflows', (b) => {
        const dims = b.fields.filter((f) => f.kind === 'dim' && f.owner === 'token_embd.weight');
        return patched(b.bytes, [dims[0]!.offset, u64(1n << 40n)], [dims[1]!.offset, u64(1n << 40n)]);
      }, /more elements than ggml can count/],
      ['a removed tensor type (q4_2)', (b) => patched(b.bytes, [fieldOf(b, 'tensor_type', 'token_embd.weight').offset, u32(4)]), /ggml type 4 .* does not know .*removed/],
      ['an unknown tensor type', (b) => patched(b.bytes, [fieldOf(b, 'tensor_type', 'token_embd.weight').offset, u32(0x7fff)]), /ggml type 32767/],
      ['rows that are not whole blocks', (b) => patched(b.bytes, [fieldOf(b, 'dim', 'output_norm.weight').offset, u64(250n)], [fieldOf(b, 'tensor_type', 'output_norm.weight').offset, u32(8)]), /rows of 250 values, not a multiple of its block size 32/],
      ['a misaligned tensor offset', (b) => patched(b.bytes, [fieldOf(b, 'tensor_offset', 'output_norm.weight').offset, u64(b.bytes.readBigUInt64LE(fieldOf(b, 'tensor_offset', 'output_norm.weight').offset) + 1n)]), /needs \d+: .*aligned to 32 bytes/],
      ['overlapping tensors', (b) => patched(b.bytes, [fieldOf(b, 'tensor_offset', 'output_norm.weight').offset, u64(0n)]), /data offset 0 .*in order/],
      ['a tensor offset past the end of the file', (b) => {
        const last = b.fields.filter((f) => f.kind === 'tensor_offset').at(-1)!;
        return patched(b.bytes, [last.offset, u64(1n << 50n)]);
      }, /data offset 1125899906842624/],
      ['a shape whose data does not fit in the file', (b) => {
        // The last tensor is output.weight: more rows push its data past the end of the file.
        const dims = b.fields.filter((f) => f.kind === 'dim' && f.owner === 'output.weight');
        return patched(b.bytes, [dims[1]!.offset, u64(1n << 30n)]);
      }, /the data of tensor 'output.weight' \(256 x 1073741824 f16\) runs to byte \d+ \(0% of the expected size is there\)/],
      ['general.alignment of the wrong type', (b) => patched(b.bytes,
        [nameAt(fieldOf(b, 'key_length', 'llama.block_count')), Buffer.from('general.alignment')],
        [fieldOf(b, 'value_type', 'llama.block_count').offset, u32(5)]), /general.alignment' must be a u32, not i32/],
      ['general.alignment not a power of two', (b) => patched(b.bytes,
        [nameAt(fieldOf(b, 'key_length', 'llama.block_count')), Buffer.from('general.alignment')],
        [fieldOf(b, 'value', 'llama.block_count').offset, u32(48)]), /general.alignment' is 48, not a power of two/],
      ['no general.architecture', (b) => patched(b.bytes, [nameAt(fieldOf(b, 'key_length')), Buffer.from('general.arch1tecture')]), /no 'general.architecture'/],
    ];
    for (const [what, edit, message] of cases) {
      it(`${what}: ERR_MODEL_LOAD`, async () => {
        await rejects(await write(edit(model)), 'text-model', 'ERR_MODEL_LOAD', message);
      });
    }

    it('a header over maxHeaderBytes is rejected without reading it', async () => {
      await assert.rejects(checkGguf(model.path, 'text-model', { maxHeaderBytes: 4096 }), /header is larger than 4096 bytes .*raise maxHeaderBytes/);
      assert.equal((await checkGguf(model.path, 'text-model', { maxHeaderBytes: model.dataOffset })).architecture, 'llama');
    });
  });

  describe("other writers' layouts", () => {
    it('passes the mmproj as llama.cpp\'s legacy converter and LLaVA-1.6\'s surgery lay it out', async () => {
      for (const layout of FOREIGN_LAYOUTS) {
        const file = bases.get(layout)!.path;
        const summary = await checkGguf(file, 'projector', { textEmbeddingSize: 256 });
        assert.equal(summary.projectorType, 'mlp', layout);
        assert.equal(summary.projectorOutputWidth, 256, layout);
        assert.equal(summary.dataOffset + summary.dataBytes, summary.fileSize, layout);
        assert.equal(summary.alignment, layout === 'surgery' ? 64 : 32);
        assert.ok(!summary.metadata.has('chain_of_spot.fingerprint'), layout);
      }
      const surgery = await checkGguf(bases.get('surgery')!.path, 'projector');
      assert.deepEqual(surgery.tensors.slice(0, 2).map((t) => t.name), ['mm.0.bias', 'mm.0.weight'], 'each bias before its weight');
      assert.ok(surgery.tensors.some((t) => t.name === 'model.image_newline'));
      assert.deepEqual(surgery.metadata.get('clip.vision.image_grid_pinpoints'), { itemType: 5, length: 10 });
    });
  });

  describe("the projector's tensors, as clip.cpp's LLaVA graph uses them", () => {
    it('has rules for mlp and mlp_norm, and mm.2.weight is no optional layer of mlp', () => {
      assert.deepEqual(Object.keys(PROJECTOR_RULES), ['mlp', 'mlp_norm']);
      const mm2 = PROJECTOR_RULES.mlp.find((rule) => rule.name === 'mm.2.weight');
      assert.equal(mm2?.use, 'required');
      assert.deepEqual(PROJECTOR_RULES.mlp.find((rule) => rule.name === 'mm.2.bias')?.use, { with: 'mm.2.weight' });
    });

    const cases: [what: string, layout: BaseName, edit: (b: Base) => Buffer, message: RegExp][] = [
      ['a bias without its weight (v.pre_ln.weight renamed)', 'mmproj', (b) => renameTensor(b, 'v.pre_ln.weight', 'W'), /it has tensor 'v.pre_ln.bias' but no 'v.pre_ln.weight'.*renamed or lost/],
      ['a gate bias without the gate', 'surgery', (b) => renameTensor(b, 'v.blk.1.ffn_down.bias', 'gate', 'v.blk.1.ffn_'.length), /'v.blk.1.ffn_gate.bias' but no 'v.blk.1.ffn_gate.weight'/],
      ['a projector type this check has no rules for', 'legacy', (b) => patched(b.bytes, [fieldOf(b, 'value', 'clip.projector_type').offset, Buffer.from('ldp')]), /projector type 'ldp' is none chain-of-spot runs and checks \('mlp', 'mlp_norm', 'qwen2\.5vl_merger', 'qwen3vl_merger', 'internvl', 'gemma3'/],
      // No crash seen (the fixed-size images this package sends are never cut), but a side of 0 or past
      // 46340 overflows clip.cpp's int area arithmetic when a larger image is.
      ['a grid pinpoint of 0', 'surgery', (b) => patched(b.bytes, [fieldOf(b, 'array_item', 'clip.vision.image_grid_pinpoints').offset, u32(0)]), /image_grid_pinpoints' holds 0, not an image side/],
    ];
    for (const [what, layout, edit, message] of cases) {
      it(`${what} (${layout} layout): ERR_PROJECTOR_LOAD`, async () => {
        await rejects(await write(edit(bases.get(layout)!)), 'projector', 'ERR_PROJECTOR_LOAD', message);
      });
    }

    it('an audio encoder besides the vision one, which clip.cpp would load by rules this check does not hold: ERR_PROJECTOR_LOAD', async () => {
      const file = path.join(dir, 'with-audio.gguf');
      await writeForeignMmproj((await tinyLlavaFast()).mmproj, file, 'legacy', [['clip.has_audio_encoder', gguf.bool(true)]]);
      await rejects(file, 'projector', 'ERR_PROJECTOR_LOAD', /it has an audio encoder \('clip.has_audio_encoder' is true\)/);
    });
  });

  describe('what llama.cpp and ggml abort on (found by experiment; each case aborted or segfaulted the process before this check)', () => {
    // Each edit keeps the file structurally valid for gguf.cpp; test/system/gguf-crash.test.ts
    // loads the same files through llama.cpp in child processes.
    for (const c of CRASHING) {
      it(`${c.what}: ${c.role === 'projector' ? 'ERR_PROJECTOR_LOAD' : 'ERR_MODEL_LOAD'}`, async () => {
        await rejects(await write(c.edit(bases.get(c.base)!)), c.role, c.role === 'projector' ? 'ERR_PROJECTOR_LOAD' : 'ERR_MODEL_LOAD', c.message);
      });
    }
  });
});

/**
 * Writes the header of a LLaVA-1.5-7B-sized Q4_K text model (a 32000-token vocabulary, 32 layers,
 * 291 tensors) and extends the file, sparsely, to the full size of its data. Returns the size.
 */
async function writeSparseLlama7b(file: string): Promise<number> {
  const parts: Buffer[] = [];
  const str = (s: string): void => {
    const bytes = Buffer.from(s, 'utf8');
    parts.push(u64(BigInt(bytes.length)), bytes);
  };
  const vocab = tinyVocab(32000);
  const metadata: [string, () => void][] = [
    ['general.architecture', () => { parts.push(u32(8)); str('llama'); }],
    ['general.name', () => { parts.push(u32(8)); str('llava-1.5-7b-sized'); }],
    ['llama.block_count', () => parts.push(u32(4), u32(32))],
    ['llama.embedding_length', () => parts.push(u32(4), u32(4096))],
    ['llama.attention.layer_norm_rms_epsilon', () => parts.push(u32(6), f32(1e-5))],
    ['tokenizer.ggml.model', () => { parts.push(u32(8)); str('llama'); }],
    ['tokenizer.ggml.tokens', () => {
      parts.push(u32(9), u32(8), u64(BigInt(vocab.tokens.length)));
      for (const t of vocab.tokens) str(t);
    }],
    ['tokenizer.ggml.scores', () => {
      parts.push(u32(9), u32(6), u64(BigInt(vocab.scores.length)));
      parts.push(Buffer.from(new Float32Array(vocab.scores).buffer));
    }],
    ['tokenizer.ggml.token_type', () => {
      parts.push(u32(9), u32(5), u64(BigInt(vocab.types.length)));
      parts.push(Buffer.from(new Int32Array(vocab.types).buffer));
    }],
  ];
  const Q4_K = 12;
  const Q6_K = 14;
  const tensors: [string, number[], number, number][] = []; // name, shape, type, bytes
  const add = (name: string, shape: number[], type: number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const bytes = type === 0 ? n * 4 : type === Q4_K ? (n / 256) * 144 : (n / 256) * 210;
    tensors.push([name, shape, type, bytes]);
  };
  add('token_embd.weight', [4096, 32000], Q4_K);
  for (let i = 0; i < 32; i++) {
    add(`blk.${i}.attn_norm.weight`, [4096], 0);
    for (const w of ['attn_q', 'attn_k', 'attn_v', 'attn_output']) add(`blk.${i}.${w}.weight`, [4096, 4096], Q4_K);
    add(`blk.${i}.ffn_norm.weight`, [4096], 0);
    add(`blk.${i}.ffn_gate.weight`, [4096, 11008], Q4_K);
    add(`blk.${i}.ffn_up.weight`, [4096, 11008], Q4_K);
    add(`blk.${i}.ffn_down.weight`, [11008, 4096], Q6_K);
  }
  add('output_norm.weight', [4096], 0);
  add('output.weight', [4096, 32000], Q6_K);

  parts.push(Buffer.from('GGUF', 'latin1'), u32(3), u64(BigInt(tensors.length)), u64(BigInt(metadata.length)));
  for (const [key, value] of metadata) {
    str(key);
    value();
  }
  let offset = 0;
  for (const [name, shape, type, bytes] of tensors) {
    str(name);
    parts.push(u32(shape.length), ...shape.map((d) => u64(BigInt(d))), u32(type), u64(BigInt(offset)));
    offset += Math.ceil(bytes / 32) * 32;
  }
  const header = Buffer.concat(parts);
  const dataOffset = Math.ceil(header.length / 32) * 32;
  const size = dataOffset + offset;
  const fh = await open(file, 'w');
  try {
    await fh.write(header, 0, header.length, 0);
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  return size;
}
