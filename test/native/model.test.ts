import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate as truncateFile, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpotError } from '../../lib/common/errors';
import { Model } from '../../lib/llama/model';
import { ensureTinyLlava, TINY_LLAVA_FAST, withProjectorWidth } from '../../lib/models/tiny-model';
import { MODEL_CACHE, tinyLlava, tinyLlavaFast } from '../support/models';

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<ChainOfSpotError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail(`expected a rejection with ${code}`);
}

describe('Model', () => {
  let model: Model;
  before(async () => {
    model = await Model.load((await tinyLlava()).model);
  });
  after(async () => model.dispose());

  it('reports its metadata', () => {
    const info = model.info;
    assert.equal(info.architecture, 'llama');
    assert.equal(info.embeddingSize, 256);
    assert.equal(info.trainingContextSize, 4096);
    assert.equal(info.bos, 1);
    assert.equal(info.eos, 2);
    assert.ok(info.vocabSize > 259, 'vocab holds the specials, 256 bytes and ordinary pieces');
    assert.equal(info.chatTemplate, null);
    assert.ok(info.parameters > 0 && info.sizeBytes > 0);
  });

  it('reports load progress up to 1', async () => {
    const progress: number[] = [];
    const again = await Model.load((await tinyLlava()).model, { onProgress: (p) => progress.push(p) });
    await again.dispose();
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(progress.length > 0);
    assert.equal(progress[progress.length - 1], 1);
    assert.deepEqual([...progress].sort((a, b) => a - b), progress, 'progress never goes back');
  });

  for (const text of ['What is the region of interest?', '0.072, 0.586, 1.0 and 12345', 'emoji 🙂🚀 and ünïcödé']) {
    it(`tokenizes and detokenizes ${JSON.stringify(text)} losslessly`, () => {
      const tokens = model.tokenize(text);
      assert.ok(tokens.length > 0);
      // SentencePiece adds a space before the first word; detokenizing takes it away again.
      assert.equal(model.detokenize(tokens), text);
    });
  }

  it('adds BOS only when asked, and parses special text only when asked', () => {
    assert.equal(model.tokenize('hi', { addBos: true })[0], 1);
    assert.notEqual(model.tokenize('hi')[0], 1);
    const literal = model.tokenize('</s>');
    assert.ok(!literal.includes(2), 'user text </s> is not the EOS token');
    assert.deepEqual(Array.from(model.tokenize('</s>', { parseSpecial: true })), [2]);
  });

  it('rejects bad arguments with TypeError / RangeError', async () => {
    assert.throws(() => model.tokenize(42 as unknown as string), TypeError);
    assert.throws(() => model.detokenize([1, 99999999]), RangeError);
    await assert.rejects(Model.load(''), RangeError);
    await assert.rejects(Model.load('x', { gpuLayers: -3 }), RangeError);
    await assert.rejects(Model.load('x', { mmap: 'yes' as unknown as boolean }), TypeError);
  });

  it('a throwing onProgress rejects the load with what it threw (nothing is left uncaught)', async () => {
    const thrown = new Error('progress failed');
    let calls = 0;
    const loading = Model.load((await tinyLlava()).model, {
      onProgress: () => {
        calls++;
        throw thrown;
      },
    });
    await assert.rejects(loading, (error: Error) => error === thrown || error.cause === thrown);
    assert.equal(calls, 1, 'no progress after the call that threw');
  });

  it('progress reports all arrive before load() settles', async () => {
    for (let run = 0; run < 3; run++) {
      const progress: number[] = [];
      const again = await Model.load((await tinyLlava()).model, { onProgress: (p) => progress.push(p) });
      assert.equal(progress[progress.length - 1], 1, `run ${run}`);
      await again.dispose();
    }
  });

  it('disposing a model while createSession / loadProjector run disposes what they make', async () => {
    const pair = await tinyLlavaFast();
    const doomed = await Model.load(pair.model);
    const session = doomed.createSession();
    const projector = doomed.loadProjector(pair.mmproj);
    await doomed.dispose();
    await rejectsWithCode(session, 'ERR_DISPOSED');
    await rejectsWithCode(projector, 'ERR_DISPOSED');
  });

  it('aborts loading through an AbortSignal', async () => {
    const controller = new AbortController();
    controller.abort();
    await rejectsWithCode(Model.load((await tinyLlava()).model, { signal: controller.signal }), 'ERR_ABORTED');
  });
});

describe('Projector', () => {
  it('reports image size, tokens per image and vision support', async () => {
    for (const [pair, size, tokens] of [[await tinyLlava(), 336, 576], [await tinyLlavaFast(), 112, 64]] as const) {
      const model = await Model.load(pair.model);
      const projector = await model.loadProjector(pair.mmproj);
      assert.deepEqual(
        { imageSize: projector.info.imageSize, tokensPerImage: projector.info.tokensPerImage, supportsVision: projector.info.supportsVision },
        { imageSize: size, tokensPerImage: tokens, supportsVision: true },
      );
      await model.dispose();
      assert.throws(() => projector.info, (error: ChainOfSpotError) => error.code === 'ERR_DISPOSED');
    }
  });
});

describe('Model and projector files that do not load', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cos-bad-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('a missing file, a directory, an empty file, a text file, a truncated GGUF: ERR_MODEL_LOAD', async () => {
    const pair = await tinyLlavaFast();
    await writeFile(path.join(dir, 'empty.gguf'), '');
    await writeFile(path.join(dir, 'text.gguf'), 'this is not a model\n');
    await copyFile(pair.model, path.join(dir, 'truncated.gguf'));
    await truncateFile(path.join(dir, 'truncated.gguf'), 100_000);
    for (const name of ['missing.gguf', '.', 'empty.gguf', 'text.gguf', 'truncated.gguf']) {
      const error = await rejectsWithCode(Model.load(path.join(dir, name)), 'ERR_MODEL_LOAD');
      assert.ok(error.message.length > 20, 'the message says why');
    }
  });

  it('an mmproj given as the text model: ERR_MODEL_LOAD that says so', async () => {
    const error = await rejectsWithCode(Model.load((await tinyLlavaFast()).mmproj), 'ERR_MODEL_LOAD');
    assert.match(error.message, /mmproj|CLIP|projector/i);
  });

  it('a text model given as the projector: ERR_PROJECTOR_LOAD', async () => {
    const pair = await tinyLlavaFast();
    const model = await Model.load(pair.model);
    try {
      await rejectsWithCode(model.loadProjector(pair.model), 'ERR_PROJECTOR_LOAD');
      await rejectsWithCode(model.loadProjector(path.join(dir, 'missing-mmproj.gguf')), 'ERR_PROJECTOR_LOAD');
    } finally {
      await model.dispose();
    }
  });

  it('a projector whose output width differs from the model: ERR_PROJECTOR_MISMATCH', async () => {
    const model = await Model.load((await tinyLlavaFast()).model);
    const mismatched = await ensureTinyLlava(MODEL_CACHE, withProjectorWidth(TINY_LLAVA_FAST, 128));
    try {
      await rejectsWithCode(model.loadProjector(mismatched.mmproj), 'ERR_PROJECTOR_MISMATCH');
    } finally {
      await model.dispose();
    }
  });
});
