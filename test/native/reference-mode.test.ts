import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import sharp from 'sharp';

import { BOX_PATTERN, parseBoxOrFallback, parseReferenceBoxOrFallback } from '../../lib/procedure/box';
import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { AskOptions, AskResult } from '../../lib/procedure/types';
import { encodePng, loadImage, PAD_COLOUR, prepareOriginal, prepareReferenceRegion, prepareRegion } from '../../lib/image/image';
import type { RgbImage } from '../../lib/common/rgb-image';
import { tinyLlavaFast } from '../support/models';
import { FIXTURE_IMAGES } from '../support/paths';

const CAT = path.join(FIXTURE_IMAGES, 'chelsea.png'); // 451x300, no EXIF orientation

/** What an ask saw and decided, without timings. */
function essence(result: AskResult): unknown {
  return { roi: result.roi, roiImage: result.roiImage, turns: result.turns.map((turn) => [turn.prompt, turn.text, Array.from(turn.tokens)]) };
}

/** Turn one cut to one token: no box can be read from it in either mode, so turn two zooms into the whole image. */
const WHOLE_IMAGE: AskOptions = { grammar: false, roiMaxTokens: 1, maxTokens: 1, includeRoiImage: true };

describe('ChainOfSpot reference mode', () => {
  let cos: ChainOfSpot;
  let size: number;
  /** The cat stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view). */
  let sideways: Buffer;
  let stored: RgbImage;
  let upright: RgbImage;

  before(async () => {
    const pair = await tinyLlavaFast();
    cos = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj });
    size = cos.projector.info.imageSize;
    sideways = await sharp(await readFile(CAT)).png().withMetadata({ orientation: 6 }).toBuffer();
    stored = await loadImage(sideways, { applyOrientation: false });
    upright = await loadImage(sideways);
  });
  after(async () => cos.dispose());

  it('both ways: the grammar is off in reference mode unless asked for, on by default otherwise', async () => {
    const plain = await cos.ask(CAT, 'What is it?', { roiMaxTokens: 24, maxTokens: 1 });
    assert.match(plain.turns[0].text, BOX_PATTERN);
    assert.ok(plain.turns[0].decodeSteps < plain.turns[0].generatedTokens, 'the grammar forced some tokens');

    const reference = await cos.ask(CAT, 'What is it?', { reference: true, roiMaxTokens: 24, maxTokens: 1 });
    const free = await cos.ask(CAT, 'What is it?', { grammar: false, roiMaxTokens: 24, maxTokens: 1 });
    assert.deepEqual(reference.turns[0].tokens, free.turns[0].tokens);
    // A step per token after the first (sampled from the prompt's logits): nothing forced.
    assert.equal(reference.turns[0].decodeSteps, reference.turns[0].generatedTokens - 1, 'no grammar');

    const constrained = await cos.ask(CAT, 'What is it?', { reference: true, grammar: true, roiMaxTokens: 24, maxTokens: 1 });
    assert.deepEqual(constrained.turns[0].tokens, plain.turns[0].tokens, 'grammar: true overrides the reference default');
  });

  it('both ways: each mode reads and zooms the same box its own way (the zoomed region compared bit for bit)', async () => {
    const image = await loadImage(CAT);
    const whole = await encodePng(await prepareOriginal(image, size));
    const seen = new Set<string>();
    // With the tiny model's weights these give an ordered box, a reversed one and one of no height.
    for (const question of ['Where is the cat looking?', 'What is it?', 'Is the cat asleep?']) {
      // The grammar in both modes, so turn one's text is the same box in the reference format.
      const plain = await cos.ask(CAT, question, { includeRoiImage: true, maxTokens: 1 });
      const reference = await cos.ask(CAT, question, { reference: true, grammar: true, includeRoiImage: true, maxTokens: 1 });
      const text = plain.turns[0].text;
      assert.equal(reference.turns[0].text, text);

      const lenient = parseBoxOrFallback(text, image);
      assert.deepEqual([plain.roi.box, plain.roi.source], [lenient.box, lenient.source], question);
      assert.deepEqual(plain.roiImage, await encodePng(await prepareRegion(image, lenient.box, size)), question);

      const strict = parseReferenceBoxOrFallback(text, image);
      assert.deepEqual([reference.roi.box, reference.roi.source], [strict.box, strict.source], question);
      assert.deepEqual(reference.roiImage, await encodePng(await prepareReferenceRegion(image, strict.box, size)), question);

      const [left, top, right, bottom] = JSON.parse(text) as number[];
      if (right! < left! || bottom! < top!) {
        seen.add('reversed');
        assert.equal(reference.roi.source, 'fallback', `${question}: Pillow raises, the reference zooms into the whole image`);
        assert.deepEqual(reference.roiImage, whole);
        assert.equal(plain.roi.source, 'model', `${question}: the corners are swapped`);
        assert.notDeepEqual(plain.roiImage, whole);
      } else if (right === left || bottom === top) {
        seen.add('empty');
        assert.equal(reference.roi.source, 'model');
        assert.deepEqual(reference.roiImage, await encodePng({ data: Buffer.alloc(size * size * 3).fill(Buffer.from(PAD_COLOUR)), width: size, height: size }), `${question}: a flat image`);
        assert.equal(plain.roi.source, 'fallback', `${question}: no area, the whole image`);
        assert.deepEqual(plain.roiImage, whole);
      } else {
        seen.add('ordered');
        assert.deepEqual(reference.roiImage, plain.roiImage, `${question}: the same zoom`);
      }
    }
    assert.deepEqual([...seen].sort(), ['empty', 'ordered', 'reversed'], "the tiny model's boxes changed: pick questions that give these kinds again");
  });

  it('without the grammar a free answer the reference cannot read zooms into the whole image', async () => {
    const result = await cos.ask(CAT, 'What is it?', { reference: true, roiMaxTokens: 12, maxTokens: 1, includeRoiImage: true });
    const strict = parseReferenceBoxOrFallback(result.turns[0].text, { width: 451, height: 300 });
    assert.deepEqual([result.roi.box, result.roi.source], [strict.box, strict.source]);
    if (strict.source === 'fallback') {
      assert.deepEqual(result.roi.pixels, { left: 0, top: 0, right: 451, bottom: 300 });
      assert.deepEqual(result.roiImage, await encodePng(await prepareOriginal(await loadImage(CAT), size)));
    }
  });

  it('both ways: EXIF orientation is applied by default and ignored in reference mode', async () => {
    assert.deepEqual([stored.width, stored.height, upright.width, upright.height], [451, 300, 300, 451]);
    const plain = await cos.ask(sideways, 'What is it?', WHOLE_IMAGE);
    const reference = await cos.ask(sideways, 'What is it?', { ...WHOLE_IMAGE, reference: true });
    assert.equal(plain.roi.source, 'fallback');
    assert.equal(reference.roi.source, 'fallback');
    assert.deepEqual(plain.roi.pixels, { left: 0, top: 0, right: 300, bottom: 451 });
    assert.deepEqual(reference.roi.pixels, { left: 0, top: 0, right: 451, bottom: 300 });
    assert.deepEqual(plain.roiImage, await encodePng(await prepareOriginal(upright, size)));
    assert.deepEqual(reference.roiImage, await encodePng(await prepareOriginal(stored, size)));
    assert.notDeepEqual(plain.roiImage, reference.roiImage);
    // The reference's view of the sideways file is the cat as its pixels are stored: the plain cat file.
    assert.deepEqual(essence(reference), essence(await cos.ask(CAT, 'What is it?', { ...WHOLE_IMAGE, reference: true })));
  });

  it('an opened image answers in either mode as the file does, whichever mode it was opened in', async () => {
    const question = 'Is it a cat?';
    const expected = {
      plain: essence(await cos.ask(sideways, question, WHOLE_IMAGE)),
      reference: essence(await cos.ask(sideways, question, { ...WHOLE_IMAGE, reference: true })),
    };
    for (const openedInReference of [false, true]) {
      const opened = await cos.open(sideways, { reference: openedInReference });
      assert.deepEqual([opened.width, opened.height], openedInReference ? [451, 300] : [300, 451]);
      for (const reference of [false, true]) {
        const result = await cos.ask(opened, question, { ...WHOLE_IMAGE, reference });
        assert.deepEqual(essence(result), reference ? expected.reference : expected.plain, `opened ${openedInReference}, asked ${reference}`);
      }
    }
  });

  it('the prefix in the cache is not shared between the modes of a rotated image', async () => {
    await cos.ask(sideways, 'First?', WHOLE_IMAGE);
    assert.equal((await cos.baseline(sideways, 'Again?', { maxTokens: 2 })).prefixReused, true);
    assert.equal((await cos.baseline(sideways, 'Reference?', { maxTokens: 2, reference: true })).prefixReused, false);
    assert.equal((await cos.ask(sideways, 'Reference again?', { ...WHOLE_IMAGE, reference: true })).prefixReused, true);
    // Without an orientation both modes see the same image and share the prefix.
    await cos.ask(CAT, 'Plain?', WHOLE_IMAGE);
    assert.equal((await cos.ask(CAT, 'Reference?', { ...WHOLE_IMAGE, reference: true })).prefixReused, true);
  });

  it('the load option sets the default, and ask, baseline and open override it', async () => {
    const pair = await tinyLlavaFast();
    const referenceCos = await ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, reference: true });
    try {
      const byDefault = await referenceCos.ask(sideways, 'What is it?', WHOLE_IMAGE);
      assert.deepEqual(essence(byDefault), essence(await cos.ask(sideways, 'What is it?', { ...WHOLE_IMAGE, reference: true })));
      const overridden = await referenceCos.ask(sideways, 'What is it?', { ...WHOLE_IMAGE, reference: false });
      assert.deepEqual(essence(overridden), essence(await cos.ask(sideways, 'What is it?', WHOLE_IMAGE)));
      const free = await referenceCos.ask(CAT, 'What is it?', { roiMaxTokens: 8, maxTokens: 1 });
      assert.equal(free.turns[0].decodeSteps, free.turns[0].generatedTokens - 1, 'no grammar by default');
      assert.deepEqual(await referenceCos.open(sideways), { width: 451, height: 300 });
      assert.deepEqual(await referenceCos.open(sideways, { reference: false }), { width: 300, height: 451 });
      const baseline = await referenceCos.baseline(sideways, 'What is it?', { maxTokens: 3 });
      assert.deepEqual(baseline.turn.tokens, (await cos.baseline(sideways, 'What is it?', { maxTokens: 3, reference: true })).turn.tokens);
    } finally {
      await referenceCos.dispose();
    }
    await assert.rejects(ChainOfSpot.load({ model: pair.model, mmproj: pair.mmproj, reference: 'yes' as unknown as boolean }), TypeError);
  });

  it('validates the option', async () => {
    assert.throws(() => cos.ask(CAT, 'q', { reference: 1 as unknown as boolean }), TypeError);
    assert.throws(() => cos.baseline(CAT, 'q', { reference: 'no' as unknown as boolean }), TypeError);
    await assert.rejects(cos.open(CAT, { reference: null as unknown as boolean }), TypeError);
  });
});
