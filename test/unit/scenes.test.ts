import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import sharp from 'sharp';

import { paddedSquare } from '../../lib/image/geometry';
import { BOX_HALF, QUESTION_TEMPLATES, TAG_COLOURS, renderScene, writeScenes, type SceneQuestion } from '../../lib/scenes/index';
import { parseEvalData } from '../../lib/eval/vqa';

/** The demo model's image size (assets/demo-model): what "too small to see" is measured at. */
const MODEL_IMAGE_SIZE = 112;

type Rgb = readonly [number, number, number];

/**
 * A tag measured on an image's pixels: the bounding rectangle (pixel edges) of the largest
 * connected region of exactly its colour, and the rows of ink (the digit's colour) enclosed by it.
 */
function measureTag(data: Buffer, width: number, height: number, rgb: Rgb, ink: Rgb): { left: number; top: number; right: number; bottom: number; digitHeight: number } {
  const is = (i: number, colour: Rgb): boolean => data[3 * i] === colour[0] && data[3 * i + 1] === colour[1] && data[3 * i + 2] === colour[2];
  const seen = new Uint8Array(width * height);
  let best: number[] = [];
  for (let start = 0; start < width * height; start++) {
    if (seen[start] || !is(start, rgb)) continue;
    const region = [start];
    seen[start] = 1;
    for (let k = 0; k < region.length; k++) {
      const i = region[k]!;
      const x = i % width;
      for (const next of [x > 0 ? i - 1 : -1, x < width - 1 ? i + 1 : -1, i - width, i + width]) {
        if (next >= 0 && next < width * height && !seen[next] && is(next, rgb)) {
          seen[next] = 1;
          region.push(next);
        }
      }
    }
    if (region.length > best.length) best = region;
  }
  const xs = best.map((i) => i % width);
  const ys = best.map((i) => Math.floor(i / width));
  const [left, right, top, bottom] = [Math.min(...xs), Math.max(...xs) + 1, Math.min(...ys), Math.max(...ys) + 1];
  // Ink with the tag's colour both left and right of it on its row (so not background at a corner).
  const inkRows: number[] = [];
  for (let y = top; y < bottom; y++) {
    const row = Array.from({ length: right - left }, (_, k) => y * width + left + k);
    const first = row.findIndex((i) => is(i, rgb));
    const last = row.length - 1 - [...row].reverse().findIndex((i) => is(i, rgb));
    if (first >= 0 && row.slice(first, last).some((i) => is(i, ink))) inkRows.push(y);
  }
  assert.ok(inkRows.length > 0, 'no digit on the tag');
  return { left, top, right, bottom, digitHeight: Math.max(...inkRows) - Math.min(...inkRows) + 1 };
}

describe('scenes', () => {
  it('on the written image, the digit is 3 px or less high in the whole view and 20 in the zoomed box; box_text is the box around the tag', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'cos-scenes-'));
    try {
      const written = await writeScenes({ count: 12, seed: 5, out });
      const lines = (await readFile(written.questions, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as SceneQuestion);
      for (const line of lines) {
        const image = await sharp(path.join(out, line.image)).raw().toBuffer({ resolveWithObject: true });
        const { rgb, ink } = TAG_COLOURS.find((colour) => colour.name === line.tag.colour)!;
        const tag = measureTag(image.data, image.info.width, image.info.height, rgb, ink);
        const what = `${line.id} (${line.tag.shape})`;
        // The padded square, worked out here: the long side, the image centred in it.
        const side = Math.max(line.width, line.height);
        const padLeft = Math.floor((side - line.width) / 2);
        const padTop = Math.floor((side - line.height) / 2);
        // The tag's centre, in hundredths of the padded side, lies on the 0.05 grid (to 2 px).
        const centre = [(tag.left + tag.right) / 2 + padLeft, (tag.top + tag.bottom) / 2 + padTop].map((at) => (100 * at) / side);
        const grid = centre.map((value) => 5 * Math.round(value / 5));
        centre.forEach((value, axis) => assert.ok(Math.abs(value - grid[axis]!) < (100 * 2) / side, `${what}: centre ${value} off the grid`));
        // Its box is the centre ± 0.07, written as Python prints round(x, 3) of it: 0.2 -> "0.2", 1 -> "1.0".
        const python = (hundredths: number): string => (hundredths % 10 === 0 ? (hundredths / 100).toFixed(1) : (hundredths / 100).toFixed(2));
        const [x, y] = grid as [number, number];
        assert.equal(line.box_text, `[${python(x - 7)}, ${python(y - 7)}, ${python(x + 7)}, ${python(y + 7)}]`, what);
        // The tag lies inside its box.
        const [l, t, r, b] = (JSON.parse(line.box_text) as number[]).map((value, i) => value * side - (i % 2 === 0 ? padLeft : padTop));
        assert.ok(tag.left >= l! && tag.right <= r! && tag.top >= t! && tag.bottom <= b!, `${what}: the tag outside its box`);
        // The digit's height at the demo projector's size: the whole view, and the box zoomed (to one scene pixel).
        const whole = (tag.digitHeight * MODEL_IMAGE_SIZE) / side;
        const zoomed = (tag.digitHeight * MODEL_IMAGE_SIZE) / (r! - l!);
        assert.ok(whole <= 3, `${what}: ${whole} px in the whole view`);
        assert.ok(zoomed + MODEL_IMAGE_SIZE / (r! - l!) >= 20 && zoomed <= 22, `${what}: ${zoomed} px zoomed`);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it('renders the same scene for the same seed, and another for another seed', async () => {
    const a = await renderScene(7, 3, []);
    const b = await renderScene(7, 3, []);
    const c = await renderScene(8, 3, []);
    assert.ok(a.canvas.data.equals(b.canvas.data));
    assert.deepEqual(a.tags, b.tags);
    assert.ok(!a.canvas.data.equals(c.canvas.data));
  });

  it('places 3 to 6 tags of distinct colours, inside the image, boxes within the padded square', async () => {
    for (let index = 0; index < 40; index++) {
      const { canvas, tags } = await renderScene(11, index, []);
      const long = Math.max(canvas.width, canvas.height);
      assert.ok(long >= 600 && long <= 1200, `long side ${long}`);
      const aspect = canvas.width / canvas.height;
      assert.ok(aspect >= 0.5 - 0.01 && aspect <= 2 + 0.01, `aspect ${aspect}`);
      assert.ok(tags.length >= 3 && tags.length <= 6, `scene ${index}: ${tags.length} tags`);
      assert.equal(new Set(tags.map((t) => t.colour)).size, tags.length);
      const square = paddedSquare(canvas.width, canvas.height);
      for (const tag of tags) {
        assert.ok(TAG_COLOURS.some((c) => c.name === tag.colour));
        assert.ok(Number.isInteger(tag.digit) && tag.digit >= 0 && tag.digit <= 9);
        const half = tag.pixels.size / 2;
        assert.ok(tag.pixels.x - half >= 0 && tag.pixels.x + half <= canvas.width && tag.pixels.y - half >= 0 && tag.pixels.y + half <= canvas.height, `scene ${index}: ${tag.colour} tag outside the image`);
        assert.ok(Math.abs((tag.pixels.x + square.left) / square.side - tag.centre[0]) < 1e-6);
        const [l, t, r, b] = tag.box;
        assert.ok(l >= 0 && t >= 0 && r <= 1 && b <= 1, `box ${tag.box.join(', ')}`);
        assert.ok(Math.abs(r - l - 2 * BOX_HALF) < 1e-9 && Math.abs((l + r) / 2 - tag.centre[0]) < 1e-9 && Math.abs((t + b) / 2 - tag.centre[1]) < 1e-9);
      }
    }
  });

  it('writes images and the JSONL that eval reads, with the true box in the reference format', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'cos-scenes-'));
    try {
      const written = await writeScenes({ count: 12, seed: 5, out });
      assert.equal(written.count, 12);
      const lines = (await readFile(written.questions, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as SceneQuestion);
      assert.equal(lines.length, 12);
      assert.equal((await readdir(path.join(out, 'images'))).length, written.images);
      for (const line of lines) {
        assert.deepEqual(line.answers, [String(line.tag.digit)]);
        assert.ok(QUESTION_TEMPLATES.some((t) => t.replace('{tag}', `${line.tag.colour} ${line.tag.shape}`) === line.question), line.question);
      }
      assert.equal(new Set(lines.map((l) => l.id)).size, 12);
      const items = parseEvalData(await readFile(written.questions, 'utf8'), out, 'questions.jsonl');
      assert.deepEqual(items[0]!.box, { left: lines[0]!.box[0], top: lines[0]!.box[1], right: lines[0]!.box[2], bottom: lines[0]!.box[3] });
      assert.equal(items[0]!.image, path.join(out, lines[0]!.image));
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
