/**
 * The procedure on the chat-template families (lib/procedure/families/), end to end through
 * ChainOfSpot on the tiny random pairs: the family is detected from the projector, the prompts are
 * the model's own chat template, turn one's box is read in the family's frame, the cache holds
 * turn one for turn two, and each image's tokens (and Qwen-VL's grid) are the ones mtmd reports.
 * Images are sized so that every expected value is worked out by hand: whole merged patches for
 * Qwen-VL (the frame is the image), whole tiles for InternVL, a centred strip for Gemma 3.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import { ensureTinyLlava } from '../../lib/models/tiny-model';
import { ensureTinyGemma3 } from '../../lib/models/tiny-gemma3';
import { ensureTinyInternVl } from '../../lib/models/tiny-internvl';
import { BOX_PATTERN } from '../../lib/procedure/box';
import { ensureTinyQwen25Vl, ensureTinyQwen3Vl } from '../../lib/models/tiny-qwen-vl';
import { ChainOfSpotError } from '../../lib/common/errors';
import { zoomRegion } from '../../lib/image/image';
import { CONVERSATION_TOLERANCE, maxRelativeDifference } from '../support/logits';
import { MODEL_CACHE } from '../support/models';
import { base, rewritten } from '../unit/gguf-cases';
import { gguf } from '../../lib/gguf/writer';

function gradient(width: number, height: number): { data: Buffer; width: number; height: number; channels: 3 } {
  const data = Buffer.alloc(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    data[i * 3] = (i * 7) % 256;
    data[i * 3 + 1] = (i * 13) % 256;
    data[i * 3 + 2] = (i * 29) % 256;
  }
  return { data, width, height, channels: 3 };
}

/** The four numbers after `marker` in a box answer, read independently of the family's reader. */
function numbersAfter(text: string, marker: string): number[] {
  const start = text.indexOf(marker) + marker.length;
  return text.slice(start, text.indexOf(']', start)).split(',').map((value) => Number(value.trim()));
}

/** A box written in frame units as fractions of the image (`x` and `y` map one number), corners ordered, clamped. */
function expectedBox(numbers: number[], x: (value: number) => number, y: (value: number) => number): { left: number; top: number; right: number; bottom: number } {
  const clamp = (value: number): number => Math.min(1, Math.max(0, value));
  const [x1, y1, x2, y2] = numbers as [number, number, number, number];
  const box = { left: clamp(x(Math.min(x1, x2))), top: clamp(y(Math.min(y1, y2))), right: clamp(x(Math.max(x1, x2))), bottom: clamp(y(Math.max(y1, y2))) };
  return box.right > box.left && box.bottom > box.top ? box : { left: 0, top: 0, right: 1, bottom: 1 };
}

/** ChatML's turn markers (Qwen-VL, InternVL). */
const CHATML = { end: '<|im_end|>\n', user: '<|im_start|>user\n', assistant: '<|im_start|>assistant\n' };

const QWEN_ROI = (question: string): string => `To answer the question: "${question}", locate the region of interest in the image and output its bbox coordinates in JSON format.`;
const QWEN_BOX = /^\{"bbox_2d": \[\d+, \d+, \d+, \d+\], "label": "[^"]*"\}$/u;

const CASES = [
  {
    family: 'qwen2.5-vl',
    files: () => ensureTinyQwen25Vl(MODEL_CACHE),
    // 196 x 112 pixels are 7 x 4 tokens of 28 pixels (14-pixel patches merged 2 x 2): 28 tokens.
    image: gradient(196, 112),
    seen: [{ tokens: 28, grid: { width: 7, height: 4 } }],
    // The same bytes as 112 x 196: 4 x 7 tokens.
    seenTurned: [{ tokens: 28, grid: { width: 4, height: 7 } }],
    // Qwen2.5-VL's boxes are in pixels of the frame.
    box: { pattern: QWEN_BOX, marker: '"bbox_2d": [', x: (v: number) => v / 196, y: (v: number) => v / 112 },
    turn: CHATML,
    // The region enlarged to the area the whole image was seen at.
    zoomPixels: 196 * 112,
    // The template's default system message, then the user's turn.
    opening: '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n',
    roi: QWEN_ROI,
    answer: (question: string): [string, string] => ['The region of interest in the image is ', `. Answer the question: "${question}"`],
    baseline: (question: string): string => `<|im_start|>user\n<image>${question}<|im_end|>\n`,
  },
  {
    family: 'qwen3-vl',
    files: () => ensureTinyQwen3Vl(MODEL_CACHE),
    // 192 x 128 pixels are 6 x 4 tokens of 32 pixels (16-pixel patches merged 2 x 2): 24 tokens.
    image: gradient(192, 128),
    seen: [{ tokens: 24, grid: { width: 6, height: 4 } }],
    seenTurned: [{ tokens: 24, grid: { width: 4, height: 6 } }],
    // Qwen3-VL's boxes are in thousandths of the frame.
    box: { pattern: QWEN_BOX, marker: '"bbox_2d": [', x: (v: number) => v / 1000, y: (v: number) => v / 1000 },
    turn: CHATML,
    zoomPixels: 192 * 128,
    // Qwen3-VL's template has no default system message.
    opening: '<|im_start|>user\n',
    roi: QWEN_ROI,
    answer: (question: string): [string, string] => ['The region of interest in the image is ', `. Answer the question: "${question}"`],
    baseline: (question: string): string => `<|im_start|>user\n<image>${question}<|im_end|>\n`,
  },
  {
    family: 'internvl',
    files: () => ensureTinyInternVl(MODEL_CACHE),
    // 150 x 90 pixels: 3 x 2 tiles of 56 pixels and the overview, 4 tokens each (the tiny pair's
    // test/native/tiny-internvl.test.ts works the grid out); no 2-D positions, so no grid.
    image: gradient(150, 90),
    seen: [{ tokens: 28, grid: undefined }],
    // 90 x 150: 2 x 3 tiles and the overview.
    seenTurned: [{ tokens: 28, grid: undefined }],
    // InternVL's boxes are in thousandths of the original image.
    box: { pattern: /^<ref>[^<\n]*<\/ref><box>\[\[\d+, \d+, \d+, \d+\]\]<\/box>$/u, marker: '<box>[[', x: (v: number) => v / 1000, y: (v: number) => v / 1000 },
    turn: CHATML,
    zoomPixels: 150 * 90,
    opening: '<|im_start|>system\nYou are an AI assistant that answers questions about images.<|im_end|>\n<|im_start|>user\n',
    roi: (question: string): string => `\nTo answer the question: "${question}", please provide the bounding box coordinate of the region of interest in the image.`,
    answer: (question: string): [string, string] => ['The region of interest in the image is ', `\nAnswer the question: "${question}"`],
    baseline: (question: string): string => `<|im_start|>user\n<image>\n${question}<|im_end|>\n`,
  },
  {
    family: 'gemma3',
    files: () => ensureTinyGemma3(MODEL_CACHE),
    // One fixed-size image of 16 tokens (224-pixel square, 14-pixel patches pooled 4 x 4).
    image: gradient(224, 112),
    seen: [{ tokens: 16, grid: undefined }],
    seenTurned: [{ tokens: 16, grid: undefined }],
    // LLaVA's box format, fractions of the square mtmd fits the image into: 224 x 112 lies at
    // rows 56 to 168 of the 224 square (scale 1, centred).
    box: { pattern: BOX_PATTERN, marker: '[', x: (v: number) => v, y: (v: number) => (v * 224 - 56) / 112 },
    turn: { end: '<end_of_turn>\n', user: '<start_of_turn>user\n', assistant: '<start_of_turn>model\n' },
    // A fixed-size encoder resizes what it is given: the crop as it is.
    zoomPixels: 0,
    // The template writes BOS itself.
    opening: '<bos><start_of_turn>user\n',
    roi: (question: string): string =>
      `\nTo answer the question: "${question}", what is the region of interest in the image? Answer with its box [left, top, right, bottom], each a fraction of the image from 0 to 1.`,
    answer: (question: string): [string, string] => ['The region of interest in the image is ', `\nAnswer the question: "${question}"`],
    baseline: (question: string): string => `<start_of_turn>user\n<image>\n${question}<end_of_turn>\n`,
  },
] as const;

describe('model families: Chain-of-Spot on the tiny Qwen-VL, InternVL and Gemma 3 pairs', function () {
  this.timeout(300_000);

  for (const c of CASES) {
    describe(c.family, () => {
      let cos: ChainOfSpot;
      before(async () => {
        const files = await c.files();
        cos = await ChainOfSpot.load({ ...files, threads: 2 });
      });
      after(async () => cos?.dispose());

      it('is detected from the projector', () => {
        assert.equal(cos.family, c.family);
      });

      it("asks in the chat template, reads the family's box in its frame and zooms into it", async () => {
        const result = await cos.ask(c.image, 'what is here?', { maxTokens: 4 });
        const [one, two] = result.turns;
        assert.ok(one.prompt.startsWith(c.opening), one.prompt);
        assert.ok(one.prompt.endsWith(`<image>${c.roi('what is here?')}${c.turn.end}${c.turn.assistant}`), one.prompt);
        // The box grammar forces the family's format.
        assert.match(one.text, c.box.pattern);
        assert.deepEqual(one.images, c.seen);
        // Within rounding: the frame's units pass through frame pixels to fractions of the image.
        const expected = expectedBox(numbersAfter(one.text, c.box.marker), c.box.x, c.box.y);
        for (const side of ['left', 'top', 'right', 'bottom'] as const) {
          assert.ok(Math.abs(result.roi.box[side] - expected[side]) < 1e-9, `${side}: ${JSON.stringify(result.roi.box)} vs ${JSON.stringify(expected)}`);
        }
        // Turn two continues the conversation: the end of turn one, then a user turn with the region.
        const [before, after] = c.answer('what is here?');
        assert.equal(two.prompt, `${c.turn.end}${c.turn.user}${before}<image>${after}${c.turn.end}${c.turn.assistant}`);
        assert.equal(two.images.length, 1);
        assert.ok(two.images[0]!.tokens >= 4);
      });

      it("turn two's logits equal those of the whole conversation evaluated from scratch", async () => {
        const question = 'where is the edge?';
        const result = await cos.ask(c.image, question, { maxTokens: 4 });
        const [one, two] = result.turns;
        const { model, session, projector } = cos;
        const template = (text: string): number[] => [...model.tokenize(text, { parseSpecial: true })];
        const text = (value: string): number[] => [...model.tokenize(value)];
        const assistant = c.turn.end + c.turn.assistant;

        // The ask's own cache, back to the end of turn two's prompt: its last token again.
        const endOfPrompt = session.position() - two.generatedTokens;
        await session.truncate(endOfPrompt - 1);
        await session.evaluate(Int32Array.from(template(assistant).slice(-1)));
        const kept = await session.logits();

        // The conversation written out by hand in the family's turns: template text with its special tokens,
        // the user's text as plain text, each piece tokenized on its own; the image as given (these
        // families pass it to mtmd unchanged), the region enlarged to the image's own area.
        const fresh = await model.createSession({ contextSize: 4096 });
        try {
          await fresh.evaluate(Int32Array.from(template(c.opening)));
          await fresh.evaluateImage(projector, c.image);
          const [before, after] = c.answer(question);
          await fresh.evaluate(Int32Array.from([...text(c.roi(question)), ...template(assistant), ...one.tokens, ...template(c.turn.end + c.turn.user), ...text(before)]));
          await fresh.evaluateImage(projector, await zoomRegion(c.image, result.roi.box, c.zoomPixels));
          await fresh.evaluate(Int32Array.from([...text(after), ...template(assistant)]));
          assert.equal(fresh.position(), endOfPrompt);
          const difference = maxRelativeDifference(kept!, (await fresh.logits())!);
          assert.ok(difference < CONVERSATION_TOLERANCE, `logits differ by ${difference}`);
        } finally {
          await fresh.dispose();
        }
      });

      it('open: further questions on an opened image reuse its prefix, and report how the model saw it', async () => {
        const photo = await cos.open(c.image);
        await cos.ask(photo, 'first?', { maxTokens: 2 });
        const second = await cos.ask(photo, 'second?', { maxTokens: 2 });
        assert.equal(second.prefixReused, true);
        assert.deepEqual(second.turns[0].images, c.seen);
      });

      it('the same bytes in another shape are another image, not a reused prefix', async () => {
        await cos.ask(c.image, 'first?', { maxTokens: 2 });
        const turned = { ...c.image, width: c.image.height, height: c.image.width };
        const result = await cos.ask(turned, 'first?', { maxTokens: 2 });
        assert.equal(result.prefixReused, false);
        assert.deepEqual(result.turns[0].images, c.seenTurned);
      });

      it('baseline: one plain turn in the chat template', async () => {
        const plain = await cos.baseline(c.image, 'what is here?', { maxTokens: 3 });
        assert.ok(plain.turn.prompt.endsWith(`${c.baseline('what is here?')}${c.turn.assistant}`), plain.turn.prompt);
        assert.ok(plain.turn.prompt.startsWith(c.opening.slice(0, c.opening.indexOf(c.turn.user))), plain.turn.prompt);
        assert.deepEqual(plain.turn.images, c.seen);
        assert.ok(plain.turn.generatedTokens > 0 && plain.turn.generatedTokens <= 3);
      });

      it('parallel: two questions at once, each on its own image, as asked one at a time', async () => {
        // The same bytes in two shapes: a lane that saw the other's image would show it (Qwen-VL's
        // grid, and the answers).
        const turned = { ...c.image, width: c.image.height, height: c.image.width };
        const questions = [[c.image, 'left?'], [turned, 'right?']] as const;
        const sequential = [];
        for (const [image, question] of questions) sequential.push(await cos.ask(image, question, { maxTokens: 4 }));
        const together = await ChainOfSpot.load({ ...(await c.files()), threads: 2, parallel: 2 });
        try {
          const results = await Promise.all(questions.map(([image, question]) => together.ask(image, question, { maxTokens: 4 })));
          assert.deepEqual(results.map((r) => r.turns[0].images), [c.seen, c.seenTurned]);
          for (const [i, result] of results.entries()) {
            assert.equal(result.turns[0].prompt, sequential[i]!.turns[0].prompt);
            assert.equal(result.turns[0].text, sequential[i]!.turns[0].text, `question ${i}: turn one`);
            assert.deepEqual(result.roi, sequential[i]!.roi);
            assert.equal(result.answer, sequential[i]!.answer, `question ${i}: the answer`);
          }
        } finally {
          await together.dispose();
        }
      });

      it('refuses reference mode, which is the authors\' LLaVA-1.5 code', () => {
        assert.throws(() => cos.ask(c.image, 'what?', { reference: true }), RangeError);
      });
    });
  }

  it('imageMinTokens and imageMaxTokens bound the tokens of a Qwen-VL image, and the default context follows the maximum', async () => {
    const files = await ensureTinyQwen25Vl(MODEL_CACHE);
    const image = gradient(196, 112); // 7 x 4 tokens within the model's own limits
    // At least 64 tokens (50,176 pixels): scaled by sqrt(50176 / 21952) = 1.512, sides rounded up
    // to 28: 296.3 -> 308 (11), 169.3 -> 196 (7), 77 tokens.
    const more = await ChainOfSpot.load({ ...files, threads: 2, imageMinTokens: 64 });
    try {
      assert.deepEqual((await more.ask(image, 'q', { maxTokens: 1 })).turns[0].images, [{ tokens: 77, grid: { width: 11, height: 7 } }]);
    } finally {
      await more.dispose();
    }
    // At most 16 tokens (12,544 pixels): scaled by 1 / sqrt(21952 / 12544) = 1 / 1.3229, sides
    // rounded down to 28: 148.2 -> 140 (5), 84.7 -> 84 (3), 15 tokens.
    const fewer = await ChainOfSpot.load({ ...files, threads: 2, imageMaxTokens: 16 });
    try {
      assert.deepEqual((await fewer.ask(image, 'q', { maxTokens: 1 })).turns[0].images, [{ tokens: 15, grid: { width: 5, height: 3 } }]);
      // Two images of at most 16 tokens, two answers and the prompts' room: (32 + 256 + 512) rounded up to 256.
      assert.equal(fewer.session.info.contextSize, 1024);
    } finally {
      await fewer.dispose();
    }
    await assert.rejects(ChainOfSpot.load({ ...files, imageMinTokens: 64, imageMaxTokens: 16 }), /imageMinTokens \(64\) must not exceed imageMaxTokens \(16\)/);
    await assert.rejects(ChainOfSpot.load({ ...files, imageMinTokens: 0 }), RangeError);
  });

  it("a projector with another family's text model: ERR_PROJECTOR_MISMATCH, naming the projector", async () => {
    const [llava, qwen25, qwen3, internvl, gemma3] = await Promise.all([ensureTinyLlava(MODEL_CACHE), ensureTinyQwen25Vl(MODEL_CACHE), ensureTinyQwen3Vl(MODEL_CACHE), ensureTinyInternVl(MODEL_CACHE), ensureTinyGemma3(MODEL_CACHE)]);
    const pairs = [[llava, qwen25], [qwen25, internvl], [internvl, gemma3], [gemma3, qwen3], [qwen3, llava]] as const;
    for (const [text, projector] of pairs) {
      await assert.rejects(ChainOfSpot.load({ model: text.model, mmproj: projector.mmproj, threads: 2 }), (error: unknown) => {
        assert.ok(error instanceof ChainOfSpotError && error.code === 'ERR_PROJECTOR_MISMATCH', `${text.model} with ${projector.mmproj}: ${String(error)}`);
        assert.ok(error.message.includes(projector.mmproj), error.message);
        return true;
      });
    }
  });

  it("a chat template that renders turn one differently once the conversation goes on fails the load (ERR_MODEL_LOAD), not the first question", async () => {
    const qwen = await ensureTinyQwen25Vl(MODEL_CACHE);
    // It writes how many messages there are first, so turn one's prompt changes when turn two comes.
    const rewriting = "{{- messages | length -}}{%- for m in messages -%}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor -%}{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}";
    const dir = await mkdtemp(path.join(tmpdir(), 'cos-families-'));
    try {
      const model = path.join(dir, 'rewriting.gguf');
      await writeFile(model, await rewritten(await base(qwen.model), { set: [['tokenizer.chat_template', gguf.str(rewriting)]] }));
      await assert.rejects(ChainOfSpot.load({ model, mmproj: qwen.mmproj, threads: 2 }), (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_MODEL_LOAD' && /renders the first turn differently/.test(error.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('family names the files\' family without the check: a LLaVA pair taken as Qwen2.5-VL has no chat template, ERR_MODEL_LOAD', async () => {
    const llava = await ensureTinyLlava(MODEL_CACHE);
    await assert.rejects(ChainOfSpot.load({ ...llava, family: 'qwen2.5-vl', threads: 2 }), (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_MODEL_LOAD' && /needs a chat template/.test(error.message));
  });
});
