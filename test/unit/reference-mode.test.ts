import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';

import sharp from 'sharp';

import type { RgbImage } from '../../lib/common/rgb-image';
import { ChainOfSpotError } from '../../lib/common/errors';
import { FULL_BOX, referenceCropRect, type Box } from '../../lib/image/geometry';
import {
  boxToPixels,
  cropRect,
  loadImage,
  loadImageWithOrientation,
  PAD_COLOUR,
  prepareOriginal,
  prepareReferenceRegion,
  prepareRegion,
  referenceBoxToPixels,
  reorient,
} from '../../lib/image/image';
import { parseCommandLine, USAGE } from '../../lib/cli/args';
import { parseBox, parseBoxOrFallback, parseReferenceBox, parseReferenceBoxOrFallback } from '../../lib/procedure/box';
import { FIXTURE_IMAGES } from '../support/paths';
import { patterned } from '../support/images';

const box = (left: number, top: number, right: number, bottom: number): Box => ({ left, top, right, bottom });
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

function isFlatPad(image: RgbImage): boolean {
  for (let i = 0; i < image.data.length; i += 3) {
    if (image.data[i] !== PAD_COLOUR[0] || image.data[i + 1] !== PAD_COLOUR[1] || image.data[i + 2] !== PAD_COLOUR[2]) return false;
  }
  return true;
}

/**
 * Turn one's answers and what the reference's reading makes of them, computed with CPython 3
 * running `model_vqa_loader_CoS.py`'s steps: `outputs.strip()`, a trailing `</s>` removed and
 * stripped again, then `n = outputs[1:-1].split(', ')` and `float(n[0])` ... `float(n[3])`
 * (null where that raises).
 */
const PYTHON_READS: ReadonlyArray<readonly [string, readonly [number, number, number, number] | null]> = [
  ["[0.1, 0.2, 0.5, 0.6]", [0.1, 0.2, 0.5, 0.6]],
  [" [0.1, 0.2, 0.5, 0.6]", [0.1, 0.2, 0.5, 0.6]],
  ["\n[0.1, 0.2, 0.5, 0.6]\u3000", [0.1, 0.2, 0.5, 0.6]],
  ["(0.1, 0.2, 0.5, 0.6)", [0.1, 0.2, 0.5, 0.6]],
  ["x0.1, 0.2, 0.5, 0.6x", [0.1, 0.2, 0.5, 0.6]],
  ["[0.1, 0.2, 0.5, 0.6, 0.7]", [0.1, 0.2, 0.5, 0.6]],
  ["[0.1, 0.2, 0.5, 0.6, junk]", [0.1, 0.2, 0.5, 0.6]],
  ["[0.1, 0.2, 0.5, 0.6]</s>", [0.1, 0.2, 0.5, 0.6]],
  ["[0.1, 0.2, 0.5, 0.6] </s> ", [0.1, 0.2, 0.5, 0.6]],
  ["[0.6, 0.5, 0.2, 0.1]", [0.6, 0.5, 0.2, 0.1]],
  ["[-0.2, 0.1, 1.7, 0.6]", [-0.2, 0.1, 1.7, 0.6]],
  ["[0.5, 0.2, 0.5, 0.6]", [0.5, 0.2, 0.5, 0.6]],
  ["[1e-1, .2, 5., +0.6]", [0.1, 0.2, 5.0, 0.6]],
  ["[ 0.1,  0.2 , 0.5, 0.6 ]", [0.1, 0.2, 0.5, 0.6]],
  ["[1_0, 0.2, 0.5, 0.6]", [10.0, 0.2, 0.5, 0.6]],
  ["[\u0661.\u0665, 0.2, 0.5, 0.6]", [1.5, 0.2, 0.5, 0.6]],
  ["[nan, 0.2, 0.5, 0.6]", [NaN, 0.2, 0.5, 0.6]],
  ["[-Infinity, 0.2, INF, 0.6]", [-Infinity, 0.2, Infinity, 0.6]],
  ["[1e400, 0, 1, 1]", [Infinity, 0.0, 1.0, 1.0]],
  ["[0.1,0.2,0.5,0.6]", null],
  ["[0.1, 0.2, 0.5]", null],
  ["The region is [0.1, 0.2, 0.5, 0.6]", null],
  ["[0.1, 0.2, 0.5, 0.6].", null],
  ["[0.1, 0.2, 0.5, 0.6]\u001c", [0.1, 0.2, 0.5, 0.6]],
  ["[0x1, 0.2, 0.5, 0.6]", null],
  ["[1__0, 0.2, 0.5, 0.6]", null],
  ["[0.1, 0.2, 0.5, 0.6%]", null],
  ["[0.1, 0.2, 0.5, 0.6\u001c]", null],
  ["[0.1, 0.2, 0.5, \u00850.6]", [0.1, 0.2, 0.5, 0.6]],
  ["", null],
  ["[", null],
  ["[]", null],
  ["I cannot tell.", null],
  ["[0.1, 0.2, 0.5, 0.6]\n\nThe region shows a cat.", null],
];

describe('reference mode', () => {
  describe('reading the box: parseReferenceBox', () => {
    for (const [text, expected] of PYTHON_READS) {
      it(`${JSON.stringify(text)} -> ${expected === null ? 'null' : `[${expected.join(', ')}]`}, as Python reads it`, () => {
        const read = parseReferenceBox(text);
        if (expected === null) {
          assert.equal(read, null);
        } else {
          assert.ok(read !== null);
          assert.deepEqual([read.left, read.top, read.right, read.bottom], expected);
        }
      });
    }

    it('reads the reference format the same either way', () => {
      assert.deepEqual(parseReferenceBox('[0.0, 0.072, 0.586, 1.0]'), box(0, 0.072, 0.586, 1));
      assert.deepEqual(parseBox('[0.0, 0.072, 0.586, 1.0]')?.box, box(0, 0.072, 0.586, 1));
    });

    it('both ways: answers the lenient reader reads and the reference does not', () => {
      for (const text of ['[0.1,0.2,0.5,0.6]', 'The region is [0.1, 0.2, 0.5, 0.6]', '[0.1, 0.2, 0.5, 0.6].', 'x1=0.1 y1=0.2 x2=0.5 y2=0.6', '0.1 0.2 0.5 0.6']) {
        assert.deepEqual(parseBox(text)?.box, box(0.1, 0.2, 0.5, 0.6), text);
        assert.equal(parseReferenceBox(text), null, text);
        assert.deepEqual(parseReferenceBoxOrFallback(text, { width: 100, height: 100 }), { box: FULL_BOX, source: 'fallback' }, text);
      }
    });

    it('both ways: reversed and out-of-range values are kept as written, not swapped and clamped', () => {
      assert.deepEqual(parseBox('[0.6, 0.5, 0.2, 0.1]')?.box, box(0.2, 0.1, 0.6, 0.5));
      assert.deepEqual(parseReferenceBox('[0.6, 0.5, 0.2, 0.1]'), box(0.6, 0.5, 0.2, 0.1));
      assert.deepEqual(parseBox('[-0.2, 0.1, 1.7, 0.6]')?.box, box(0, 0.1, 1, 0.6));
      assert.deepEqual(parseReferenceBox('[-0.2, 0.1, 1.7, 0.6]'), box(-0.2, 0.1, 1.7, 0.6));
      assert.equal(parseBox('[0.5, 0.2, 0.5, 0.6]'), null); // no area: the lenient reader rejects it
      assert.deepEqual(parseReferenceBox('[0.5, 0.2, 0.5, 0.6]'), box(0.5, 0.2, 0.5, 0.6));
    });

    it('parseReferenceBoxOrFallback: the model\'s box where Pillow can crop it, else the whole image', () => {
      const size = { width: 451, height: 300 };
      assert.deepEqual(parseReferenceBoxOrFallback('[-0.2, 0.1, 1.7, 0.6]', size), { box: box(-0.2, 0.1, 1.7, 0.6), source: 'model' });
      assert.deepEqual(parseReferenceBoxOrFallback('[0.5, 0.2, 0.5, 0.6]', size), { box: box(0.5, 0.2, 0.5, 0.6), source: 'model' });
      for (const text of ['[0.6, 0.2, 0.1, 0.6]', '[0.1, 0.6, 0.5, 0.2]', '[nan, 0.2, 0.5, 0.6]', '[0.1, 0.2, inf, 0.6]', '[0, 0, 1000, 1000]', 'nothing']) {
        assert.deepEqual(parseReferenceBoxOrFallback(text, size), { box: FULL_BOX, source: 'fallback' }, text);
      }
      // The lenient reader, for contrast, swaps the reversed box.
      assert.deepEqual(parseBoxOrFallback('[0.6, 0.2, 0.1, 0.6]', size), { box: box(0.1, 0.2, 0.6, 0.6), source: 'model' });
    });

    it('rejects arguments of the wrong type', () => {
      assert.throws(() => parseReferenceBox(42 as unknown as string), TypeError);
      assert.throws(() => parseReferenceBoxOrFallback('[0.1, 0.2, 0.5, 0.6]', { width: 0, height: 3 }), RangeError);
    });
  });

  describe('cropping: referenceCropRect, as Pillow 9.4 Image.crop', () => {
    it('rounds side * coordinate half to even, as cropRect does', () => {
      assert.deepEqual(referenceCropRect(box(0.25, 0.15, 0.75, 0.45), 10), { left: 2, top: 2, right: 8, bottom: 4 });
      assert.deepEqual(referenceCropRect(box(0.25, 0.15, 0.75, 0.45), 10), cropRect(box(0.25, 0.15, 0.75, 0.45), 10));
    });

    it('both ways: reversed corners make Pillow raise (null: the whole image); cropRect swaps them', () => {
      assert.equal(referenceCropRect(box(0.75, 0.2, 0.25, 0.6), 10), null); // "Coordinate 'right' is less than 'left'"
      assert.equal(referenceCropRect(box(0.25, 0.6, 0.75, 0.2), 10), null); // "Coordinate 'lower' is less than 'upper'"
      // Pillow compares before rounding: 5.1 > 5.04 raises though both round to 5.
      assert.equal(referenceCropRect(box(0.51, 0.2, 0.504, 0.6), 10), null);
      assert.deepEqual(cropRect(box(0.75, 0.2, 0.25, 0.6), 10), { left: 2, top: 2, right: 8, bottom: 6 });
    });

    it('both ways: zero width or height stays empty; cropRect widens it to a pixel', () => {
      assert.deepEqual(referenceCropRect(box(0.5, 0.2, 0.5, 0.6), 10), { left: 5, top: 2, right: 5, bottom: 6 });
      assert.deepEqual(referenceCropRect(box(0.51, 0.2, 0.54, 0.6), 10), { left: 5, top: 2, right: 5, bottom: 6 }); // 5.1 and 5.4 round to 5
      assert.deepEqual(referenceCropRect(box(0, 0, 0, 0), 10), { left: 0, top: 0, right: 0, bottom: 0 });
      assert.deepEqual(cropRect(box(0.5, 0.2, 0.5, 0.6), 10), { left: 5, top: 2, right: 6, bottom: 6 });
    });

    it('both ways: coordinates beyond [-1, 2] are cropped as given; cropRect refuses them', () => {
      assert.deepEqual(referenceCropRect(box(-1.5, 0, 3, 1), 10), { left: -15, top: 0, right: 30, bottom: 10 });
      assert.deepEqual(referenceCropRect(box(5, 5, 6, 6), 10), { left: 50, top: 50, right: 60, bottom: 60 });
      assert.throws(() => cropRect(box(-1.5, 0, 3, 1), 10), RangeError);
    });

    it('NaN and infinite coordinates make Pillow raise: null', () => {
      assert.equal(referenceCropRect(box(NaN, 0, 1, 1), 10), null); // ValueError: cannot convert float NaN to integer
      assert.equal(referenceCropRect(box(0, 0, Infinity, 1), 10), null); // OverflowError
      assert.equal(referenceCropRect(box(-Infinity, 0, 1, 1), 10), null);
      assert.throws(() => cropRect(box(NaN, 0, 1, 1), 10), RangeError);
    });

    it('Pillow\'s own limits: the decompression-bomb check, the C int range, the widest image', () => {
      // At most 2 * 89,478,485 = 178,956,970 pixels (Pillow 9.4 multiplies width by height).
      assert.deepEqual(referenceCropRect(box(0, 0, 178_956_970, 1), 1), { left: 0, top: 0, right: 178_956_970, bottom: 1 });
      assert.equal(referenceCropRect(box(0, 0, 178_956_971, 1), 1), null);
      assert.equal(referenceCropRect(box(0, 0, 20, 20), 1000), null); // 20000 x 20000
      // Zero height passes the bomb check; then the corners must fit a C int and the width Pillow's allocator.
      assert.deepEqual(referenceCropRect(box(0, 0, 536_870_910, 0), 1), { left: 0, top: 0, right: 536_870_910, bottom: 0 });
      assert.equal(referenceCropRect(box(0, 0, 536_870_911, 0), 1), null); // MemoryError
      assert.deepEqual(referenceCropRect(box(0, 0, 0, 2 ** 31 - 1), 1), { left: 0, top: 0, right: 0, bottom: 2 ** 31 - 1 });
      assert.equal(referenceCropRect(box(0, 0, 0, 2 ** 31), 1), null); // OverflowError: signed integer is greater than maximum
      assert.deepEqual(referenceCropRect(box(-(2 ** 31), 0, -(2 ** 31), 5), 1), { left: -(2 ** 31), top: 0, right: -(2 ** 31), bottom: 5 });
      assert.equal(referenceCropRect(box(-(2 ** 31) - 1, 0, -(2 ** 31) - 1, 5), 1), null);
    });

    it('rejects arguments of the wrong type', () => {
      assert.throws(() => referenceCropRect(box(0, 0, 1, 1), 0), RangeError);
      assert.throws(() => referenceCropRect({ left: 0, top: 0, right: '1', bottom: 1 } as unknown as Box, 10), TypeError);
    });

    it('referenceBoxToPixels: the crop in the original image, the whole image where Pillow raises', () => {
      // 8x4: square 8, image at top 2.
      assert.deepEqual(referenceBoxToPixels(box(-0.5, 0, 0.5, 2), 8, 4), { left: 0, top: 0, right: 4, bottom: 4 });
      assert.deepEqual(referenceBoxToPixels(box(0.5, 0.25, 0.5, 0.75), 8, 4), { left: 4, top: 0, right: 4, bottom: 4 });
      assert.deepEqual(referenceBoxToPixels(box(0.75, 0, 0.25, 1), 8, 4), { left: 0, top: 0, right: 8, bottom: 4 });
      assert.deepEqual(referenceBoxToPixels(box(0.25, 0.25, 0.75, 0.75), 8, 4), boxToPixels(box(0.25, 0.25, 0.75, 0.75), 8, 4));
    });
  });

  describe('zooming: prepareReferenceRegion, bit for bit with Pillow', () => {
    // Expected bytes computed with Pillow 9.4 running the reference's steps on the answer text:
    // the read and crop in a try (nothing on an exception), expand2square, resize((9, 9), BICUBIC).
    const image = patterned(7, 4);

    it('both ways: a box beyond the square crops black outside it; prepareRegion refuses beyond [-1, 2]', async () => {
      const out = await prepareReferenceRegion(image, box(-0.5, -0.25, 1.5, 0.75), 9);
      assert.equal(out.data.toString('hex'), '7c766a7c766a7c766a7c766a7c766a7c766a7c766a7c766a7c766a6e695e6e695e6e695e6e695e6e695e6e695e6e695e6e695e6e695e0101010101010100000000000000000000000000000101010101010000000000001f2020515658565b69627166745b440b0607000000000000000000152a42568daf91c576ac949a7969680f070e00000000000000000036501f94687142777f758f87869ebf0b0a1100000046433c46433c474d51596e8174879f8eaa52aa7b5551424046433c80796d80796d7f786a7d74657b7263786f6a75736a7e796c80796d7a74687a74687a74687a74687a74687a74687a74687a74687a7468');
      const far = await prepareReferenceRegion(image, box(0, 0, 3, 1), 9);
      assert.equal(far.data.toString('hex'), '7a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687b75697c75697c75697c75697c75697c75697c7366797167797467726c61716c61716c61716c61716c61716c6155738186978b837063130d0d090807090807090807090807090807707a7b6f91827f878c09070d0000000000000000000000000000006b6e717b8175837757130e0e0908070908070908070908070908077c74677a7267777269726c61716c61716c61716c61716c61716c617a74687a74687a74687b75697c75697c75697c75697c75697c75697a74687a74687a74687a74687a74687a74687a74687a74687a7468');
      await assert.rejects(prepareRegion(image, box(0, 0, 3, 1), 9), RangeError);
    });

    it('both ways: reversed corners zoom into the whole image; prepareRegion zooms into the swapped box', async () => {
      const reversed = await prepareReferenceRegion(image, box(0.6, 0.2, 0.1, 0.6), 9);
      assert.equal(reversed.data.toString('hex'), '8077687f76677d74657c73647b7263797061786e6776716b75796921416230527045678f587aae6c8ec07fb1db9ed57abc9e2fcb244d1950983074bb599a9e80bb6d9ed895c690b9969d767885449b296a72a9ab8e9ed494a97f93ce0bb2e737de4657692e801562a73e8abeb4f51edf54367d0f55003d72255a8f4277ac5f94c97eb3e896cbff2662674457804c65a44d87ca6da6e58cc946aef831d2c05feb35784356744c6a7f617d8c76889b8295a58ea14b9bb63ba8934fb244598277678076657e74637c71607a6f5f786d6c756a6e736f6b727a697a74687a74687a74687a74687a74687a74687a74687a74687a7468');
      assert.deepEqual(reversed, await prepareOriginal(image, 9));
      const swapped = await prepareRegion(image, box(0.6, 0.2, 0.1, 0.6), 9);
      assert.deepEqual(swapped, await prepareRegion(image, box(0.1, 0.2, 0.6, 0.6), 9));
      assert.notDeepEqual(swapped, reversed);
    });

    it('both ways: zero width gives a flat image of the pad colour; prepareRegion zooms into one pixel column', async () => {
      const flat = await prepareReferenceRegion(image, box(0.5, 0.2, 0.5, 0.6), 9);
      assert.equal(flat.data.toString('hex'), '7a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a74687a7468');
      assert.ok(isFlatPad(flat));
      assert.ok(isFlatPad(await prepareReferenceRegion(image, box(0.3, 0.3, 0.3, 0.3), 9)), 'zero width and height');
      assert.ok(isFlatPad(await prepareReferenceRegion(image, box(0.1, 0.4, 0.9, 0.4), 336)), 'zero height');
      assert.ok(!isFlatPad(await prepareRegion(image, box(0.5, 0.2, 0.5, 0.6), 9)));
    });

    it('an ordinary box zooms as prepareRegion does', async () => {
      const out = await prepareReferenceRegion(image, box(0.125, 0.375, 0.625, 0.875), 9);
      assert.equal(out.data.toString('hex'), 'ff0237ec063ba70f44431c51002b60003a6f08477c1b50851f5489f20c41db10459d194e44265b00356a004479135186255a8f295e93bb255cab2960813269454077184f861d5f962e6ca33e75ad4279b16b4982664d8759579046659e3c75ae4785be5793cc639cd667a1da32679c366ba03f74a94c81b65b90c56a9fd477ace180b5ea84b9ee3b72924074944b7a9b5b83a36b8dae7798b87fa0c185a7c787a9c960747962757b66777d6e7b81757f857983897d878d7f898f808a907a74687a74687a74687a74687a74687a74687a74687a74687a74688275638175628074617f73607d715e7c6f5d7a6e5b796d5a796d5a');
      assert.deepEqual(out, await prepareRegion(image, box(0.125, 0.375, 0.625, 0.875), 9));
    });

    it('a photo at 336: beyond the square, reversed, and zero width', async () => {
      const chelsea = await loadImage(path.join(FIXTURE_IMAGES, 'chelsea.png'));
      assert.equal(sha256((await prepareReferenceRegion(chelsea, box(-1.5, 0.2, 0.4, 2.5), 336)).data), '4fa9c678baa3bcb7018a4854b6c73cb9abc3fe2d3a573637a8ad58ec5c84812a');
      assert.equal(sha256((await prepareReferenceRegion(chelsea, box(0.9, 0.1, 0.3, 0.5), 336)).data), 'dcef0a60ae2bab33a4e5143537bcd33c4926963b076d2a84692cc18cea88dc01');
      assert.equal(sha256((await prepareReferenceRegion(chelsea, box(0.3, 0.3, 0.3, 0.8), 336)).data), '2af4fe92ae945949026ee4b35bb9237a868017254590c36f658e59d96d3db7d9');
    });

    it('a crop whose square is over maxPixels is ERR_IMAGE, as in prepareRegion', async () => {
      await assert.rejects(prepareReferenceRegion(image, box(0, 0, 1000, 1000), 9, 1_000_000), (error: unknown) => {
        assert.ok(error instanceof ChainOfSpotError);
        assert.equal(error.code, 'ERR_IMAGE');
        return true;
      });
      // 7000 x 7000 is within Pillow's limit and within maxPixels: computed, black past the image.
      const big = await prepareReferenceRegion(image, box(0, 0, 1000, 1000), 9, Infinity);
      assert.deepEqual([...big.data.subarray(big.data.length - 3)], [0, 0, 0]);
    });
  });

  describe('EXIF orientation', () => {
    const stored = patterned(5, 3);
    const withOrientation = (orientation: number): Promise<Buffer> =>
      sharp(stored.data, { raw: { width: 5, height: 3, channels: 3 } }).png().withMetadata({ orientation }).toBuffer();

    it('both ways, for all eight orientations: applyOrientation false keeps the pixels as stored (as PIL does)', async () => {
      for (let orientation = 1; orientation <= 8; orientation++) {
        const bytes = await withOrientation(orientation);
        const asStored = await loadImageWithOrientation(bytes, { applyOrientation: false });
        assert.equal(asStored.orientation, orientation);
        assert.deepEqual(asStored.image, { data: stored.data, width: 5, height: 3 }, `orientation ${orientation}`);
        const upright = await loadImage(bytes);
        assert.deepEqual([upright.width, upright.height], orientation >= 5 ? [3, 5] : [5, 3]);
        if (orientation === 1) assert.deepEqual(upright, asStored.image);
        else assert.notDeepEqual(upright.data, stored.data, `orientation ${orientation}`);
      }
    });

    it('reorient equals decoding the other way, for all eight orientations', async () => {
      for (let orientation = 1; orientation <= 8; orientation++) {
        const bytes = await withOrientation(orientation);
        const upright = await loadImage(bytes);
        const asStored = await loadImage(bytes, { applyOrientation: false });
        assert.deepEqual(reorient(asStored, orientation, false), upright, `orientation ${orientation}: turned upright`);
        assert.deepEqual(reorient(upright, orientation, true), asStored, `orientation ${orientation}: turned back`);
      }
    });

    it('an image without orientation loads the same either way', async () => {
      const bytes = await sharp(stored.data, { raw: { width: 5, height: 3, channels: 3 } }).png().toBuffer();
      assert.deepEqual(await loadImageWithOrientation(bytes, { applyOrientation: false }), { image: await loadImage(bytes), orientation: 1 });
      await assert.rejects(loadImage(bytes, { applyOrientation: 'no' as unknown as boolean }), TypeError);
    });
  });

  describe('the command line', () => {
    it('eval --reference, with or without --baseline; absent, the command is as before', () => {
      const model = ['-m', 'm', '--mmproj', 'p'];
      assert.equal((parseCommandLine(['eval', 'd.jsonl', ...model, '--reference']) as { reference?: boolean }).reference, true);
      assert.equal((parseCommandLine(['eval', 'd.jsonl', ...model, '--reference', '--baseline']) as { reference?: boolean }).reference, true);
      assert.ok(!('reference' in parseCommandLine(['eval', 'd.jsonl', ...model])));
      assert.match(USAGE, /--reference {8}reproduce the authors' code/);
    });
  });
});
