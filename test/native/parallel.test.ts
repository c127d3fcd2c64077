import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { AskResult } from '../../lib/procedure/types';
import { Batcher } from '../../lib/llama/batcher';
import { Model } from '../../lib/llama/model';
import type { Session } from '../../lib/llama/session';
import { demoModelFiles } from '../../lib/models/demo-model';
import { writeScenes, type SceneQuestion } from '../../lib/scenes/index';
import { essence, rejectsWithCode } from '../support/results';
import { maxRelativeDifference } from '../support/logits';
import { tinyLlavaFast } from '../support/models';

/**
 * Batched float arithmetic: a sequence's logits computed in one batch with other sequences, against
 * the same sequence alone, differ by rounding only (ggml's matrix products tile a batch of more rows
 * differently). Measured on the tiny model: 1.5e-7 relative at most.
 */
const BATCH_TOLERANCE = 1e-5;

describe('parallel decoding', () => {
  let pair: { model: string; mmproj: string };
  before(async () => {
    pair = await tinyLlavaFast();
  });

  describe('Batcher (one batch over several sequences)', () => {
    let model: Model;
    let session: Session;
    before(async () => {
      model = await Model.load(pair.model);
      session = await model.createSession({ contextSize: 1024, sequences: 4 });
    });
    after(async () => model.dispose());

    it('unifiedCache: false gives each sequence its own part of the context', async () => {
      const own = await model.createSession({ contextSize: 1024, sequences: 4, unifiedCache: false });
      try {
        assert.equal(own.info.contextSize, 256);
        assert.equal(session.info.contextSize, 1024, 'shared by default: each sequence may fill it');
        await rejectsWithCode(own.evaluate(new Int32Array(300).fill(model.tokenize('a')[0]!), { sequence: 2 }), 'ERR_CONTEXT_FULL');
      } finally {
        await own.dispose();
      }
      await assert.rejects(model.createSession({ unifiedCache: 'no' as unknown as boolean }), TypeError);
    });

    it("gives each sequence the logits it has alone, within the batch's float tolerance", async () => {
      const prompts = ['A cat sits on the mat.', 'Coffee in a white cup', 'An astronaut, a flag and the moon', 'Rocket'].map((text) => model.tokenize(text, { addBos: true }));
      const alone: Float32Array[] = [];
      for (const tokens of prompts) {
        await session.clear();
        await session.evaluate(tokens);
        alone.push((await session.logits())!);
      }
      await session.clear();
      const batcher = new Batcher(session);
      const results = await Promise.all(prompts.map((tokens, i) => batcher.evaluate(i, tokens, undefined)));
      // One decode: all four prompts went into the same batch.
      assert.deepEqual(results.map((result) => result.decodeCalls), [1, 1, 1, 1]);
      let worst = 0;
      for (let i = 0; i < prompts.length; i++) {
        assert.equal(session.position(i), prompts[i]!.length);
        worst = Math.max(worst, maxRelativeDifference((await session.logits(i))!, alone[i]!));
      }
      assert.ok(worst < BATCH_TOLERANCE, `max relative difference ${worst}`);
      // The prompts differ, so their logits do: a sequence that read another's would fail above.
      assert.ok(maxRelativeDifference(alone[0]!, alone[1]!) > 100 * BATCH_TOLERANCE);
    });

    it('generates on several sequences at once as each does alone, one decode per token for all', async () => {
      const prompts = ['One', 'Two three', 'Four five six'].map((text) => model.tokenize(text, { addBos: true }));
      const alone: number[][] = [];
      for (const tokens of prompts) {
        await session.clear();
        await session.evaluate(tokens);
        alone.push(Array.from((await session.generate({ maxTokens: 12 })).tokens));
      }
      await session.clear();
      const batcher = new Batcher(session);
      await Promise.all(prompts.map((tokens, i) => batcher.evaluate(i, tokens, undefined)));
      const texts = prompts.map(() => [] as string[]);
      const together = await Promise.all(prompts.map((_, i) => batcher.generate(i, { maxTokens: 12, onText: (text) => texts[i]!.push(text) })));
      assert.deepEqual(together.map((result) => Array.from(result.tokens)), alone);
      together.forEach((result, i) => {
        assert.equal(texts[i]!.join(''), result.text, 'the streamed pieces make the text');
        assert.equal(result.decodeCalls, result.finishReason === 'length' ? 11 : result.tokens.length);
      });
    });

    it('cancels an aborted generation alone: its sequence goes back, the others go on', async () => {
      const prompts = ['Alpha', 'Beta gamma'].map((text) => model.tokenize(text, { addBos: true }));
      await session.clear();
      const batcher = new Batcher(session);
      await Promise.all(prompts.map((tokens, i) => batcher.evaluate(i, tokens, undefined)));
      const controller = new AbortController();
      const aborted = batcher.generate(0, { maxTokens: 40, signal: controller.signal, onText: () => controller.abort() });
      const other = batcher.generate(1, { maxTokens: 20 });
      await rejectsWithCode(aborted, 'ERR_ABORTED');
      assert.equal((await other).tokens.length, 20);
      assert.equal(session.position(0), prompts[0]!.length, 'the aborted sequence is as before the call');
    });

    it('rejects one item (evaluating past the context) without failing the others', async () => {
      await session.clear();
      const batcher = new Batcher(session);
      const tooLong = new Int32Array(2000).fill(model.tokenize('a')[0]!);
      const [bad, good] = await Promise.allSettled([batcher.evaluate(0, tooLong, undefined), batcher.evaluate(1, model.tokenize('Fine'), undefined)]);
      assert.equal(bad.status, 'rejected');
      assert.equal((bad as PromiseRejectedResult).reason.code, 'ERR_CONTEXT_FULL');
      assert.equal(good.status, 'fulfilled');
      assert.equal(session.position(0), 0);
    });
  });

  /**
   * On the trained demo model (whose answers have clear margins, so greedy answers do not flip on
   * rounding as a random model's long answers may), about four generated scenes: one question each.
   */
  describe('ChainOfSpot.load({ parallel })', () => {
    const demo = demoModelFiles();
    let dir: string;
    let QUESTIONS: (readonly [string, string])[];
    let sequential: AskResult[];
    let cos: ChainOfSpot;
    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'cos-parallel-'));
      const { questions } = await writeScenes({ count: 24, seed: 4242, out: dir });
      const rows = (await readFile(questions, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as SceneQuestion);
      const firstOfEachImage = rows.filter((row, i) => i === 0 || rows[i - 1]!.image !== row.image).slice(0, 4);
      QUESTIONS = firstOfEachImage.map((row) => [path.join(dir, row.image), row.question] as const);
      assert.equal(QUESTIONS.length, 4);
      const alone = await ChainOfSpot.load(demo);
      try {
        sequential = [];
        for (const [image, question] of QUESTIONS) sequential.push(await alone.ask(image, question));
      } finally {
        await alone.dispose();
      }
      // Different images give different answers: one about the wrong image would not pass unseen.
      assert.ok(new Set(sequential.map((result) => result.answer)).size >= 3, sequential.map((result) => result.answer).join());
      cos = await ChainOfSpot.load({ ...demo, parallel: 4 });
    });
    after(async () => {
      await (cos as ChainOfSpot | undefined)?.dispose(); // undefined when before() failed
      await rm(dir, { recursive: true, force: true });
    });

    it('answers questions about different images at once, each about its own image, as sequentially', async () => {
      const streamed = QUESTIONS.map(() => '');
      const results = await Promise.all(QUESTIONS.map(([image, question], i) => cos.ask(image, question, { onText: (text, turn) => turn === 2 && (streamed[i] += text) })));
      assert.deepEqual(results.map(essence), sequential.map(essence));
      results.forEach((result, i) => assert.equal(streamed[i]!.trim(), result.answer));
      // One sequence per question, each with its own part of the cache (a question's worth).
      assert.equal(cos.session.info.sequences, 4);
      assert.ok(cos.session.info.contextSize >= 2 * cos.projector.info.tokensPerImage + 256, String(cos.session.info.contextSize));
    });

    it('keeps the images\' prefixes: the same questions again reuse them', async () => {
      // Whatever ran before, each image's prefix is on a sequence of its own after this round.
      await Promise.all(QUESTIONS.map(([image, question]) => cos.ask(image, question)));
      const results = await Promise.all(QUESTIONS.map(([image, question]) => cos.ask(image, question)));
      assert.deepEqual(results.map((result) => result.prefixReused), [true, true, true, true]);
      assert.deepEqual(results.map(essence), sequential.map(essence));
    });

    it('one aborted question and one whose onText throws leave the others untouched', async () => {
      const controller = new AbortController();
      const boom = new Error('listener failed');
      const settled = await Promise.allSettled(
        QUESTIONS.map(([image, question], i) =>
          cos.ask(image, question, {
            signal: i === 1 ? controller.signal : undefined,
            onText: (_text, turn) => {
              if (i === 1 && turn === 1) controller.abort();
              if (i === 2 && turn === 2) throw boom;
            },
          }),
        ),
      );
      assert.equal(settled[1]!.status, 'rejected');
      assert.equal((settled[1] as PromiseRejectedResult).reason.code, 'ERR_ABORTED');
      const thrown = (settled[2] as PromiseRejectedResult).reason as Error;
      assert.ok(thrown === boom || thrown.cause === boom, String(thrown));
      for (const i of [0, 3]) assert.deepEqual(essence((settled[i] as PromiseFulfilledResult<AskResult>).value), essence(sequential[i]!));
      // And the instance answers as before.
      assert.deepEqual(essence(await cos.ask(...QUESTIONS[1]!)), essence(sequential[1]!));
    });

    it('rejects a bad parallel option with a RangeError', async () => {
      await assert.rejects(ChainOfSpot.load({ ...demo, parallel: 0 }), RangeError);
      await assert.rejects(ChainOfSpot.load({ ...demo, parallel: 1.5 }), RangeError);
    });

    it('queues questions beyond `parallel`, and evicts the least recently used prefix', async () => {
      const cos = await ChainOfSpot.load({ ...demo, parallel: 2 });
      try {
        const results = await Promise.all(QUESTIONS.map(([image, question]) => cos.ask(image, question)));
        assert.deepEqual(results.map(essence), sequential.map(essence));
        const reuse = async (i: number): Promise<boolean> => (await cos.ask(...QUESTIONS[i]!)).prefixReused;
        // One at a time now: the two sequences end up holding the prefixes of images 2 and 3.
        await reuse(2);
        await reuse(3);
        // A question goes to the sequence holding its image, else evicts the least recently used
        // one: after 2 is used again, 0 evicts 3, and so on.
        assert.deepEqual([await reuse(2), await reuse(0), await reuse(2), await reuse(3), await reuse(2), await reuse(0)], [true, false, true, false, true, false]);
      } finally {
        await cos.dispose();
      }
    });

    it('dispose rejects the questions in flight and the waiting ones with ERR_DISPOSED', async () => {
      const cos = await ChainOfSpot.load({ ...demo, parallel: 2 });
      let disposed: Promise<void> | undefined;
      // Disposed at the first text any question writes, before any can have finished: two in
      // flight, two waiting.
      const onText = (): void => void (disposed ??= cos.dispose());
      const asks = QUESTIONS.map(([image, question]) => cos.ask(image, question, { onText }).then(() => 'answered', (error: { code?: string }) => error.code));
      await Promise.all(asks);
      await disposed;
      assert.deepEqual(await Promise.all(asks), QUESTIONS.map(() => 'ERR_DISPOSED'));
      await rejectsWithCode(cos.ask(...QUESTIONS[0]!), 'ERR_DISPOSED');
    });
  });
});
