import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { paddedSquare } from '../../lib/image/geometry';
import { formatBox } from '../../lib/procedure/box';
import { BOX_HALF, DIGIT_HEIGHT, QUESTION_TEMPLATES, TAG_COLOURS, TAG_SIZE, renderScene, writeScenes, type SceneQuestion } from '../../lib/scenes/index';
import { parseEvalData } from '../../lib/eval/vqa';

/** The demo model's image size (assets/demo-model): what "too small to see" is measured at. */
const MODEL_IMAGE_SIZE = 112;

describe('scenes', () => {
  it('the digit spans 3 px or less in the whole view and 20 px or more in the zoomed tag box', () => {
    assert.ok(DIGIT_HEIGHT * MODEL_IMAGE_SIZE <= 3, `${DIGIT_HEIGHT * MODEL_IMAGE_SIZE} px in the whole view`);
    // The box (2 * BOX_HALF of the padded side) is zoomed to the image size.
    assert.ok((DIGIT_HEIGHT / (2 * BOX_HALF)) * MODEL_IMAGE_SIZE >= 20 - 1e-9, `${(DIGIT_HEIGHT / (2 * BOX_HALF)) * MODEL_IMAGE_SIZE} px zoomed`);
    assert.ok(TAG_SIZE < 2 * BOX_HALF, 'the tag fits its box');
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
        assert.equal(line.box_text, formatBox({ left: line.box[0], top: line.box[1], right: line.box[2], bottom: line.box[3] }));
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
