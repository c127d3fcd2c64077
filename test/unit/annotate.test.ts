import assert from 'node:assert/strict';
import path from 'node:path';

import sharp from 'sharp';

import { drawRegion, REGION_COLOUR, regionLayout, type RegionLayout } from '../../lib/image/annotate';
import type { RgbImage } from '../../lib/common/rgb-image';
import type { PixelRect } from '../../lib/image/geometry';
import { loadImage } from '../../lib/image/image';
import { FIXTURE_IMAGES } from '../support/paths';

const CAT = path.join(FIXTURE_IMAGES, 'chelsea.png'); // 451x300
/** REGION_COLOUR as RGB. */
const RED = [1, 3, 5].map((at) => Number.parseInt(REGION_COLOUR.slice(at, at + 2), 16));

const inside = (rect: PixelRect | null, x: number, y: number): boolean =>
  rect !== null && x >= rect.left && x < rect.right && y >= rect.top && y < rect.bottom;

/** Whether (x, y) is on the frame's line. */
function onLine(layout: RegionLayout, x: number, y: number): boolean {
  const { frame, lineWidth } = layout;
  if (!inside(frame, x, y)) return false;
  return x < frame!.left + lineWidth || x >= frame!.right - lineWidth || y < frame!.top + lineWidth || y >= frame!.bottom - lineWidth;
}

async function decode(png: Buffer): Promise<RgbImage> {
  const metadata = await sharp(png).metadata();
  assert.equal(metadata.format, 'png');
  return loadImage(png);
}

const pixel = (image: RgbImage, x: number, y: number): number[] => [...image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3)];

/**
 * Checks every pixel: the line has the colour, everything off the line and off the label is the
 * original, and the label tab's corner (where no text reaches) has the colour.
 */
function assertDrawn(drawn: RgbImage, original: RgbImage, layout: RegionLayout, colour: number[] = RED): void {
  assert.equal(drawn.width, original.width);
  assert.equal(drawn.height, original.height);
  let line = 0;
  for (let y = 0; y < drawn.height; y++) {
    for (let x = 0; x < drawn.width; x++) {
      if (inside(layout.label, x, y)) continue;
      if (onLine(layout, x, y)) {
        line++;
        assert.deepEqual(pixel(drawn, x, y), colour, `line pixel (${x}, ${y})`);
      } else {
        assert.deepEqual(pixel(drawn, x, y), pixel(original, x, y), `pixel (${x}, ${y}) away from the drawing changed`);
      }
    }
  }
  if (layout.frame) assert.ok(line > 0, 'some of the line is visible');
  if (layout.label) assert.deepEqual(pixel(drawn, layout.label.left + 1, layout.label.bottom - 1), colour, 'label tab');
}

describe('drawRegion', () => {
  let original: RgbImage;
  before(async () => {
    original = await loadImage(CAT);
  });

  it('frames the region, labels it above, and changes nothing else', async () => {
    const pixels = { left: 100, top: 80, right: 300, bottom: 250 };
    const layout = regionLayout(451, 300, pixels);
    assert.deepEqual(layout.frame, pixels);
    assert.ok(layout.label && layout.label.bottom === pixels.top, 'the label sits on the frame');
    assertDrawn(await decode(await drawRegion(CAT, pixels)), original, layout);
  });

  it('puts the label inside the frame when there is no room above it', async () => {
    const pixels = { left: 200, top: 0, right: 451, bottom: 120 };
    const layout = regionLayout(451, 300, pixels);
    assert.equal(layout.label!.top, 0);
    assert.ok(layout.label!.right <= 451, 'the label stays in the image');
    assertDrawn(await decode(await drawRegion(CAT, pixels)), original, layout);
  });

  it('clamps a region reaching outside the image', async () => {
    const pixels = { left: -40, top: 150, right: 500, bottom: 400 };
    const layout = regionLayout(451, 300, pixels, '');
    assert.deepEqual(layout.frame, { left: 0, top: 150, right: 451, bottom: 300 });
    assertDrawn(await decode(await drawRegion(CAT, pixels, { label: '' })), original, layout);
  });

  it('fills a region too small for a hole, in the colour asked for', async () => {
    const pixels = { left: 10, top: 10, right: 13, bottom: 12 };
    const layout = regionLayout(451, 300, pixels, '');
    const drawn = await decode(await drawRegion(CAT, pixels, { label: '', colour: '#00FF00' }));
    assertDrawn(drawn, original, layout, [0, 255, 0]);
    assert.deepEqual(pixel(drawn, 11, 11), [0, 255, 0]);
  });

  it('draws no frame for a region wholly outside the image (in the padding)', async () => {
    const layout = regionLayout(451, 300, { left: 0, top: 0, right: 451, bottom: 0 });
    assert.equal(layout.frame, null);
    assertDrawn(await decode(await drawRegion(CAT, { left: 0, top: 0, right: 451, bottom: 0 })), original, layout);
  });

  it('scales the line and the label with the image', () => {
    const small = regionLayout(451, 300, { left: 10, top: 50, right: 100, bottom: 100 });
    const large = regionLayout(4000, 3000, { left: 10, top: 500, right: 1000, bottom: 1000 });
    assert.equal(small.lineWidth, 2);
    assert.equal(large.lineWidth, 20);
    assert.ok(large.fontSize > small.fontSize);
  });

  it('escapes the label text', async () => {
    const pixels = { left: 100, top: 80, right: 300, bottom: 250 };
    const label = '<b>&"cat\'s"</b>';
    assertDrawn(await decode(await drawRegion(CAT, pixels, { label })), original, regionLayout(451, 300, pixels, label));
  });

  it('rejects bad options and unreadable images', async () => {
    const pixels = { left: 0, top: 0, right: 10, bottom: 10 };
    await assert.rejects(drawRegion(CAT, pixels, { colour: 'red' }), TypeError);
    await assert.rejects(drawRegion(CAT, { ...pixels, right: Number.NaN }), TypeError);
    await assert.rejects(drawRegion(path.join(FIXTURE_IMAGES, 'truncated.jpg'), pixels), { code: 'ERR_IMAGE' });
  });
});
