import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../../lib/common/rgb-image';
import { paddedSquare, type Box } from '../../lib/image/geometry';
import { ChainOfSpotError } from '../../lib/common/errors';
import {
  boxToPixels,
  cropRect,
  encodePng,
  loadImage,
  loadImageWithOrientation,
  PAD_COLOUR,
  prepareOriginal,
  prepareRegion,
} from '../../lib/image/image';
import { FIXTURE_IMAGES } from '../support/paths';
import { patterned } from '../support/images';

const image = (name: string): string => path.join(FIXTURE_IMAGES, name);
const box = (left: number, top: number, right: number, bottom: number): Box => ({ left, top, right, bottom });
const BLACK = [0, 0, 0];
const PAD = [...PAD_COLOUR];

/** A synthetic RGB image whose pixel (x, y) is [10 + x, 100 + y, 200]: every position is recognisable. */
function synthetic(width: number, height: number): RgbImage {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([10 + x, 100 + y, 200], (y * width + x) * 3);
  }
  return { data, width, height };
}

/** The image's pixels as rows of [r, g, b], for whole-image comparisons that print readably. */
function rows(img: RgbImage): number[][][] {
  return Array.from({ length: img.height }, (_, y) =>
    Array.from({ length: img.width }, (_, x) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)]));
}

const px = (x: number, y: number): number[] => [10 + x, 100 + y, 200];

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function rejectsWithImageError(promise: Promise<unknown>, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ChainOfSpotError, `not a ChainOfSpotError: ${String(error)}`);
    assert.equal(error.code, 'ERR_IMAGE');
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe('image', () => {
  describe('crop maths', () => {
    it('paddedSquare is re-exported for the crop', () => {
      assert.deepEqual(paddedSquare(451, 300), { side: 451, left: 0, top: 75 });
    });

    it('cropRect rounds side * coordinate half to even, as PIL crop does', () => {
      // 10 * 0.25 = 2.5 -> 2, 10 * 0.15 = 1.5 -> 2, 10 * 0.75 = 7.5 -> 8, 10 * 0.45 = 4.5 -> 4
      assert.deepEqual(cropRect(box(0.25, 0.15, 0.75, 0.45), 10), { left: 2, top: 2, right: 8, bottom: 4 });
      // 4 * 0.125 = 0.5 -> 0, 4 * 0.375 = 1.5 -> 2, 4 * 0.625 = 2.5 -> 2, 4 * 0.875 = 3.5 -> 4
      assert.deepEqual(cropRect(box(0.125, 0.375, 0.625, 0.875), 4), { left: 0, top: 2, right: 2, bottom: 4 });
      // 640 * 0.072 = 46.08 -> 46, 640 * 0.586 = 375.04 -> 375
      assert.deepEqual(cropRect(box(0, 0.072, 0.586, 1), 640), { left: 0, top: 46, right: 375, bottom: 640 });
    });

    it('cropRect: the full box is the whole padded square', () => {
      assert.deepEqual(cropRect(box(0, 0, 1, 1), 451), { left: 0, top: 0, right: 451, bottom: 451 });
    });

    it('cropRect: a reversed box is read with its corners swapped', () => {
      assert.deepEqual(cropRect(box(0.75, 0.6, 0.25, 0.2), 10), cropRect(box(0.25, 0.2, 0.75, 0.6), 10));
      assert.deepEqual(cropRect(box(0.75, 0.6, 0.25, 0.2), 10), { left: 2, top: 2, right: 8, bottom: 6 });
    });

    it('cropRect: a box reaching outside the padded square keeps its outside part', () => {
      assert.deepEqual(cropRect(box(-0.25, -0.5, 1.25, 2), 8), { left: -2, top: -4, right: 10, bottom: 16 });
    });

    it('cropRect: a box that rounds to nothing becomes one pixel, inside the square', () => {
      assert.deepEqual(cropRect(box(0.5, 0.5, 0.5, 0.5), 10), { left: 5, top: 5, right: 6, bottom: 6 });
      assert.deepEqual(cropRect(box(0.51, 0.2, 0.54, 0.6), 10), { left: 5, top: 2, right: 6, bottom: 6 }); // 5.1 and 5.4 both round to 5
      assert.deepEqual(cropRect(box(1, 1, 1, 1), 10), { left: 9, top: 9, right: 10, bottom: 10 });
      assert.deepEqual(cropRect(box(0, 0, 0, 0), 10), { left: 0, top: 0, right: 1, bottom: 1 });
    });

    it('cropRect rejects bad arguments', () => {
      assert.throws(() => cropRect(box(NaN, 0, 1, 1), 10), RangeError);
      assert.throws(() => cropRect(box(0, 0, Infinity, 1), 10), RangeError);
      assert.throws(() => cropRect(box(0, 0, 2.5, 1), 10), RangeError);
      assert.throws(() => cropRect(box(-1.5, 0, 1, 1), 10), RangeError);
      assert.throws(() => cropRect(box(0, 0, 1, 1), 0), RangeError);
      assert.throws(() => cropRect(box(0, 0, 1, 1), 10.5), RangeError);
      assert.throws(() => cropRect({ left: 0, top: 0, right: '1', bottom: 1 } as unknown as Box, 10), TypeError);
    });

    it('boxToPixels: landscape, in the original image, clamped', () => {
      // 8x4: square 8, image at top 2. Box rows 2..6 of the square are image rows 0..4.
      assert.deepEqual(boxToPixels(box(0.25, 0.25, 0.75, 0.75), 8, 4), { left: 2, top: 0, right: 6, bottom: 4 });
      assert.deepEqual(boxToPixels(box(0, 0, 1, 1), 8, 4), { left: 0, top: 0, right: 8, bottom: 4 });
      assert.deepEqual(boxToPixels(box(0, 0.375, 0.5, 0.625), 8, 4), { left: 0, top: 1, right: 4, bottom: 3 });
    });

    it('boxToPixels: portrait, square, and a box wholly in the padding', () => {
      // 4x8: square 8, image at left 2.
      assert.deepEqual(boxToPixels(box(0.25, 0.25, 0.75, 0.75), 4, 8), { left: 0, top: 2, right: 4, bottom: 6 });
      assert.deepEqual(boxToPixels(box(0.375, 0, 0.5, 0.125), 4, 8), { left: 1, top: 0, right: 2, bottom: 1 });
      assert.deepEqual(boxToPixels(box(0.1, 0.2, 0.3, 0.4), 10, 10), { left: 1, top: 2, right: 3, bottom: 4 });
      assert.deepEqual(boxToPixels(box(0, 0, 1, 0.125), 8, 4), { left: 0, top: 0, right: 8, bottom: 0 });
      assert.throws(() => boxToPixels(box(0, 0, 1, 1), 0, 4), RangeError);
    });
  });

  describe('padding and cropping pixels', () => {
    it('prepareOriginal pads a landscape image centred on the mean colour', async () => {
      const out = await prepareOriginal(synthetic(4, 2), 4); // square 4 == size: no resize, exact pixels
      assert.deepEqual(rows(out), [
        [PAD, PAD, PAD, PAD],
        [px(0, 0), px(1, 0), px(2, 0), px(3, 0)],
        [px(0, 1), px(1, 1), px(2, 1), px(3, 1)],
        [PAD, PAD, PAD, PAD],
      ]);
    });

    it('prepareOriginal pads a portrait image with the floor offset on the left', async () => {
      const out = await prepareOriginal(synthetic(2, 5), 5); // offset (5 - 2) // 2 = 1: one pad column left, two right
      assert.deepEqual(rows(out), Array.from({ length: 5 }, (_, y) => [PAD, px(0, y), px(1, y), PAD, PAD]));
    });

    it('prepareOriginal leaves a square image as it is', async () => {
      const input = synthetic(3, 3);
      assert.deepEqual(rows(await prepareOriginal(input, 3)), rows(input));
    });

    it('prepareRegion: a box reaching outside is black outside the padded square, mean colour in its padding', async () => {
      // 4x2 image, square 4 (image rows 1..2). Box x -1..2, y 0..4: crop 3 wide, 4 high, padded to 4 wide
      // with its one pad column on the right ((4 - 3) // 2 = 0 on the left).
      const out = await prepareRegion(synthetic(4, 2), box(-0.25, 0, 0.5, 1), 4);
      assert.deepEqual(rows(out), [
        [BLACK, PAD, PAD, PAD],
        [BLACK, px(0, 0), px(1, 0), PAD],
        [BLACK, px(0, 1), px(1, 1), PAD],
        [BLACK, PAD, PAD, PAD],
      ]);
    });

    it('prepareRegion: black below and right of the square, the crop centred vertically', async () => {
      // 2x2 image, square 2. Box x 1..3, y 1..2: crop 2 wide, 1 high; padded to 2x2 with the row at (2 - 1) // 2 = 0.
      const out = await prepareRegion(synthetic(2, 2), box(0.5, 0.5, 1.5, 1), 2);
      assert.deepEqual(rows(out), [
        [px(1, 1), BLACK],
        [PAD, PAD],
      ]);
      // Box y 1..4 on the 2x2: rows 2 and 3 are below the square.
      const tall = await prepareRegion(synthetic(2, 2), box(0, 0.5, 1, 2), 3);
      assert.deepEqual(rows(tall), [
        [px(0, 1), px(1, 1), PAD],
        [BLACK, BLACK, PAD],
        [BLACK, BLACK, PAD],
      ]);
    });

    it('prepareRegion: a one-pixel box gives that pixel, zoomed', async () => {
      const input = synthetic(4, 2);
      const out = await prepareRegion(input, box(0.25, 0.25, 0.25, 0.25), 1); // square pixel (1, 1) = image (1, 0)
      assert.deepEqual(rows(out), [[px(1, 0)]]);
      const zoomed = await prepareRegion(input, box(0.25, 0.25, 0.25, 0.25), 16);
      assert.equal(zoomed.data.length, 16 * 16 * 3);
      assert.deepEqual(new Set(rows(zoomed).flat().map((p) => p.join())), new Set([px(1, 0).join()]));
    });

    it('prepareRegion: the full box equals prepareOriginal', async () => {
      const input = synthetic(7, 3);
      assert.deepEqual(await prepareRegion(input, box(0, 0, 1, 1), 5), await prepareOriginal(input, 5));
    });

    it('prepareRegion: a reversed box equals the ordered one', async () => {
      const input = synthetic(6, 4);
      assert.deepEqual(await prepareRegion(input, box(0.9, 0.8, 0.1, 0.3), 6), await prepareRegion(input, box(0.1, 0.3, 0.9, 0.8), 6));
    });

    it('outputs exactly size x size x 3 bytes for real photos', async () => {
      for (const name of ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg']) {
        const img = await loadImage(image(name));
        for (const out of [await prepareOriginal(img, 336), await prepareRegion(img, box(0.1, 0.2, 0.6, 0.5), 336)]) {
          assert.equal(out.width, 336);
          assert.equal(out.height, 336);
          assert.equal(out.data.length, 336 * 336 * 3);
        }
      }
    });

    // Expected bytes and hashes below were computed with Pillow 12.3 running the reference's steps:
    // expand2square, Image.crop, expand2square, Image.resize((size, size), BICUBIC).
    it('prepareOriginal shrinks bit for bit as Pillow does', async () => {
      const out = await prepareOriginal(patterned(7, 4), 5);
      assert.equal(out.data.toString('hex'),
        '545f66626d7c717f97879e7b9e6a523a71b16da785acc57b9a7d846e5d6ca49c5665496c487f83718d9885a6d4425d765e79987c98a09cc13abc6c597f76667d73647a7063776d6c747569');
    });

    it('prepareOriginal enlarges bit for bit as Pillow does', async () => {
      const out = await prepareOriginal(patterned(7, 4), 12);
      assert.equal(out.data.subarray(0, 36).toString('hex'), '8379688378678176657f74637d73627c71607a6f5e786e5c776b64756b6e73766c727d6a');
      assert.equal(sha256(out.data), '4d2cb4f679b6cf1ee480818f6943ccef48c791a007c789dffc22cec744e8105f');
    });

    it('prepareRegion with black, padding and enlargement matches Pillow bit for bit', async () => {
      const out = await prepareRegion(patterned(7, 4), box(-0.1, 0.2, 0.6, 1.1), 9);
      assert.equal(out.data.toString('hex'),
        '80796d27211a000b2201397221568b3e73b25b94dc7294bc7b726380796d231d14112444417cc95ca4d988c157b0e849a7c967776e6880796d1d171834522ea4c491b66fa46d8a3a70b03284a65779706980796d1c171f3a5d07b2c02dc3154b232e770a509f4669967e756580796d26201900142c185089366ba05388bd73ace581a3c37a716280796d201e1a2325286c72756b74747479797b80807c7d797a736780796d1e1c1a312e28918775867c6c857b6a8379687f77687a746880796d22201c1e1d1a58544b534f47534f47534f475f5b517c766a80796d27252100000000000000000000000000000023211e80796d');
    });

    it('photos: the original and zoomed regions at 336 equal the reference pipeline on Pillow', async () => {
      const chelsea = await loadImage(image('chelsea.png'));
      assert.equal(sha256((await prepareOriginal(chelsea, 336)).data), 'dcef0a60ae2bab33a4e5143537bcd33c4926963b076d2a84692cc18cea88dc01');
      assert.equal(sha256((await prepareRegion(chelsea, box(0.25, 0.3, 0.6, 0.7), 336)).data), '208966cfe5af87b31c35d62d82cbfc15360f12b9e37f817ab53e5f451abeda5f');
      const coffee = await loadImage(image('coffee.png'));
      assert.equal(sha256((await prepareRegion(coffee, box(0.1, 0.2, 0.3, 0.25), 336)).data), 'dcf179e575b3a66a8dd8c48081ca488d4c8574539cab894e77bff986175954c1');
      const astronaut = await loadImage(image('astronaut.png'));
      assert.equal(sha256((await prepareRegion(astronaut, box(-0.2, 0.5, 0.3, 1.3), 336)).data), 'df9b32307bd0e8567e5bb69b4032f359fc7915b52988528ef53eff5f086dbde4');
    });

    it('the resized original keeps the pad colour in the pad band', async () => {
      const rocket = await loadImage(image('rocket.jpg')); // 640x427: pad rows 0..105 of 640 -> about 55 rows of 336
      const out = await prepareOriginal(rocket, 336);
      assert.deepEqual(rows(out)[20]![100], PAD);
      assert.deepEqual(rows(out)[320]![200], PAD);
    });

    it('rejects bad arguments', async () => {
      const input = synthetic(2, 2);
      await assert.rejects(prepareOriginal(input, 0), RangeError);
      await assert.rejects(prepareOriginal(input, 1.5), RangeError);
      await assert.rejects(prepareOriginal(input, '336' as unknown as number), TypeError);
      await assert.rejects(prepareOriginal({ data: Buffer.alloc(5), width: 2, height: 2 }, 4), RangeError);
      await assert.rejects(prepareOriginal({ width: 2, height: 2 } as unknown as RgbImage, 4), TypeError);
      await assert.rejects(prepareRegion(input, box(0, 0, 3, 1), 4), RangeError);
    });

    it('accepts a plain Uint8Array as pixel data', async () => {
      const input = synthetic(4, 2);
      const out = await prepareOriginal({ data: new Uint8Array(input.data) as Buffer, width: 4, height: 2 }, 4);
      assert.deepEqual(out, await prepareOriginal(input, 4));
    });

    it('encodePng gives a PNG of the image', async () => {
      const input = synthetic(5, 3);
      const png = await encodePng(input);
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      assert.equal(info.format, 'raw');
      assert.deepEqual([info.width, info.height, info.channels], [5, 3, 3]);
      assert.deepEqual(data, input.data);
    });
  });

  describe('loadImage', () => {
    it('loads a file path', async () => {
      const img = await loadImage(image('astronaut.png'));
      assert.deepEqual([img.width, img.height, img.data.length], [512, 512, 512 * 512 * 3]);
    });

    it('loads a Buffer and a Uint8Array of an encoded image, to the same pixels as the path', async () => {
      const bytes = readFileSync(image('rocket.jpg'));
      const fromPath = await loadImage(image('rocket.jpg'));
      const fromBuffer = await loadImage(bytes);
      const fromArray = await loadImage(new Uint8Array(bytes));
      assert.deepEqual([fromBuffer.width, fromBuffer.height], [640, 427]);
      assert.ok(fromBuffer.data.equals(fromPath.data));
      assert.ok(fromArray.data.equals(fromPath.data));
    });

    it('loads a sharp instance (on a clone, leaving it usable)', async () => {
      const instance = sharp(image('chelsea.png'));
      const img = await loadImage(instance);
      assert.deepEqual([img.width, img.height], [451, 300]);
      const again = await loadImage(instance);
      assert.ok(again.data.equals(img.data));
      const resized = await loadImage(sharp(image('chelsea.png')).resize(100, 50, { fit: 'fill' }));
      assert.deepEqual([resized.width, resized.height, resized.data.length], [100, 50, 100 * 50 * 3]);
    });

    it('loads raw pixels of 1 to 4 channels as RGB, dropping alpha', async () => {
      const grey = await loadImage({ data: Buffer.from([10, 20]), width: 2, height: 1, channels: 1 });
      assert.deepEqual([...grey.data], [10, 10, 10, 20, 20, 20]);
      const greyAlpha = await loadImage({ data: new Uint8Array([10, 0, 20, 255]), width: 2, height: 1, channels: 2 });
      assert.deepEqual([...greyAlpha.data], [10, 10, 10, 20, 20, 20]);
      const rgb = await loadImage({ data: Buffer.from([1, 2, 3, 4, 5, 6]), width: 1, height: 2, channels: 3 });
      assert.deepEqual([rgb.width, rgb.height, ...rgb.data], [1, 2, 1, 2, 3, 4, 5, 6]);
      const rgba = await loadImage({ data: Buffer.from([1, 2, 3, 0, 4, 5, 6, 255]), width: 2, height: 1, channels: 4 });
      assert.deepEqual([...rgba.data], [1, 2, 3, 4, 5, 6]);
    });

    it('applies the EXIF orientation', async () => {
      // 16x8: left half red, right half blue. Orientation 6 = rotate 90° clockwise to view:
      // the left half ends up on top.
      const raw = Buffer.alloc(16 * 8 * 3);
      for (let i = 0; i < 16 * 8; i++) raw.set((i % 16) < 8 ? [255, 0, 0] : [0, 0, 255], i * 3);
      const jpeg = await sharp(raw, { raw: { width: 16, height: 8, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
      assert.equal((await sharp(jpeg).metadata()).orientation, 6);
      const img = await loadImage(jpeg);
      assert.deepEqual([img.width, img.height], [8, 16]);
      const [r0, , b0] = img.data.subarray(0, 3);
      const last = img.data.subarray(img.data.length - 3);
      assert.ok(r0! > 200 && b0! < 50, `top-left should be red, got ${[...img.data.subarray(0, 3)]}`);
      assert.ok(last[2]! > 200 && last[0]! < 50, `bottom-right should be blue, got ${[...last]}`);
    });

    it('turns raw pixels by their orientation as an encoded image by its EXIF tag, and keeps them as stored without it applied', async () => {
      const stored = patterned(16, 8);
      const png = await sharp(stored.data, { raw: { width: 16, height: 8, channels: 3 } }).png().withMetadata({ orientation: 6 }).toBuffer();
      for (const applyOrientation of [true, false]) {
        const fromFile = await loadImageWithOrientation(png, { applyOrientation });
        const fromRaw = await loadImageWithOrientation({ data: stored.data, width: 16, height: 8, channels: 3, orientation: 6 }, { applyOrientation });
        assert.deepEqual([fromRaw.image.width, fromRaw.image.height, fromRaw.orientation], applyOrientation ? [8, 16, 6] : [16, 8, 6]);
        assert.ok(fromRaw.image.data.equals(fromFile.image.data), `applyOrientation ${applyOrientation}`);
      }
      await assert.rejects(loadImage({ data: stored.data, width: 16, height: 8, channels: 3, orientation: 9 }), RangeError);
    });

    it('ignores an embedded ICC profile, as PIL does: the stored values come back', async () => {
      const stored = patterned(16, 16);
      const png = await sharp(stored.data, { raw: { width: 16, height: 16, channels: 3 } }).withIccProfile('p3').png().toBuffer();
      assert.ok((await sharp(png).metadata()).icc, 'the PNG should carry a profile');
      const asStored = await sharp(png, { ignoreIcc: true }).raw().toBuffer();
      const managed = await sharp(png).raw().toBuffer();
      assert.ok(!asStored.equals(managed), 'colour management should change these pixels for the test to mean anything');
      assert.ok((await loadImage(png)).data.equals(asStored));
    });

    it('loads a 1x1 image, which pads and zooms to one colour', async () => {
      const png = await sharp({ create: { width: 1, height: 1, channels: 3, background: { r: 9, g: 99, b: 199 } } }).png().toBuffer();
      const img = await loadImage(png);
      assert.deepEqual([img.width, img.height, ...img.data], [1, 1, 9, 99, 199]);
      const out = await prepareOriginal(img, 336);
      assert.deepEqual(new Set(rows(out).flat().map((p) => p.join())), new Set(['9,99,199']));
    });

    it('loads grey with alpha as RGB, dropping alpha (not compositing)', async () => {
      const png = await sharp(Buffer.from([50, 0, 150, 128, 250, 255]), { raw: { width: 3, height: 1, channels: 2 } }).toColourspace('b-w').png().toBuffer();
      assert.equal((await sharp(png).metadata()).channels, 2);
      const img = await loadImage(png);
      assert.deepEqual([...img.data], [50, 50, 50, 150, 150, 150, 250, 250, 250]);
    });

    it('loads a 16-bit PNG as 8-bit', async () => {
      const samples = new Uint16Array([0, 0x8000, 0xffff, 0x1234, 0x4321, 0xfedc]);
      const png = await sharp(samples, { raw: { width: 2, height: 1, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
      assert.equal((await sharp(png).metadata()).depth, 'ushort');
      const img = await loadImage(png);
      assert.equal(img.data.length, 6);
      [...samples].forEach((sample, i) => assert.ok(Math.abs(img.data[i]! - sample / 257) <= 1, `sample ${i}: ${img.data[i]} vs ${sample / 257}`));
    });

    it('loads a CMYK JPEG as sRGB', async () => {
      const original = await loadImage(image('coffee.png'));
      const cmyk = await sharp(image('coffee.png')).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
      const meta = await sharp(cmyk).metadata();
      assert.deepEqual([meta.space, meta.channels], ['cmyk', 4]);
      const img = await loadImage(cmyk);
      assert.deepEqual([img.width, img.height, img.data.length], [600, 400, 600 * 400 * 3]);
      let total = 0;
      for (let i = 0; i < img.data.length; i++) total += Math.abs(img.data[i]! - original.data[i]!);
      assert.ok(total / img.data.length < 12, `mean difference ${total / img.data.length}`);
    });

    it('takes the first frame of an animated GIF', async () => {
      const gif = image('no_time_for_that_tiny.gif');
      const meta = await sharp(gif).metadata();
      assert.ok((meta.pages ?? 1) > 1, 'the sample should be animated');
      const first = await sharp(gif, { page: 0, pages: 1 }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const second = await sharp(gif, { page: 1, pages: 1 }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      assert.ok(!first.data.equals(second.data), 'frames 0 and 1 should differ for this test to mean anything');
      for (const img of [await loadImage(gif), await loadImage(sharp(gif, { animated: true }))]) {
        assert.deepEqual([img.width, img.height], [first.info.width, first.info.height]);
        assert.ok(img.data.equals(first.data));
      }
    });

    it('rejects the truncated JPEG and a JPEG cut in its scan data', async () => {
      await rejectsWithImageError(loadImage(image('truncated.jpg')), /damaged or truncated/);
      const bytes = readFileSync(image('rocket.jpg'));
      const cut = bytes.subarray(0, Math.floor(bytes.length * 0.6));
      assert.equal((await sharp(cut, { failOn: 'none' }).raw().toBuffer({ resolveWithObject: true })).info.width, 640, 'sharp decodes it partly when told not to fail');
      await rejectsWithImageError(loadImage(cut), /damaged or truncated/);
    });

    it('rejects random bytes, text, an empty buffer and a missing file', async () => {
      let seed = 7;
      const random = Buffer.from(Array.from({ length: 1000 }, () => (seed = (seed * 1103515245 + 12345) % 2147483648) & 255));
      await rejectsWithImageError(loadImage(random), /not an image/);
      await rejectsWithImageError(loadImage(Buffer.from('hello, this is not an image')), /not an image/);
      await rejectsWithImageError(loadImage(Buffer.alloc(0)), /empty/);
      await rejectsWithImageError(loadImage(path.join(FIXTURE_IMAGES, 'does-not-exist.png')), /does not exist/);
    });

    it('rejects an image over maxPixels, whatever the input kind', async () => {
      await rejectsWithImageError(loadImage(image('astronaut.png'), { maxPixels: 1000 }), /maxPixels/);
      await rejectsWithImageError(loadImage(sharp(image('astronaut.png')), { maxPixels: 1000 }), /512x512.*maxPixels/);
      await rejectsWithImageError(loadImage({ data: Buffer.alloc(300), width: 10, height: 10, channels: 3 }, { maxPixels: 99 }), /maxPixels/);
      const ok = await loadImage({ data: Buffer.alloc(300), width: 10, height: 10, channels: 3 }, { maxPixels: 100 });
      assert.equal(ok.width, 10);
      assert.equal((await loadImage(image('astronaut.png'), { maxPixels: Infinity })).width, 512);
    });

    it('rejects raw pixels with no pixels or the wrong length', async () => {
      await rejectsWithImageError(loadImage({ data: Buffer.alloc(0), width: 0, height: 0, channels: 3 }), /no pixels/);
      await rejectsWithImageError(loadImage({ data: Buffer.alloc(5), width: 2, height: 1, channels: 3 }), /needs 6/);
    });

    it('throws TypeError / RangeError for arguments of the wrong kind', async () => {
      await assert.rejects(loadImage(42 as unknown as string), TypeError);
      await assert.rejects(loadImage(null as unknown as string), TypeError);
      await assert.rejects(loadImage(''), TypeError);
      await assert.rejects(loadImage(image('astronaut.png'), { maxPixels: 0 }), RangeError);
      await assert.rejects(loadImage(image('astronaut.png'), { maxPixels: '5' as unknown as number }), TypeError);
      await assert.rejects(loadImage(image('astronaut.png'), { maxPixels: 2.5 }), RangeError);
      await assert.rejects(loadImage(image('astronaut.png'), null as unknown as object), TypeError);
      await assert.rejects(loadImage({ data: Buffer.alloc(5 * 3), width: 1, height: 1, channels: 5 as 3 }), RangeError);
      await assert.rejects(loadImage({ data: [1, 2, 3] as unknown as Uint8Array, width: 1, height: 1, channels: 3 }), TypeError);
      await assert.rejects(loadImage({ data: Buffer.alloc(3), width: 1.5, height: 1, channels: 3 }), RangeError);
    });
  });
});

describe('image preparation off the main thread', () => {
  it('preparing a 12-megapixel photo never blocks the event loop for long', async () => {
    const width = 4000;
    const height = 3000;
    const data = Buffer.alloc(width * height * 3, 90);
    let longestGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }, 1);
    try {
      const started = performance.now();
      const [original, region] = await Promise.all([
        prepareOriginal({ data, width, height }, 336),
        prepareRegion({ data, width, height }, { left: 0.1, top: 0.2, right: 0.6, bottom: 0.9 }, 336),
      ]);
      const elapsed = performance.now() - started;
      assert.equal(original.data.length, 336 * 336 * 3);
      assert.equal(region.data.length, 336 * 336 * 3);
      // The work itself takes hundreds of milliseconds; the loop must stay responsive meanwhile.
      assert.ok(longestGap < Math.max(60, elapsed / 4), `the event loop stalled for ${longestGap.toFixed(0)} ms of ${elapsed.toFixed(0)} ms`);
    } finally {
      clearInterval(timer);
    }
  });
});

describe('image preparation limits', () => {
  it('an extreme aspect ratio is rejected with ERR_IMAGE before its padded square is built', async () => {
    const tall = { data: Buffer.alloc(1 * 24_000 * 3, 50), width: 1, height: 24_000 };
    await assert.rejects(prepareOriginal(tall, 336), (error: unknown) => {
      assert.ok(error instanceof ChainOfSpotError);
      assert.equal(error.code, 'ERR_IMAGE');
      assert.match(error.message, /24000x24000/);
      return true;
    });
    await assert.rejects(prepareRegion(tall, { left: 0, top: 0, right: 1, bottom: 1 }, 336, 1000), ChainOfSpotError);
    const small = await prepareOriginal({ data: Buffer.alloc(1 * 200 * 3, 50), width: 1, height: 200 }, 336, 200 * 200);
    assert.equal(small.width, 336);
  });
});
