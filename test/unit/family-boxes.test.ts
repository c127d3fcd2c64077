/**
 * Turn one's box read in each family's frame and units (lib/procedure/families/), against answers
 * worked out by hand from the pinned mtmd's preprocessing (tools/mtmd/clip.cpp, mtmd-image.cpp)
 * and each family's box convention: Qwen2.5-VL in pixels of the resized image, Qwen3-VL in
 * thousandths of it, InternVL in thousandths of the original.
 */
import assert from 'node:assert/strict';

import { INTERNVL_TEMPLATE, QWEN25_VL_TEMPLATE, QWEN3_VL_TEMPLATE } from '../../lib/models/chat-templates';
import { FAMILIES } from '../../lib/procedure/family-registry';
import type { RegionSteps } from '../../lib/procedure/family';
import type { FamilyName, TurnImage } from '../../lib/procedure/types';
import type { ImageTokenLimits } from '../../lib/llama/projector';

function steps(name: FamilyName, chatTemplate: string, patchSize: number, imageTokens: ImageTokenLimits = {}): RegionSteps {
  const facts = { chatTemplate, tokens: { bos: '', eos: '' }, imageSize: 448, patchSize, tokensPerImage: 256, imageTokens };
  return FAMILIES[name].bind(facts).steps(false);
}

const seenAs = (width: number, height: number): TurnImage => ({ tokens: width * height, grid: { width, height } });
const WHOLE = { box: { left: 0, top: 0, right: 1, bottom: 1 }, source: 'fallback' };

/** Equal within rounding: the units pass through frame pixels on their way to fractions. */
function assertBox(actual: { left: number; top: number; right: number; bottom: number }, expected: typeof actual): void {
  for (const side of ['left', 'top', 'right', 'bottom'] as const) {
    assert.ok(Math.abs(actual[side] - expected[side]) < 1e-12, `${side}: ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

describe('family boxes', () => {
  describe('Qwen2.5-VL: pixels of the image as mtmd resized it (28-pixel tokens)', () => {
    const qwen = steps('qwen2.5-vl', QWEN25_VL_TEMPLATE, 14);

    it('a frame without padding: 150 x 90 seen as 5 x 3 tokens, 140 x 84 pixels', () => {
      const region = qwen.read('{"bbox_2d": [14, 21, 70, 63], "label": "cup"}', { width: 150, height: 90 }, seenAs(5, 3));
      // 14 / 140, 21 / 84, 70 / 140, 63 / 84
      assert.equal(region.source, 'model');
      assertBox(region.box, { left: 0.1, top: 0.25, right: 0.5, bottom: 0.75 });
    });

    it('a frame with padding: 150 x 100 seen as 5 x 4 tokens (140 x 112), the image 140 x 94 from y = 9', () => {
      // scale min(140 / 150, 112 / 100) = 0.93333; 150 -> 140, 100 * 0.93333 = 93.3 -> 94; top (112 - 94) / 2 = 9
      const image = { width: 150, height: 100 };
      assertBox(qwen.read('{"bbox_2d": [70, 56, 140, 103], "label": "x"}', image, seenAs(5, 4)).box, { left: 0.5, top: 0.5, right: 1, bottom: 1 });
      assertBox(qwen.read('{"bbox_2d": [0, 9, 140, 103], "label": "x"}', image, seenAs(5, 4)).box, { left: 0, top: 0, right: 1, bottom: 1 });
      // Wholly in the padding above the image: nothing of it is on the image.
      assert.deepEqual(qwen.read('{"bbox_2d": [0, 0, 140, 9], "label": "x"}', image, seenAs(5, 4)), WHOLE);
    });

    it('without a reported grid (llama-server), the same resize computed: 150 x 100 -> 140 x 112', () => {
      assertBox(qwen.read('{"bbox_2d": [70, 56, 140, 103], "label": "x"}', { width: 150, height: 100 }, undefined).box, { left: 0.5, top: 0.5, right: 1, bottom: 1 });
    });

    it('without a grid, the resize within the limits the server was given: 196 x 112 at 64 tokens at least is 308 x 196', () => {
      // 196 x 112 is 7 x 4 = 28 tokens, under 64: scaled by sqrt(64 * 784 / 21952) = 1.512 and
      // rounded up to 28: 11 x 7 tokens; the image fits by 308 / 196 = 1.571: 308 x 176 from y = 10.
      const atLeast64 = steps('qwen2.5-vl', QWEN25_VL_TEMPLATE, 14, { min: 64 });
      assertBox(atLeast64.read('{"bbox_2d": [154, 98, 308, 186], "label": "x"}', { width: 196, height: 112 }, undefined).box, { left: 0.5, top: 0.5, right: 1, bottom: 1 });
    });

    it('a small image scaled up to the 8-token minimum: 40 x 30 seen as 4 x 3 tokens (112 x 84)', () => {
      // scale min(112 / 40, 84 / 30) = 2.8, both sides exact: no padding
      assertBox(qwen.read('{"bbox_2d": [28, 21, 84, 63], "label": "x"}', { width: 40, height: 30 }, seenAs(4, 3)).box, { left: 0.25, top: 0.25, right: 0.75, bottom: 0.75 });
    });

    it('reads four numbers written otherwise in the same units, orders reversed corners, clamps to the image', () => {
      const image = { width: 150, height: 90 };
      assertBox(qwen.read('The cup is at [14, 21, 70, 63].', image, seenAs(5, 3)).box, { left: 0.1, top: 0.25, right: 0.5, bottom: 0.75 });
      assertBox(qwen.read('{"bbox_2d": [70, 63, 14, 21]}', image, seenAs(5, 3)).box, { left: 0.1, top: 0.25, right: 0.5, bottom: 0.75 });
      assertBox(qwen.read('{"bbox_2d": [0, 0, 99999, 99999]}', image, seenAs(5, 3)).box, { left: 0, top: 0, right: 1, bottom: 1 });
      assert.deepEqual(qwen.read('no box here', image, seenAs(5, 3)), WHOLE);
      assert.deepEqual(qwen.read('{"bbox_2d": [14, 21, 14, 63]}', image, seenAs(5, 3)), WHOLE, 'no width');
    });
  });

  describe('Qwen3-VL: thousandths of the image as mtmd resized it (32-pixel tokens)', () => {
    const qwen3 = steps('qwen3-vl', QWEN3_VL_TEMPLATE, 16);

    it('0 and 1000 are the frame edges', () => {
      const image = { width: 192, height: 128 };
      assertBox(qwen3.read('{"bbox_2d": [0, 0, 1000, 1000], "label": "all"}', image, seenAs(6, 4)).box, { left: 0, top: 0, right: 1, bottom: 1 });
      assertBox(qwen3.read('{"bbox_2d": [250, 500, 750, 1000], "label": "x"}', image, seenAs(6, 4)).box, { left: 0.25, top: 0.5, right: 0.75, bottom: 1 });
    });

    it('in a padded frame, thousandths of the frame, not of the image: 200 x 90 seen as 6 x 3 tokens (192 x 96)', () => {
      // scale min(192 / 200, 96 / 90) = 0.96: 192 x 86.4 -> 87, top (96 - 87) / 2 = 4 (rounded down)
      const image = { width: 200, height: 90 };
      assertBox(qwen3.read('{"bbox_2d": [0, 0, 1000, 1000], "label": "x"}', image, seenAs(6, 3)).box, { left: 0, top: 0, right: 1, bottom: 1 });
      // y 500 of 96 is 48: (48 - 4) / 87 of the image
      assertBox(qwen3.read('{"bbox_2d": [0, 500, 1000, 1000], "label": "x"}', image, seenAs(6, 3)).box, { left: 0, top: 44 / 87, right: 1, bottom: 1 });
    });
  });

  describe('InternVL: thousandths of the original width and height', () => {
    const internvl = steps('internvl', INTERNVL_TEMPLATE, 14);

    it('reads <box>[[...]]</box> at 0 and 1000 and between, whatever the image size', () => {
      const image = { width: 640, height: 480 };
      assertBox(internvl.read('<ref>cat</ref><box>[[0, 0, 1000, 1000]]</box>', image, undefined).box, { left: 0, top: 0, right: 1, bottom: 1 });
      assertBox(internvl.read('<ref>cat</ref><box>[[100, 250, 600, 1000]]</box>', image, undefined).box, { left: 0.1, top: 0.25, right: 0.6, bottom: 1 });
      assertBox(internvl.read('<ref>a</ref><box>[[500, 0, 1000, 500]]</box>', { width: 37, height: 1001 }, undefined).box, { left: 0.5, top: 0, right: 1, bottom: 0.5 });
    });
  });
});
