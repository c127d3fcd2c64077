import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, readdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GgmlType, GgufType, type GgufValue } from '../../lib/gguf/format';
import { readGgufHeader, type GgufHeader } from '../../lib/gguf/reader';
import { tensorByteSize } from '../../lib/gguf/writer';
import { Model } from '../../lib/llama/model';
import {
  BOS_ID,
  BYTE_TOKEN_BASE,
  CLIP_IMAGE_MEAN,
  CLIP_IMAGE_STD,
  EOS_ID,
  FINGERPRINT_KEY,
  FIRST_NORMAL_ID,
  SPM_SPACE,
  TINY_LLAVA,
  TINY_LLAVA_FAST,
  TokenType,
  UNK_ID,
  ensureTinyLlava,
  imageTokenCount,
  tinyVocab,
  withProjectorWidth,
  withTextWidth,
  writeTinyLlava,
} from '../../lib/models/tiny-model';
import { tinyLlavaFast } from '../support/models';

/** The pieces llama.cpp's own SPM tokenizer makes of `text` with the model at `path`. */
async function llamaPieces(path: string, text: string): Promise<string[]> {
  const model = await Model.load(path);
  try {
    const vocab = (await readGgufHeader(path)).kv.get('tokenizer.ggml.tokens')!.value as string[];
    return Array.from(model.tokenize(text), (id) => vocab[id]!);
  } finally {
    await model.dispose();
  }
}

function value(header: GgufHeader, key: string): GgufValue['value'] | undefined {
  return header.kv.get(key)?.value;
}

function shapeOf(header: GgufHeader, name: string): readonly number[] | undefined {
  return header.tensors.find((t) => t.name === name)?.shape;
}

async function tensorBytes(path: string, header: GgufHeader, name: string): Promise<Buffer> {
  const info = header.tensors.find((t) => t.name === name);
  assert.ok(info, `tensor ${name} missing`);
  const buf = Buffer.alloc(tensorByteSize(info.type as GgmlType, info.shape));
  const fh = await open(path, 'r');
  await fh.read(buf, 0, buf.length, header.dataOffset + info.offset);
  await fh.close();
  return buf;
}

describe('tiny-model', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cos-tiny-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('vocabulary', () => {
    const vocab = tinyVocab();

    it('starts with <unk>, <s>, </s> and the 256 byte tokens, as LLaMA does', () => {
      assert.deepEqual(vocab.tokens.slice(0, 3), ['<unk>', '<s>', '</s>']);
      assert.deepEqual(vocab.types.slice(0, 3), [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]);
      assert.deepEqual([UNK_ID, BOS_ID, EOS_ID], [0, 1, 2]);
      assert.equal(vocab.tokens[BYTE_TOKEN_BASE], '<0x00>');
      assert.equal(vocab.tokens[BYTE_TOKEN_BASE + 0x0a], '<0x0A>');
      assert.equal(vocab.tokens[BYTE_TOKEN_BASE + 255], '<0xFF>');
      assert.ok(vocab.types.slice(BYTE_TOKEN_BASE, FIRST_NORMAL_ID).every((t) => t === TokenType.BYTE));
      assert.ok(vocab.types.slice(FIRST_NORMAL_ID).every((t) => t === TokenType.NORMAL));
    });

    it('has 1000 to 2000 unique tokens with scores that fall with the id', () => {
      assert.ok(vocab.tokens.length >= 1000 && vocab.tokens.length <= 2000, `${vocab.tokens.length} tokens`);
      assert.equal(new Set(vocab.tokens).size, vocab.tokens.length);
      assert.equal(vocab.scores.length, vocab.tokens.length);
      for (let i = FIRST_NORMAL_ID + 1; i < vocab.scores.length; i++) assert.ok(vocab.scores[i]! < vocab.scores[i - 1]!);
    });

    it('has every printable ASCII character alone, and after ▁ but for digits', () => {
      const pieces = new Set(vocab.tokens);
      for (let c = 0x21; c <= 0x7e; c++) {
        const ch = String.fromCharCode(c);
        assert.ok(pieces.has(ch), ch);
        assert.equal(pieces.has(SPM_SPACE + ch), !/[0-9]/.test(ch), SPM_SPACE + ch);
      }
      assert.ok(pieces.has(SPM_SPACE));
    });

    it('has the words of the LLaVA and Chain-of-Spot prompts and the box pieces', () => {
      const pieces = new Set(vocab.tokens);
      const words = 'A chat between a curious user and an artificial intelligence assistant The gives helpful detailed polite '
        + 'answers to the questions USER ASSISTANT To answer question what where is region of interest in image Answer '
        + 'color cat sign What Where';
      for (const w of words.split(' ')) assert.ok(pieces.has(SPM_SPACE + w), w);
      for (const p of ['USER', 'ASSISTANT', '[', ']', ',', `${SPM_SPACE}[`, '.']) assert.ok(pieces.has(p), p);
      // Digits stand alone, as in LLaMA's vocabulary: no piece joins a digit to anything.
      for (const piece of vocab.tokens.slice(FIRST_NORMAL_ID)) assert.ok(piece.length === 1 || !/[0-9]/.test(piece), piece);
    });

    it('holds every prefix of every piece, so the SPM merges can reach each piece', () => {
      const pieces = new Set(vocab.tokens);
      for (const piece of vocab.tokens.slice(FIRST_NORMAL_ID)) {
        const chars = [...piece];
        for (let i = 1; i < chars.length; i++) assert.ok(pieces.has(chars.slice(0, i).join('')), `prefix of ${piece}`);
      }
    });

    it("llama.cpp tokenizes a LLaVA turn into whole words, and a box into digits and punctuation", async () => {
      const text = 'A chat between a curious user and an artificial intelligence assistant. USER: What is the region of interest? '
        + 'ASSISTANT: [0.0, 0.072, 0.586, 1.0]';
      const s = SPM_SPACE;
      assert.deepEqual(await llamaPieces((await tinyLlavaFast()).model, text), [
        `${s}A`, `${s}chat`, `${s}between`, `${s}a`, `${s}curious`, `${s}user`, `${s}and`, `${s}an`, `${s}artificial`,
        `${s}intelligence`, `${s}assistant`, '.', `${s}USER`, ':', `${s}What`, `${s}is`, `${s}the`, `${s}region`, `${s}of`,
        `${s}interest`, '?', `${s}ASSISTANT`, ':', `${s}[`, '0', '.', '0', ',', s, '0', '.', '0', '7', '2', ',', s, '0', '.',
        '5', '8', '6', ',', s, '1', '.', '0', ']',
      ]);
    });

    it('llama.cpp falls back to byte tokens for text outside the vocabulary', async () => {
      assert.deepEqual(await llamaPieces((await tinyLlavaFast()).model, 'é\n'), [`${SPM_SPACE}`, '<0xC3>', '<0xA9>', '<0x0A>']);
    });

    it('pads to a requested size with filler pieces that prompts never tokenize into', async function () {
      this.timeout(60_000);
      const padded = tinyVocab(32000);
      assert.equal(padded.tokens.length, 32000);
      assert.equal(new Set(padded.tokens).size, 32000);
      assert.deepEqual(padded.tokens.slice(0, vocab.tokens.length), vocab.tokens);
      const text = 'USER: What is the region of interest? ASSISTANT: [0.0, 0.072, 0.586, 1.0] émoji 🙂';
      const paddedPair = await writeTinyLlava(join(dir, 'padded'), { ...TINY_LLAVA_FAST, name: 'padded', vocabSize: 32000 });
      assert.deepEqual(await llamaPieces(paddedPair.model, text), await llamaPieces((await tinyLlavaFast()).model, text));
      assert.throws(() => tinyVocab(vocab.tokens.length - 1), RangeError);
    });
  });

  describe('generated pair', () => {
    let model: GgufHeader;
    let mmproj: GgufHeader;
    let files: { model: string; mmproj: string };

    before(async function () {
      this.timeout(30000);
      files = await writeTinyLlava(join(dir, 'full'), TINY_LLAVA);
      [model, mmproj] = await Promise.all([readGgufHeader(files.model), readGgufHeader(files.mmproj)]);
    });

    it('writes <name>.gguf and <name>-mmproj.gguf', () => {
      assert.equal(files.model, join(dir, 'full', 'tiny-llava-336.gguf'));
      assert.equal(files.mmproj, join(dir, 'full', 'tiny-llava-336-mmproj.gguf'));
    });

    it('is a llama text model with the LLaVA-1.5 tokenizer settings', () => {
      const t = TINY_LLAVA.text;
      assert.equal(value(model, 'general.architecture'), 'llama');
      assert.equal(value(model, 'llama.embedding_length'), t.nEmbd);
      assert.equal(value(model, 'llama.block_count'), t.nLayer);
      assert.equal(value(model, 'llama.context_length'), 4096);
      assert.equal(value(model, 'llama.rope.dimension_count'), t.nEmbd / t.nHead);
      assert.equal(value(model, 'llama.attention.layer_norm_rms_epsilon'), Math.fround(1e-5));
      assert.equal(value(model, 'tokenizer.ggml.model'), 'llama');
      assert.equal(value(model, 'tokenizer.ggml.bos_token_id'), BOS_ID);
      assert.equal(value(model, 'tokenizer.ggml.eos_token_id'), EOS_ID);
      assert.equal(value(model, 'tokenizer.ggml.unknown_token_id'), UNK_ID);
      assert.equal(value(model, 'tokenizer.ggml.add_bos_token'), true);
      assert.equal(value(model, 'tokenizer.ggml.add_eos_token'), false);
      assert.equal(value(model, 'tokenizer.ggml.add_space_prefix'), true);
      assert.equal(model.kv.has('tokenizer.chat_template'), false);
      assert.deepEqual(value(model, 'tokenizer.ggml.tokens'), tinyVocab().tokens);
      assert.equal(model.kv.get('tokenizer.ggml.token_type')?.type, GgufType.ARRAY);
    });

    it('has every tensor llama.cpp requires, with LLaMA shapes', () => {
      const t = TINY_LLAVA.text;
      const nVocab = tinyVocab().tokens.length;
      assert.deepEqual(shapeOf(model, 'token_embd.weight'), [t.nEmbd, nVocab]);
      assert.deepEqual(shapeOf(model, 'output.weight'), [t.nEmbd, nVocab]);
      assert.deepEqual(shapeOf(model, 'output_norm.weight'), [t.nEmbd]);
      for (let i = 0; i < t.nLayer; i++) {
        assert.deepEqual(shapeOf(model, `blk.${i}.attn_k.weight`), [t.nEmbd, (t.nEmbd / t.nHead) * t.nHeadKv]);
        assert.deepEqual(shapeOf(model, `blk.${i}.ffn_down.weight`), [t.nFf, t.nEmbd]);
        for (const n of ['attn_norm', 'attn_q', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up']) {
          assert.ok(shapeOf(model, `blk.${i}.${n}.weight`), n);
        }
      }
      assert.equal(model.tensors.length, 3 + 9 * t.nLayer);
    });

    it('is a LLaVA-1.5 CLIP projector: 336 px, 14 px patches, 576 image tokens, MLP output = text width', () => {
      assert.equal(value(mmproj, 'general.architecture'), 'clip');
      assert.equal(value(mmproj, 'clip.projector_type'), 'mlp');
      assert.equal(value(mmproj, 'clip.has_vision_encoder'), true);
      assert.equal(value(mmproj, 'clip.has_llava_projector'), true);
      assert.equal(value(mmproj, 'clip.vision.image_size'), 336);
      assert.equal(value(mmproj, 'clip.vision.patch_size'), 14);
      assert.equal(imageTokenCount(TINY_LLAVA), 576);
      assert.deepEqual(shapeOf(mmproj, 'v.position_embd.weight'), [TINY_LLAVA.vision.nEmbd, 577]);
      assert.deepEqual(shapeOf(mmproj, 'v.patch_embd.weight'), [14, 14, 3, TINY_LLAVA.vision.nEmbd]);
      assert.deepEqual(shapeOf(mmproj, 'mm.0.weight'), [TINY_LLAVA.vision.nEmbd, TINY_LLAVA.text.nEmbd]);
      assert.equal(shapeOf(mmproj, 'mm.2.weight')?.[1], value(model, 'llama.embedding_length'));
      assert.deepEqual(value(mmproj, 'clip.vision.image_mean'), CLIP_IMAGE_MEAN.map(Math.fround));
      assert.deepEqual(value(mmproj, 'clip.vision.image_std'), CLIP_IMAGE_STD.map(Math.fround));
      for (const name of ['v.class_embd', 'v.pre_ln.weight', 'v.pre_ln.bias', 'mm.0.bias', 'mm.2.bias']) {
        assert.ok(shapeOf(mmproj, name), name);
      }
      assert.equal(value(mmproj, 'clip.vision.block_count'), TINY_LLAVA.vision.nLayer);
      assert.ok(shapeOf(mmproj, `v.blk.${TINY_LLAVA.vision.nLayer - 1}.ln2.bias`));
    });

    it('stores 2-D weights as F16 and 1-D tensors as F32, like a converted f16 model', () => {
      for (const t of [...model.tensors, ...mmproj.tensors]) {
        const expected = t.shape.length === 1 ? GgmlType.F32 : GgmlType.F16;
        assert.equal(t.type, expected, t.name);
      }
    });

    it('zeroes the output rows of control and byte tokens, so generation never stops on </s>', async () => {
      const out = await tensorBytes(files.model, model, 'output.weight');
      const rowBytes = TINY_LLAVA.text.nEmbd * 2;
      assert.ok(out.subarray(0, FIRST_NORMAL_ID * rowBytes).every((b) => b === 0));
      const rest = new Uint16Array(out.buffer.slice(out.byteOffset + FIRST_NORMAL_ID * rowBytes, out.byteOffset + out.length));
      assert.ok(rest.filter((h) => h !== 0).length > rest.length * 0.99);
      assert.ok(rest.every((h) => (h & 0x7c00) !== 0x7c00), 'all finite');
    });

    it('has the 112 px variant make 64 image tokens', async () => {
      const fast = await writeTinyLlava(join(dir, 'fast'), TINY_LLAVA_FAST);
      const header = await readGgufHeader(fast.mmproj);
      assert.equal(imageTokenCount(TINY_LLAVA_FAST), 64);
      assert.equal(value(header, 'clip.vision.image_size'), 112);
      assert.deepEqual(shapeOf(header, 'v.position_embd.weight'), [TINY_LLAVA_FAST.vision.nEmbd, 65]);
    });
  });

  describe('determinism and caching', () => {
    it('writes identical bytes for the same seed and different bytes for another', async () => {
      const a = await writeTinyLlava(join(dir, 'seed-a'), TINY_LLAVA_FAST, 7);
      const b = await writeTinyLlava(join(dir, 'seed-b'), TINY_LLAVA_FAST, 7);
      const c = await writeTinyLlava(join(dir, 'seed-c'), TINY_LLAVA_FAST, 8);
      assert.deepEqual(await readFile(a.model), await readFile(b.model));
      assert.deepEqual(await readFile(a.mmproj), await readFile(b.mmproj));
      assert.notDeepEqual(await readFile(a.model), await readFile(c.model));
      assert.notDeepEqual(await readFile(a.mmproj), await readFile(c.mmproj));
    });

    it('writes only when the files are missing, stale or damaged', async () => {
      const where = join(dir, 'cache');
      const first = await ensureTinyLlava(where, TINY_LLAVA_FAST, 3);
      const stamp = async (): Promise<number[]> => [(await stat(first.model)).mtimeMs, (await stat(first.mmproj)).mtimeMs];
      const before = await stamp();

      await ensureTinyLlava(where, TINY_LLAVA_FAST, 3);
      assert.deepEqual(await stamp(), before, 'kept when up to date');

      await ensureTinyLlava(where, TINY_LLAVA_FAST, 4);
      const reseeded = await readGgufHeader(first.model);
      assert.match(String(value(reseeded, FINGERPRINT_KEY)), /"seed":4/);

      await truncate(first.mmproj, 100);
      await ensureTinyLlava(where, TINY_LLAVA_FAST, 4);
      assert.ok((await stat(first.mmproj)).size > 100_000, 'rewritten after damage');

      assert.deepEqual((await readdir(where)).sort(), ['tiny-llava-112-mmproj.gguf', 'tiny-llava-112.gguf'], 'no temporary files left');
    });

    it('writes the chat template only when the spec has one', async () => {
      const files = await writeTinyLlava(join(dir, 'template'), { ...TINY_LLAVA_FAST, chatTemplate: '{{ messages }}' });
      assert.equal(value(await readGgufHeader(files.model), 'tokenizer.chat_template'), '{{ messages }}');
    });
  });

  describe('a Q4_K_M text model', () => {
    it('mixes Q6_K and Q4_K as llama.cpp does, and llama.cpp loads it and generates', async () => {
      const files = await writeTinyLlava(join(dir, 'q4km'), { ...TINY_LLAVA_FAST, name: 'tiny-q4km', textType: 'q4_k_m' });
      const header = await readGgufHeader(files.model);
      const typeOf = (name: string): GgmlType | undefined => header.tensors.find((t) => t.name === name)?.type;
      assert.equal(value(header, 'general.file_type'), 15);
      assert.deepEqual(
        [typeOf('blk.0.attn_q.weight'), typeOf('blk.0.attn_v.weight'), typeOf('blk.0.ffn_down.weight'), typeOf('output.weight'), typeOf('blk.0.attn_norm.weight')],
        [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q6_K, GgmlType.Q6_K, GgmlType.F32],
      );
      const model = await Model.load(files.model);
      try {
        assert.match(model.info.description, /Q4_K - Medium/);
        const session = await model.createSession({ threads: 1 });
        await session.evaluate('What is this?', { addBos: true });
        const logits = await session.logits();
        assert.ok(logits!.every(Number.isFinite), 'random blocks give finite logits');
        assert.equal((await session.generate({ maxTokens: 4 })).tokens.length, 4);
      } finally {
        await model.dispose();
      }
    });
  });

  describe('mismatched pairs', () => {
    it('can make a projector whose output width differs from the text width', async () => {
      const spec = withProjectorWidth(TINY_LLAVA_FAST, 128);
      const files = await writeTinyLlava(join(dir, 'mismatch'), spec);
      const [model, mmproj] = await Promise.all([readGgufHeader(files.model), readGgufHeader(files.mmproj)]);
      assert.equal(value(model, 'llama.embedding_length'), 256);
      assert.deepEqual(shapeOf(mmproj, 'mm.2.weight'), [128, 128]);
      assert.notEqual(spec.name, TINY_LLAVA_FAST.name);
    });

    it('can make a narrower text model whose projector follows it', async () => {
      const spec = withTextWidth(TINY_LLAVA_FAST, 128);
      const files = await writeTinyLlava(join(dir, 'narrow'), spec);
      const [model, mmproj] = await Promise.all([readGgufHeader(files.model), readGgufHeader(files.mmproj)]);
      assert.equal(value(model, 'llama.embedding_length'), 128);
      assert.equal(value(model, 'llama.rope.dimension_count'), 32);
      assert.deepEqual(shapeOf(mmproj, 'mm.2.weight'), [128, 128]);
    });

    it('rejects specs llama.cpp could not load', async () => {
      const bad = { ...TINY_LLAVA_FAST, vision: { ...TINY_LLAVA_FAST.vision, imageSize: 100 } };
      await assert.rejects(writeTinyLlava(join(dir, 'bad'), bad), /imageSize must be divisible/);
      await assert.rejects(writeTinyLlava(join(dir, 'bad'), withTextWidth(TINY_LLAVA_FAST, 250)), /divisible by text.nHead/);
    });
  });
});
