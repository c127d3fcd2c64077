/**
 * The frame of a dynamic-resolution encoder (lib/image/frame.ts), against sizes worked out by hand
 * from the pinned mtmd's rules (tools/mtmd/mtmd-image.cpp): sides rounded to multiples of the
 * alignment, scaled into the token limits, and the image fitted with centred padding.
 */
import assert from 'node:assert/strict';

import { alignedSize, frameRectToImageFractions, letterbox } from '../../lib/image/frame';

// Qwen2.5-VL: 14-pixel patches merged 2 x 2, so 28-pixel tokens, 8 to 4096 of them.
const ALIGN = 28;
const MIN = 8 * 28 * 28;
const MAX = 4096 * 28 * 28;

describe('frame', () => {
  describe('alignedSize', () => {
    it('rounds each side to the nearest multiple, half away from zero', () => {
      // 150 / 28 = 5.36 -> 5; 90 / 28 = 3.21 -> 3
      assert.deepEqual(alignedSize({ width: 150, height: 90 }, ALIGN, MIN, MAX), { width: 140, height: 84 });
      // 98 / 28 = 3.5 exactly -> 4; 70 / 28 = 2.5 -> 3
      assert.deepEqual(alignedSize({ width: 98, height: 70 }, ALIGN, MIN, MAX), { width: 112, height: 84 });
    });

    it('scales a small image up to the minimum, rounding up', () => {
      // 40 x 30: 28 x 28 < 6272; beta = sqrt(6272 / 1200) = 2.2862; 30 * 2.2862 = 68.6 -> 3 * 28, 40 * 2.2862 = 91.4 -> 4 * 28
      assert.deepEqual(alignedSize({ width: 40, height: 30 }, ALIGN, MIN, MAX), { width: 112, height: 84 });
    });

    it('scales a large image down to the maximum, rounding down', () => {
      // 4000 x 3000 rounds to 4004 x 2996 > 3,211,264; beta = sqrt(12e6 / 3211264) = 1.93309;
      // 3000 / 1.93309 = 1551.9 -> 55 * 28 = 1540; 4000 / 1.93309 = 2069.2 -> 73 * 28 = 2044
      assert.deepEqual(alignedSize({ width: 4000, height: 3000 }, ALIGN, MIN, MAX), { width: 2044, height: 1540 });
    });

    it('never gives a side under one token', () => {
      // 1000 x 1: the area is over the minimum once the side is one token (28), so no scaling up.
      assert.deepEqual(alignedSize({ width: 1000, height: 1 }, ALIGN, MIN, MAX), { width: 1008, height: 28 });
    });
  });

  describe('letterbox', () => {
    it('is the image itself when it has the target size', () => {
      assert.deepEqual(letterbox({ width: 196, height: 112 }, { width: 196, height: 112 }), { width: 196, height: 112, content: { left: 0, top: 0, right: 196, bottom: 112 } });
    });

    it('fits the image by the smaller ratio, sides rounded up, centred with the offset rounded down', () => {
      // 150 x 90 into 140 x 84: ratios 0.9333 and 0.9333; 150 * 0.93333 = 140.0 -> 140, 90 * 0.93333 = 84.0 -> 84
      assert.deepEqual(letterbox({ width: 150, height: 90 }, { width: 140, height: 84 }).content, { left: 0, top: 0, right: 140, bottom: 84 });
      // 100 x 50 into 56 x 56: scale 0.56; 100 * 0.56 = 56, 50 * 0.56 = 28; top (56 - 28) / 2 = 14
      assert.deepEqual(letterbox({ width: 100, height: 50 }, { width: 56, height: 56 }).content, { left: 0, top: 14, right: 56, bottom: 42 });
      // 30 x 100 into 56 x 56: scale 0.56; 30 * 0.56 = 16.8 -> 17; left floor((56 - 17) / 2) = 19
      assert.deepEqual(letterbox({ width: 30, height: 100 }, { width: 56, height: 56 }).content, { left: 19, top: 0, right: 36, bottom: 56 });
    });
  });

  describe('frameRectToImageFractions', () => {
    const frame = letterbox({ width: 100, height: 50 }, { width: 56, height: 56 });

    it('maps frame pixels onto the image, the padding cut off', () => {
      // content is x 0..56, y 14..42
      assert.deepEqual(frameRectToImageFractions({ left: 14, top: 21, right: 42, bottom: 35 }, frame), { left: 0.25, top: 0.25, right: 0.75, bottom: 0.75 });
      assert.deepEqual(frameRectToImageFractions({ left: 0, top: 0, right: 56, bottom: 56 }, frame), { left: 0, top: 0, right: 1, bottom: 1 });
    });

    it('orders reversed corners, and gives null for a box wholly in the padding', () => {
      assert.deepEqual(frameRectToImageFractions({ left: 42, top: 35, right: 14, bottom: 21 }, frame), { left: 0.25, top: 0.25, right: 0.75, bottom: 0.75 });
      assert.equal(frameRectToImageFractions({ left: 0, top: 0, right: 56, bottom: 10 }, frame), null);
    });
  });
});
