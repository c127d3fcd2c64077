/**
 * Reliability end to end, through the public API: hostile images and questions, aborts at each
 * stage, dispose in the middle of concurrent questions, and processes that exit without cleaning
 * up. What may take a process down runs in a child process (test/support/child.ts).
 */
import assert from 'node:assert/strict';
import path from 'node:path';

import sharp from 'sharp';

import { parseBoxOrFallback } from '../../lib/procedure/box';
import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { AskResult } from '../../lib/procedure/types';
import { ChainOfSpotError } from '../../lib/common/errors';
import { assertExited, describeChild, resultOf, runScript } from '../support/child';
import { tinyLlava, tinyLlavaFast } from '../support/models';
import { FIXTURE_IMAGES } from '../support/paths';

const CAT = path.join(FIXTURE_IMAGES, 'chelsea.png');
const COFFEE = path.join(FIXTURE_IMAGES, 'coffee.png');

async function rejectsWithCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ChainOfSpotError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected a rejection with ${code}`);
}

/** The part of a result that must not depend on how or when it was computed. */
function essence(result: AskResult): unknown {
  return { answer: result.answer, roi: result.roi, turns: result.turns.map((turn) => Array.from(turn.tokens)) };
}

/** Checks the shape of a successful answer about an image of `width` x `height`. */
function assertAnswered(result: AskResult, width: number, height: number): void {
  assert.equal(typeof result.answer, 'string');
  const { left, top, right, bottom } = result.roi.pixels;
  // Empty when the model's box lies in the padding around the image (boxToPixels clamps to the image).
  assert.ok(left >= 0 && top >= 0 && right <= width && bottom <= height && left <= right && top <= bottom, JSON.stringify(result.roi.pixels));
  assert.ok(result.turns[1].generatedTokens > 0);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A valid PNG whose header says `width` x `height` (its pixel data is a few bytes: no decoder gets that far). */
function pngClaiming(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from('89504e470d0a1a0a', 'hex'),
    chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.from('789c030000000001', 'hex')),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('Reliability', () => {
  describe('images, end to end through ChainOfSpot.ask', () => {
    let cos: ChainOfSpot;
    before(async () => {
      const pair = await tinyLlavaFast();
      cos = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1 });
    });
    after(async () => cos?.dispose());

    it('an empty buffer and random bytes reject with ERR_IMAGE', async () => {
      await rejectsWithCode(cos.ask(Buffer.alloc(0), 'Empty?'), 'ERR_IMAGE', /empty/);
      await rejectsWithCode(cos.ask(new Uint8Array(0), 'Empty?'), 'ERR_IMAGE', /empty/);
      let seed = 99;
      const random = Buffer.from(Array.from({ length: 4096 }, () => (seed = (seed * 1103515245 + 12345) % 2147483648) >>> 16 & 255));
      await rejectsWithCode(cos.ask(random, 'Noise?'), 'ERR_IMAGE', /not an image/);
    });

    it('an image over the pixel limit is rejected from its header, before it is decoded', async () => {
      const bomb = pngClaiming(10_000, 10_000); // 100 megapixels in 60 bytes
      // sharp's limit is checked against the header: the message names the limit, not a decode failure.
      await rejectsWithCode(cos.ask(bomb, 'Huge?'), 'ERR_IMAGE', /than the limit of/);
      // And the instance's own limit applies to ordinary photos.
      const pair = await tinyLlavaFast();
      const strict = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1, maxPixels: 100_000 });
      try {
        await rejectsWithCode(strict.ask(CAT, 'Too big?'), 'ERR_IMAGE', /maxPixels/);
      } finally {
        await strict.dispose();
      }
    });

    it('a 1x1 image is answered, its region inside it', async () => {
      const png = await sharp({ create: { width: 1, height: 1, channels: 3, background: { r: 200, g: 30, b: 60 } } }).png().toBuffer();
      assertAnswered(await cos.ask(png, 'What colour is it?'), 1, 1);
    });

    it('a 16-bit PNG, grey with alpha, a CMYK JPEG and the animated GIF are answered', async () => {
      const cat = sharp(CAT).resize(90, 60);
      const inputs: [string, Buffer][] = [
        ['16-bit PNG', await cat.clone().toColourspace('rgb16').png().toBuffer()],
        ['grey + alpha PNG', await cat.clone().grayscale().ensureAlpha(0.5).toColourspace('b-w').png().toBuffer()],
        ['CMYK JPEG', await cat.clone().toColourspace('cmyk').jpeg().toBuffer()],
        ['animated GIF', await sharp(path.join(FIXTURE_IMAGES, 'no_time_for_that_tiny.gif'), { animated: true }).gif().toBuffer()],
      ];
      const gif = await sharp(path.join(FIXTURE_IMAGES, 'no_time_for_that_tiny.gif')).metadata();
      assert.ok((gif.pages ?? 1) > 1);
      for (const [what, bytes] of inputs) {
        const meta = await sharp(bytes).metadata();
        const result = await cos.ask(bytes, `What is in this ${what}?`);
        assertAnswered(result, meta.width!, meta.pageHeight ?? meta.height!);
      }
    });

    it('after all that the instance still answers as a fresh one does', async () => {
      const reference = essence(await cos.ask(CAT, 'Still the same?'));
      const pair = await tinyLlavaFast();
      const fresh = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1 });
      try {
        assert.deepEqual(essence(await fresh.ask(CAT, 'Still the same?')), reference);
      } finally {
        await fresh.dispose();
      }
    });

    it('an extreme aspect ratio (1 x 24,000 pixels, 24 kilopixels) settles quickly without gigabytes of padding', async function () {
      // The padded square of a 1 x N image is N x N: here 576 megapixels, 1.7 GB of RGB. Run in a
      // child, so that a slow or memory-hungry implementation fails this test instead of the run.
      this.timeout(60_000);
      const pair = await tinyLlavaFast();
      const outcome = await runScript(
        `
        const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
        const sharp = require(process.env.COS_SHARP);
        (async () => {
          const cos = await ChainOfSpot.load({ model: process.env.COS_MODEL, mmproj: process.env.COS_MMPROJ, threads: 1 });
          const png = await sharp({ create: { width: 1, height: 24000, channels: 3, background: '#336699' } }).png().toBuffer();
          const start = performance.now();
          let outcome;
          try {
            const result = await cos.ask(png, 'What is it?');
            outcome = { answered: true, pixels: result.roi.pixels };
          } catch (error) {
            outcome = { answered: false, code: error.code, message: error.message };
          }
          outcome.ms = performance.now() - start;
          outcome.rssMB = process.memoryUsage().rss / 2 ** 20;
          console.log('RESULT ' + JSON.stringify(outcome));
          await cos.dispose();
        })();`,
        [],
        { timeoutMs: 20_000, env: { COS_MODEL: pair.model, COS_MMPROJ: pair.mmproj, COS_SHARP: require.resolve('sharp') } },
      );
      assertExited(outcome);
      const result = resultOf<{ answered: boolean; code?: string; message?: string; ms: number; rssMB: number }>(outcome);
      if (!result.answered) assert.equal(result.code, 'ERR_IMAGE', result.message);
      assert.ok(result.rssMB < 1024, `the process grew to ${Math.round(result.rssMB)} MB`);
    });
  });

  describe('questions, end to end', () => {
    let cos: ChainOfSpot;
    before(async () => {
      const pair = await tinyLlavaFast();
      cos = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1 });
    });
    after(async () => cos?.dispose());

    it('an empty question is asked as it is', async () => {
      const result = await cos.ask(CAT, '');
      assertAnswered(result, 451, 300);
      assert.match(result.turns[0].prompt, /To answer the question: "", what is the region of interest/);
    });

    it('a 100,000-character question rejects with ERR_CONTEXT_FULL, not a silent truncation; the instance goes on', async () => {
      const question = 'Is there a cat on the mat, or a mat under the cat? '.repeat(2000);
      assert.equal(question.length, 102_000);
      await rejectsWithCode(cos.ask(CAT, question), 'ERR_CONTEXT_FULL', /context/);
      await rejectsWithCode(cos.baseline(CAT, question), 'ERR_CONTEXT_FULL', /context/);
      const after = await cos.ask(CAT, 'Short again?');
      const pair = await tinyLlavaFast();
      const fresh = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1 });
      try {
        assert.deepEqual(essence(await fresh.ask(CAT, 'Short again?')), essence(after));
      } finally {
        await fresh.dispose();
      }
    });

    it('unicode, emoji, control characters and a lone surrogate stay in the prompt as text', async () => {
      const question = 'Qu’est-ce que c’est ? 猫は何色？ Кто это? 🐈‍⬛🚀👍🏽 مرحبا \u0000\u0007\t\u202e \ud800 end';
      const result = await cos.ask(CAT, question);
      assertAnswered(result, 451, 300);
      // The lone surrogate cannot be UTF-8: it becomes U+FFFD on the way to the tokenizer.
      const expected = question.replace('\ud800', '\ufffd');
      assert.ok(result.turns[0].prompt.includes(question) || result.turns[0].prompt.includes(expected), result.turns[0].prompt);
      const tokens = cos.model.tokenize(`\nTo answer the question: "${question}", what is the region of interest in the image? ASSISTANT:`);
      assert.ok(!tokens.includes(cos.model.info.eos), 'no special token came from the text');
    });
  });

  describe('model output', () => {
    it('hostile region answers give a box inside the image, or the fallback', () => {
      const hostile = [
        '[−0.1, 0.2, 0.5, 0.6]', // U+2212 minus
        '[０.１, ０.２, ０.５, ０.６]', // full-width digits
        '[0.1, 0.2, 0.5, 0.6'.repeat(10_000),
        '[-1e999, 0, 1e999, 1]',
        '[1e-320, 1e-320, 5e-324, 1]',
        '[-0, -0, 0.5, 0.5]',
        '[9007199254740993, 0, 9007199254740995, 1]',
        '[0.1\u0000, 0.2, 0.5, 0.6]',
        '[0.3, 0.3, 0.3000000000000001, 0.3000000000000001]',
        '\ud800[0.1, 0.2, 0.5, 0.6]\udc00',
      ];
      for (const text of hostile) {
        for (const size of [undefined, { width: 3, height: 40_000 }, { width: 1, height: 1 }]) {
          const { box } = parseBoxOrFallback(text, size);
          for (const v of [box.left, box.top, box.right, box.bottom]) assert.ok(Number.isFinite(v) && v >= 0 && v <= 1, `${JSON.stringify(text.slice(0, 40))}: ${JSON.stringify(box)}`);
          assert.ok(box.left < box.right && box.top < box.bottom, `${JSON.stringify(text.slice(0, 40))}: ${JSON.stringify(box)}`);
        }
      }
    });
  });

  describe('aborts at each stage', () => {
    // LLaVA-1.5 geometry: a 576-token image takes long enough to encode that an abort lands inside it.
    let cos: ChainOfSpot;
    let reference: unknown;
    const QUESTION = 'What is on the table, and what colour is the cup next to the saucer and the spoon?';
    before(async () => {
      const pair = await tinyLlava();
      cos = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, threads: 1 });
      reference = essence(await cos.ask(COFFEE, QUESTION));
    });
    after(async () => cos?.dispose());

    /**
     * Asks with a signal that is aborted one event-loop turn after the session starts the stage's
     * native call (the `nth` call of `method`, 1-based), and checks the instance still gives the
     * reference answer afterwards. Returns whether the stage was still running when the abort came.
     */
    async function abortDuring(method: 'evaluateImage' | 'evaluate' | 'generate', nth: number, image: string, accept?: (args: unknown[]) => boolean): Promise<boolean> {
      const session = cos.session as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const original = session[method]!;
      const controller = new AbortController();
      let calls = 0;
      let runningWhenAborted = false;
      session[method] = function (this: unknown, ...args: unknown[]) {
        const promise = original.apply(cos.session, args);
        if ((accept?.(args) ?? true) && ++calls === nth) {
          let settled = false;
          promise.then(() => (settled = true), () => (settled = true));
          setImmediate(() => {
            runningWhenAborted = !settled;
            controller.abort(new Error(`abort during ${method}`));
          });
        }
        return promise;
      };
      try {
        // A fresh image each time, so that nothing is reused from the cache.
        await rejectsWithCode(cos.ask(image, QUESTION, { signal: controller.signal }), 'ERR_ABORTED');
      } finally {
        delete session[method];
      }
      assert.equal(calls >= nth, true, `the stage ran (${calls} calls of ${method})`);
      assert.deepEqual(essence(await cos.ask(COFFEE, QUESTION)), reference, 'the instance answers as before');
      return runningWhenAborted;
    }

    it('during image encoding: ERR_ABORTED, and the instance keeps working', async () => {
      assert.ok(await abortDuring('evaluateImage', 1, CAT), 'the abort came while the image was being encoded');
      await abortDuring('evaluateImage', 2, CAT); // the zoomed region, in turn two
    });

    it('during prompt evaluation: ERR_ABORTED, and the instance keeps working', async () => {
      // The question's chunk after the image (the longest text evaluated).
      await abortDuring('evaluate', 1, CAT, (args) => (args[0] as Int32Array).length > 20);
    });

    it('during generation: ERR_ABORTED, and the instance keeps working', async () => {
      await abortDuring('generate', 2, CAT);
    });

    it('while queued behind another question, and before it starts', async () => {
      const controller = new AbortController();
      const first = cos.ask(COFFEE, QUESTION);
      const queued = cos.ask(CAT, QUESTION, { signal: controller.signal });
      controller.abort();
      await rejectsWithCode(queued, 'ERR_ABORTED');
      assert.deepEqual(essence(await first), reference);
      await rejectsWithCode(cos.ask(CAT, QUESTION, { signal: AbortSignal.abort() }), 'ERR_ABORTED');
    });
  });

  describe('lifecycle, in child processes', () => {
    let pair: { model: string; mmproj: string };
    before(async () => {
      pair = await tinyLlavaFast();
    });
    const env = (): Record<string, string> => ({ COS_MODEL: pair.model, COS_MMPROJ: pair.mmproj, COS_IMAGE: CAT });

    it('16 concurrent asks with dispose() in the middle: every one settles, answered or ERR_DISPOSED', async function () {
      this.timeout(60_000);
      const outcome = await runScript(
        `
        const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
        (async () => {
          const cos = await ChainOfSpot.load({ model: process.env.COS_MODEL, mmproj: process.env.COS_MMPROJ, threads: 1 });
          let disposed;
          const outcomes = await Promise.all(Array.from({ length: 16 }, (_, i) =>
            cos.ask(process.env.COS_IMAGE, 'Question ' + i + '?', {
              // Dispose while the sixth question is generating its answer.
              onText: (_text, turn) => { if (i === 5 && turn === 2 && !disposed) disposed = cos.dispose(); },
            }).then(() => 'answered', (error) => error.code || String(error))));
          await disposed;
          let after;
          try { await cos.ask(process.env.COS_IMAGE, 'After?'); after = 'answered'; } catch (error) { after = error.code; }
          // The process is still sound: a new instance works.
          const again = await ChainOfSpot.load({ model: process.env.COS_MODEL, mmproj: process.env.COS_MMPROJ, threads: 1 });
          const answer = (await again.ask(process.env.COS_IMAGE, 'Fine?')).answer;
          await again.dispose();
          console.log('RESULT ' + JSON.stringify({ outcomes, after, answer }));
        })();`,
        [],
        { timeoutMs: 50_000, env: env() },
      );
      assertExited(outcome);
      const { outcomes, after, answer } = resultOf<{ outcomes: string[]; after: string; answer: string }>(outcome);
      assert.equal(outcomes.length, 16);
      assert.ok(outcomes.every((o) => o === 'answered' || o === 'ERR_DISPOSED'), outcomes.join());
      assert.deepEqual(outcomes.slice(0, 5), Array(5).fill('answered'), 'the questions before the dispose were answered');
      assert.deepEqual(outcomes.slice(6), Array(10).fill('ERR_DISPOSED'), 'the queued ones were not');
      assert.equal(after, 'ERR_DISPOSED');
      assert.equal(typeof answer, 'string');
    });

    it('returning from main without dispose(): the process exits promptly with code 0', async function () {
      this.timeout(60_000);
      const outcome = await runScript(
        `
        const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
        (async () => {
          const cos = await ChainOfSpot.load({ model: process.env.COS_MODEL, mmproj: process.env.COS_MMPROJ, threads: 1 });
          const session = await cos.model.createSession({ contextSize: 256, threads: 1 });
          await session.evaluate('Hello', { addBos: true });
          await cos.ask(process.env.COS_IMAGE, 'Leaving?');
          console.log('MARK answered');
        })();`,
        [],
        { timeoutMs: 30_000, env: env() },
      );
      assertExited(outcome, 0);
      const answered = outcome.marks.get('answered');
      assert.ok(answered !== undefined, describeChild(outcome));
      assert.ok(outcome.ms - answered < 3000, `exited ${Math.round(outcome.ms - answered)} ms after the answer`);
    });

    const exits: [string, string][] = [
      ['in a load progress callback', `await ChainOfSpot.load({ model: M, mmproj: P, threads: 1, onProgress: (p) => { if (p > 0 && p < 1) exit(); } });`],
      ['during image encoding', `const cos = await ChainOfSpot.load({ model: M, mmproj: P, threads: 1 });
          const original = cos.session.evaluateImage.bind(cos.session);
          cos.session.evaluateImage = (...args) => { const p = original(...args); setImmediate(exit); return p; };
          await cos.ask(I, 'Exit?');`],
      ['mid-generation', `const cos = await ChainOfSpot.load({ model: M, mmproj: P, threads: 1 });
          await cos.ask(I, 'Exit?', { onText: (_text, turn) => { if (turn === 2) exit(); } });`],
      ['with several sessions generating at once', `const cos = await ChainOfSpot.load({ model: M, mmproj: P, threads: 1 });
          const sessions = await Promise.all([1, 2, 3].map(() => cos.model.createSession({ contextSize: 256, threads: 1 })));
          await Promise.all(sessions.map((s) => s.evaluate('Once upon a time', { addBos: true })));
          sessions.forEach((s, i) => void s.generate({ maxTokens: 200, onText: () => { if (i === 2) exit(); } }));
          await new Promise(() => {});`],
    ];
    for (const [when, body] of exits) {
      it(`process.exit() ${when}: exit code 0, no signal`, async function () {
        this.timeout(60_000);
        const outcome = await runScript(
          `
          const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
          const M = process.env.COS_MODEL, P = process.env.COS_MMPROJ, I = process.env.COS_IMAGE;
          let exiting = false;
          const exit = () => { if (!exiting) { exiting = true; console.log('MARK exit'); process.exit(0); } };
          (async () => {
            ${body}
            console.log('MARK finished-without-exit');
          })();`,
          [],
          { timeoutMs: 30_000, env: env() },
        );
        assertExited(outcome, 0);
        assert.ok(outcome.marks.has('exit'), `process.exit was reached: ${describeChild(outcome)}`);
        assert.ok(outcome.ms - outcome.marks.get('exit')! < 3000, 'exited promptly');
      });
    }

    it('an uncaught exception mid-generation: exit code 1, no signal', async function () {
      this.timeout(60_000);
      const outcome = await runScript(
        `
        const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
        (async () => {
          const cos = await ChainOfSpot.load({ model: process.env.COS_MODEL, mmproj: process.env.COS_MMPROJ, threads: 1 });
          await cos.ask(process.env.COS_IMAGE, 'Throw?', { onText: () => setImmediate(() => { throw new Error('boom'); }) });
        })();`,
        [],
        { timeoutMs: 30_000, env: env() },
      );
      assertExited(outcome, 1);
      assert.match(outcome.stderr, /Error: boom/);
    });
  });
});
