import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { Model } from '../../lib/llama/model';
import type { Projector } from '../../lib/llama/projector';
import type { RgbPixels, Session } from '../../lib/llama/session';
import { tinyLlava, tinyLlavaFast } from '../support/models';

/** A deterministic RGB test image: a gradient shifted by `seed`. */
function gradient(size: number, seed: number): RgbPixels {
  const data = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    data[i * 3] = (i + seed * 37) % 256;
    data[i * 3 + 1] = ((i >> 3) + seed * 11) % 256;
    data[i * 3 + 2] = (seed * 101 + (i % size)) % 256;
  }
  return { data, width: size, height: size };
}

function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!));
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  return worst / scale;
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

describe('Session', () => {
  let model: Model;
  let projector: Projector;
  let session: Session;
  const size = 112;

  before(async () => {
    const pair = await tinyLlavaFast();
    model = await Model.load(pair.model);
    projector = await model.loadProjector(pair.mmproj);
  });
  after(async () => model.dispose());
  beforeEach(async () => {
    session = await model.createSession({ contextSize: 2048 });
  });
  afterEach(async () => session.dispose());

  /** BOS + text, an image, text: the shape of a LLaVA prompt. Returns its last token. */
  async function evaluatePrompt(target: Session, question: string, seed = 1): Promise<number> {
    await target.evaluate('A chat. USER: ', { addBos: true });
    await target.evaluateImage(projector, gradient(size, seed));
    const tail = model.tokenize(`\n${question} ASSISTANT:`);
    await target.evaluate(tail);
    return tail[tail.length - 1]!;
  }

  /** Back to `position`, whose last token is `lastToken`, with its logits (to generate again). */
  async function rewind(target: Session, position: number, lastToken: number): Promise<void> {
    await target.truncate(position - 1);
    await target.evaluate([lastToken]);
  }

  it('an image advances the position by exactly the projector token count', async () => {
    await session.evaluate('USER: ', { addBos: true });
    const before = session.position();
    const result = await session.evaluateImage(projector, gradient(size, 3));
    assert.equal(result.tokens, projector.info.tokensPerImage);
    assert.equal(session.position(), before + 64);
    assert.equal(result.position, before + 64);
    assert.ok(result.encodeMs > 0 && result.decodeMs > 0);
  });

  it('an image of LLaVA-1.5 size becomes 576 tokens', async () => {
    const pair = await tinyLlava();
    const big = await Model.load(pair.model);
    try {
      const bigProjector = await big.loadProjector(pair.mmproj);
      const bigSession = await big.createSession();
      const result = await bigSession.evaluateImage(bigProjector, gradient(336, 1));
      assert.equal(result.tokens, 576);
      assert.equal(bigSession.position(), 576);
    } finally {
      await big.dispose();
    }
  });

  it('greedy generation is identical across two runs', async () => {
    const runs: number[][] = [];
    for (let run = 0; run < 2; run++) {
      const fresh = await model.createSession();
      await evaluatePrompt(fresh, 'What is this?');
      runs.push(Array.from((await fresh.generate({ maxTokens: 16 })).tokens));
      await fresh.dispose();
    }
    assert.equal(runs[0]!.length, 16);
    assert.deepEqual(runs[0], runs[1]);
  });

  it('a seeded sampler is reproducible, and the seed matters', async () => {
    const lastToken = await evaluatePrompt(session, 'Describe it.');
    const start = session.position();
    const sample = async (seed: number): Promise<string> => {
      const result = await session.generate({ maxTokens: 24, temperature: 1.5, seed });
      await rewind(session, start, lastToken);
      return Array.from(result.tokens).join(',');
    };
    const first = await sample(42);
    assert.equal(await sample(42), first);
    const others = [await sample(7), await sample(8), await sample(9)];
    assert.ok(others.some((tokens) => tokens !== first), 'other seeds sample other text');
  });

  it('grammar-constrained generation always matches its grammar', async () => {
    const grammar = 'root ::= " [" num (", " num){3} "]"\nnum ::= "0." [0-9] [0-9]? | "1.0"';
    const pattern = /^ \[(0\.[0-9][0-9]?|1\.0)(, (0\.[0-9][0-9]?|1\.0)){3}\]$/;
    const lastToken = await evaluatePrompt(session, 'Where?');
    const start = session.position();
    for (let seed = 0; seed < 25; seed++) {
      const result = await session.generate({ maxTokens: 64, temperature: 1.5, seed, grammar });
      assert.match(result.text, pattern, `seed ${seed}`);
      assert.equal(result.finishReason, 'eos', 'the grammar ends the generation');
      await rewind(session, start, lastToken);
    }
  });

  it('a grammar that does not parse rejects with ERR_GRAMMAR and leaves the session usable', async () => {
    await evaluatePrompt(session, 'Where?');
    const position = session.position();
    await rejectsWithCode(session.generate({ grammar: 'root ::= ( "unclosed' }), 'ERR_GRAMMAR');
    assert.equal(session.position(), position);
    assert.equal((await session.generate({ maxTokens: 3 })).tokens.length, 3);
  });

  it('KV reuse is exact: continuing a conversation equals evaluating it from scratch', async () => {
    // Turn one, then turn two appended to the same cache (the generated tokens stay in it).
    await evaluatePrompt(session, 'What is the region of interest?', 1);
    const turnOne = await session.generate({ maxTokens: 10 });
    const turnTwoText = model.tokenize('USER: The region is ');
    const endOfTurn = model.tokenize('</s>', { parseSpecial: true });
    await session.evaluate(Int32Array.from([...endOfTurn, ...turnTwoText]));
    await session.evaluateImage(projector, gradient(size, 2));
    await session.evaluate('\n. Answer the question. ASSISTANT:');
    const continued = await session.logits();
    const continuedAnswer = await session.generate({ maxTokens: 12 });

    // The same tokens and images from scratch in a fresh session, in different batches.
    const fresh = await model.createSession({ contextSize: 2048 });
    try {
      await fresh.evaluate('A chat. USER: ', { addBos: true });
      await fresh.evaluateImage(projector, gradient(size, 1));
      await fresh.evaluate(
        Int32Array.from([
          ...model.tokenize('\nWhat is the region of interest? ASSISTANT:'),
          ...turnOne.tokens,
          ...endOfTurn,
          ...turnTwoText,
        ]),
      );
      await fresh.evaluateImage(projector, gradient(size, 2));
      await fresh.evaluate('\n. Answer the question. ASSISTANT:');
      assert.equal(fresh.position(), session.position() - continuedAnswer.tokens.length);
      const scratch = await fresh.logits();
      const scratchAnswer = await fresh.generate({ maxTokens: 12 });

      assert.deepEqual(Array.from(continuedAnswer.tokens), Array.from(scratchAnswer.tokens));
      // Measured 1e-6 to 2.5e-4 on the tiny pairs: ggml multiplies the f16 weights with one kernel for
      // a single token and another (f32 blocks) for a batch, so rounding differs. A token evaluated
      // twice or missed moves logits by whole units; 1e-3 catches that with room to spare.
      const difference = maxRelativeDifference(continued!, scratch!);
      assert.ok(difference < 1e-3, `logits differ by ${difference}`);
    } finally {
      await fresh.dispose();
    }
  });

  it('truncate then re-evaluate gives the same result as never having gone further', async () => {
    await evaluatePrompt(session, 'First?');
    const prefix = session.position();
    await session.evaluate(' and then more text');
    const logitsA = await session.logits();
    const answerA = await session.generate({ maxTokens: 8 });

    await session.truncate(prefix);
    assert.equal(session.position(), prefix);
    await session.evaluate(' and then more text');
    const logitsB = await session.logits();
    const answerB = await session.generate({ maxTokens: 8 });
    assert.deepEqual(Array.from(answerB.tokens), Array.from(answerA.tokens));
    assert.ok(maxRelativeDifference(logitsA!, logitsB!) < 1e-6);
  });

  it('copySequence gives a second sequence the same prefix', async () => {
    const multi = await model.createSession({ sequences: 2 });
    try {
      await evaluatePrompt(multi, 'Shared prefix?');
      await multi.copySequence(0, 1);
      assert.equal(multi.position(1), multi.position(0));
      const a = await multi.generate({ maxTokens: 6, sequence: 0 });
      const b = await multi.generate({ maxTokens: 6, sequence: 1 });
      assert.deepEqual(Array.from(b.tokens), Array.from(a.tokens));
    } finally {
      await multi.dispose();
    }
  });

  it('streams text pieces that add up to the generated text', async () => {
    await evaluatePrompt(session, 'Stream it.');
    const pieces: string[] = [];
    const result = await session.generate({ maxTokens: 20, onText: (text) => pieces.push(text) });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pieces.join(''), result.text);
    assert.ok(pieces.length > 1);
  });

  it('stops before a stop string, which is not part of the text', async () => {
    const lastToken = await evaluatePrompt(session, 'Stop it.');
    const start = session.position();
    const full = await session.generate({ maxTokens: 20 });
    await rewind(session, start, lastToken);
    // Three characters from the middle, as a stop string: the text must end before them.
    const stopAt = full.text.slice(Math.floor(full.text.length / 2), Math.floor(full.text.length / 2) + 3);
    const stopped = await session.generate({ maxTokens: 20, stop: [stopAt] });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stopAt)));
  });

  it('abort stops generation within a few tokens, rejects with ERR_ABORTED, and the session works afterwards', async () => {
    const lastToken = await evaluatePrompt(session, 'Go on forever.');
    const position = session.position();
    const reference = await session.generate({ maxTokens: 8 });
    await rewind(session, position, lastToken);

    const controller = new AbortController();
    let piecesAfterAbort = 0;
    let pieces = 0;
    const aborted = session.generate({
      maxTokens: 1500,
      signal: controller.signal,
      onText: () => {
        pieces++;
        if (controller.signal.aborted) piecesAfterAbort++;
        if (pieces === 5) controller.abort();
      },
    });
    await rejectsWithCode(aborted, 'ERR_ABORTED');
    assert.ok(piecesAfterAbort <= 8, `${piecesAfterAbort} pieces came after the abort`);
    assert.equal(session.position(), position, 'the sequence is as before the aborted call');
    const again = await session.generate({ maxTokens: 8 });
    assert.deepEqual(Array.from(again.tokens), Array.from(reference.tokens));
  });

  it('abort during prompt evaluation rejects with ERR_ABORTED and leaves the sequence unchanged', async () => {
    const big = await model.createSession({ contextSize: 8192, batchSize: 32 });
    try {
      await big.evaluate('Start.', { addBos: true });
      const position = big.position();
      const controller = new AbortController();
      const tokens = new Int32Array(8000).fill(model.tokenize('word')[0]!);
      const evaluation = big.evaluate(tokens, { signal: controller.signal });
      setTimeout(() => controller.abort(), 30);
      await rejectsWithCode(evaluation, 'ERR_ABORTED');
      assert.equal(big.position(), position);
      await big.evaluate(' more');
      assert.ok((await big.logits()) !== null);
    } finally {
      await big.dispose();
    }
  });

  it('a prompt or an image that does not fit rejects with ERR_CONTEXT_FULL and changes nothing', async () => {
    const small = await model.createSession({ contextSize: 256 });
    try {
      await small.evaluate('Hello', { addBos: true });
      const position = small.position();
      await rejectsWithCode(small.evaluate(new Int32Array(300).fill(100)), 'ERR_CONTEXT_FULL');
      assert.equal(small.position(), position);
      await small.evaluate(new Int32Array(256 - position - 10).fill(100));
      await rejectsWithCode(small.evaluateImage(projector, gradient(size, 1)), 'ERR_CONTEXT_FULL');
      assert.equal(small.position(), 246);
      await rejectsWithCode(small.generate({ maxTokens: 50 }), 'ERR_CONTEXT_FULL');
      assert.equal(small.position(), 246);
    } finally {
      await small.dispose();
    }
  });

  it('calls queue: concurrent calls run one at a time in call order', async () => {
    await session.evaluate('A', { addBos: true });
    const order: number[] = [];
    await Promise.all(
      [' one', ' two', ' three'].map((text, i) => session.evaluate(text).then(() => order.push(i))),
    );
    assert.deepEqual(order, [0, 1, 2]);
    assert.equal(session.position(), model.tokenize('A', { addBos: true }).length + ['one', 'two', 'three'].reduce((n, w) => n + model.tokenize(` ${w}`).length, 0));
  });

  it('dispose twice is safe; any call after dispose rejects with ERR_DISPOSED', async () => {
    const doomed = await model.createSession();
    await doomed.dispose();
    await doomed.dispose();
    await rejectsWithCode(doomed.evaluate('x'), 'ERR_DISPOSED');
    await rejectsWithCode(doomed.generate(), 'ERR_DISPOSED');
    assert.throws(() => doomed.position(), (error: ChainOfSpotError) => error.code === 'ERR_DISPOSED');
  });

  it('dispose during generation settles the call with ERR_DISPOSED', async () => {
    const doomed = await model.createSession();
    await evaluatePrompt(doomed, 'Long answer.');
    const generation = doomed.generate({ maxTokens: 1500 });
    const queued = doomed.evaluate('never');
    setTimeout(() => void doomed.dispose(), 20);
    await rejectsWithCode(generation, 'ERR_DISPOSED');
    await rejectsWithCode(queued, 'ERR_DISPOSED');
  });

  it('invalid arguments throw TypeError / RangeError before any work', async () => {
    assert.throws(() => session.evaluate(42 as unknown as string), TypeError);
    assert.throws(() => session.evaluate('x', { sequence: 1 }), RangeError);
    assert.throws(() => session.generate({ maxTokens: 0 }), RangeError);
    assert.throws(() => session.generate({ temperature: -1 }), RangeError);
    assert.throws(() => session.generate({ stop: 'x' as unknown as string[] }), TypeError);
    assert.throws(() => session.evaluateImage(projector, { data: new Uint8Array(5), width: 2, height: 2 }), RangeError);
    await assert.rejects(model.createSession({ contextSize: 0 }), RangeError);
  });
});
