import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpotError } from '../../lib/common/errors';
import { Model } from '../../lib/llama/model';
import type { Projector } from '../../lib/llama/projector';
import type { RgbPixels, Session } from '../../lib/llama/session';
import { defaultThreads } from '../../lib/native/threads';
import { maxRelativeDifference } from '../support/logits';
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

  /** Asserts `target`'s logits equal those of a fresh session that `prepare` brings to the same point. */
  async function assertLogitsOfFresh(target: Session, prepare: (fresh: Session) => Promise<unknown>): Promise<void> {
    const fresh = await model.createSession();
    try {
      await prepare(fresh);
      assert.equal(fresh.position(), target.position());
      const difference = maxRelativeDifference((await target.logits())!, (await fresh.logits())!);
      assert.ok(difference < 1e-3, `logits differ by ${difference}`);
    } finally {
      await fresh.dispose();
    }
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
    // The generation checks the abort flag at every token; the pieces still arriving are those it
    // made while JavaScript was busy (9 once on a loaded 2-core machine), so the bound is loose.
    assert.ok(piecesAfterAbort < 100, `${piecesAfterAbort} pieces came after the abort of a 1500-token generation`);
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
      // By the next turn of the event loop the call has left the queue and its 250 batches are
      // running natively, whatever the machine's speed.
      setImmediate(() => controller.abort());
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
      await small.evaluate(new Int32Array(10).fill(100));
      await rejectsWithCode(small.generate({ maxTokens: 50 }), 'ERR_CONTEXT_FULL');
      assert.equal(small.position(), 256);
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
    let pieces = 0;
    const generation = doomed.generate({
      maxTokens: 1500,
      onText: () => {
        if (++pieces === 3) void doomed.dispose();
      },
    });
    const queued = doomed.evaluate('never');
    await rejectsWithCode(generation, 'ERR_DISPOSED');
    await rejectsWithCode(queued, 'ERR_DISPOSED');
  });

  // Issue 11 §4: the session's edge cases.

  it('generate() settles only after its last onText piece', async () => {
    const lastToken = await evaluatePrompt(session, 'Stream it all.');
    const start = session.position();
    for (let run = 0; run < 10; run++) {
      const pieces: string[] = [];
      const result = await session.generate({ maxTokens: 6, onText: (text) => pieces.push(text) });
      assert.equal(pieces.join(''), result.text, `run ${run}: every piece arrived before the promise settled`);
      await rewind(session, start, lastToken);
    }
  });

  it('a throwing onText rejects generate() with what it threw, even on the last piece', async () => {
    const lastToken = await evaluatePrompt(session, 'Throw.');
    const start = session.position();
    for (let run = 0; run < 10; run++) {
      const thrown = new Error(`onText failed ${run}`);
      let calls = 0;
      let outcome: unknown;
      try {
        // One token: its piece is the last thing generation does.
        await session.generate({
          maxTokens: 1,
          onText: () => {
            calls++;
            throw thrown;
          },
        });
      } catch (error) {
        outcome = error;
      }
      await new Promise((resolve) => setImmediate(resolve)); // a piece that came late would be here now
      if (calls > 0) {
        assert.ok(outcome === thrown || (outcome as Error | undefined)?.cause === thrown, `run ${run}: ${String(outcome)}`);
      }
      assert.ok(calls <= 1, 'pieces after the one that threw are not delivered');
      await rewind(session, start, lastToken);
    }
  });

  it('a stop string leaves the sequence holding exactly the returned text', async () => {
    const lastToken = await evaluatePrompt(session, 'Stop here.');
    const start = session.position();
    const full = await session.generate({ maxTokens: 24 });
    await rewind(session, start, lastToken);
    const middle = Math.floor(full.text.length / 2);
    const stopAt = full.text.slice(middle, middle + 3);
    const stopped = await session.generate({ maxTokens: 24, stop: [stopAt] });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stopAt)));
    assert.equal(session.position(), start + stopped.tokens.length, 'the position ends with the text');
    assert.equal(stopped.position, session.position());
    // SentencePiece drops the first space when detokenizing.
    assert.equal(model.detokenize(stopped.tokens), stopped.text.replace(/^ /, ''));

    // The next turn continues after the returned text: the same logits as evaluating it from scratch.
    await session.evaluate(' USER: next');
    await assertLogitsOfFresh(session, async (fresh) => {
      await evaluatePrompt(fresh, 'Stop here.');
      await fresh.evaluate(Int32Array.from([...stopped.tokens, ...model.tokenize(' USER: next')]));
    });
  });

  it('a stop string in the first piece leaves the sequence where generation started, ready to generate again', async () => {
    const lastToken = await evaluatePrompt(session, 'Stop at once.');
    const start = session.position();
    const full = await session.generate({ maxTokens: 4 });
    await rewind(session, start, lastToken);
    const stopped = await session.generate({ maxTokens: 4, stop: [full.text.slice(0, 2)] });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, '');
    assert.equal(stopped.tokens.length, 0);
    assert.equal(session.position(), start);
    const again = await session.generate({ maxTokens: 4 });
    assert.deepEqual(Array.from(again.tokens), Array.from(full.tokens));
  });

  it('position() while an operation runs is the position before it', async () => {
    await evaluatePrompt(session, 'Where are we?');
    const start = session.position();
    const seen: number[] = [];
    const result = await session.generate({ maxTokens: 12, onText: () => seen.push(session.position()) });
    assert.ok(seen.length > 0);
    assert.deepEqual(seen, seen.map(() => start));
    assert.equal(session.position(), start + result.tokens.length);
  });

  it('truncate below the last logits drops them: an image evaluated after it leaves no logits', async () => {
    await session.evaluate('USER: ', { addBos: true });
    const position = session.position();
    await session.evaluate(new Int32Array(projector.info.tokensPerImage).fill(100));
    await session.truncate(position);
    await session.evaluateImage(projector, gradient(size, 1));
    assert.equal(session.position(), position + projector.info.tokensPerImage);
    assert.equal(await session.logits(), null, 'the logits of the truncated text are gone');
    await rejectsWithCode(session.generate({ maxTokens: 2 }), 'ERR_NATIVE');
  });

  it("generation that fills the context ends with finishReason 'context' and keeps what it streamed", async () => {
    const small = await model.createSession({ contextSize: 256 });
    try {
      await small.evaluate('Hello', { addBos: true });
      await small.evaluate(new Int32Array(246 - small.position()).fill(100));
      const pieces: string[] = [];
      const result = await small.generate({ maxTokens: 50, onText: (text) => pieces.push(text) });
      assert.equal(result.finishReason, 'context');
      assert.equal(result.tokens.length, 10);
      assert.equal(small.position(), 256);
      assert.equal(pieces.join(''), result.text);
    } finally {
      await small.dispose();
    }
  });

  it("generation that finds no free cell in the cache the sequences share ends with finishReason 'context'", async () => {
    const shared = await model.createSession({ contextSize: 256, sequences: 2 });
    try {
      await shared.evaluate(new Int32Array(200).fill(100), { sequence: 0 });
      await shared.evaluate('Hello', { addBos: true, sequence: 1 });
      const start = shared.position(1);
      // Sequence 1 has room for 200 more tokens, but the cache only for 256 - 200 - start.
      const result = await shared.generate({ maxTokens: 100, sequence: 1 });
      assert.equal(result.finishReason, 'context');
      assert.ok(result.tokens.length >= 256 - 200 - start, `${result.tokens.length} tokens`);
      assert.equal(shared.position(1), start + result.tokens.length);
    } finally {
      await shared.dispose();
    }
  });

  it('an image that finds no free cell in the cache the sequences share rejects with ERR_CONTEXT_FULL', async () => {
    const shared = await model.createSession({ contextSize: 256, sequences: 2 });
    try {
      await shared.evaluate(new Int32Array(150).fill(100), { sequence: 0 });
      await shared.evaluate(new Int32Array(45).fill(100), { sequence: 1 });
      // Sequence 1 has room for 64 more tokens, but only 61 cells are free.
      await rejectsWithCode(shared.evaluateImage(projector, gradient(size, 1), { sequence: 1 }), 'ERR_CONTEXT_FULL');
      assert.equal(shared.position(1), 45);
      await shared.evaluate(new Int32Array(10).fill(100), { sequence: 1 });
      assert.equal(shared.position(1), 55);
    } finally {
      await shared.dispose();
    }
  });

  it('clear() empties every sequence: the same prompt then gives the same logits as in a fresh session', async () => {
    await evaluatePrompt(session, 'Before clearing.', 2);
    await session.clear();
    assert.equal(session.position(), 0);
    await evaluatePrompt(session, 'After clearing.', 3);
    await assertLogitsOfFresh(session, (fresh) => evaluatePrompt(fresh, 'After clearing.', 3));
  });

  it('a session keeps its compute threads between decodes (a threadpool of its own)', async function () {
    if (!existsSync('/proc/self/task')) this.skip();
    const threads = (): number => readdirSync('/proc/self/task').length;
    const before = threads();
    const pooled = await model.createSession({ threads: 4 });
    try {
      await pooled.evaluate('Hello there', { addBos: true });
      await pooled.generate({ maxTokens: 2 });
      assert.ok(threads() - before >= 3, `${threads() - before} threads more than before`);
    } finally {
      await pooled.dispose();
    }
    assert.equal(threads(), before, 'disposing the session ends its threads');
  });

  it('the default thread count is the physical cores', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'cos-cpus-'));
    try {
      // Two hyper-threads of one core.
      for (const cpu of ['cpu0', 'cpu1']) {
        await mkdir(path.join(root, cpu, 'topology'), { recursive: true });
        await writeFile(path.join(root, cpu, 'topology', 'core_id'), '0\n');
        await writeFile(path.join(root, cpu, 'topology', 'physical_package_id'), '0\n');
      }
      assert.equal(defaultThreads(root), 1);
      assert.ok(defaultThreads(path.join(root, 'missing')) >= 1, 'falls back to the CPUs it may use');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('evaluate() and evaluateImage() use the tokens and pixels as they were at the call', async () => {
    const tokens = model.tokenize(' hello there');
    const image = gradient(size, 4);
    const calls = [
      session.evaluate('USER:', { addBos: true }),
      session.evaluate(tokens),
      session.evaluateImage(projector, image),
      session.evaluate(' ok'),
    ];
    tokens.fill(100); // the calls wait in the queue meanwhile
    image.data.fill(0);
    await Promise.all(calls);
    await assertLogitsOfFresh(session, async (fresh) => {
      await fresh.evaluate('USER:', { addBos: true });
      await fresh.evaluate(' hello there');
      await fresh.evaluateImage(projector, gradient(size, 4));
      await fresh.evaluate(' ok');
    });
  });

  it('seed 0xFFFFFFFF is reproducible like every other seed', async () => {
    const lastToken = await evaluatePrompt(session, 'Describe it.');
    const start = session.position();
    const sample = async (): Promise<string> => {
      const result = await session.generate({ maxTokens: 24, temperature: 1.5, seed: 0xffffffff });
      await rewind(session, start, lastToken);
      return Array.from(result.tokens).join(',');
    };
    const first = await sample();
    assert.equal(await sample(), first);
    assert.equal(await sample(), first);
  });

  it('a batch smaller than the sequence count evaluates as a large one (llama.cpp keeps an output row per sequence)', async () => {
    const small = await model.createSession({ sequences: 4, batchSize: 2 });
    try {
      const tokens = model.tokenize('Four sequences, two tokens a batch', { addBos: true });
      const result = await small.evaluate(tokens, { sequence: 3 });
      assert.equal(result.decodeCalls, Math.ceil(tokens.length / 2));
      await session.evaluate(tokens);
      const difference = maxRelativeDifference((await small.logits(3))!, (await session.logits())!);
      assert.ok(difference < 1e-3, `logits differ by ${difference}`);
    } finally {
      await small.dispose();
    }
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
