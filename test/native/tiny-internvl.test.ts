/**
 * The tiny InternVL pair (lib/models/tiny-internvl.ts) through the addon: llama.cpp loads both
 * files, cuts images into the tiles its InternVL preprocessing gives (one chunk per tile, then the
 * whole image), puts `<img>` and `</img>` around them, and the text model generates from them.
 */
import assert from 'node:assert/strict';

import { Model } from '../../lib/llama/model';
import type { Projector } from '../../lib/llama/projector';
import type { RgbPixels } from '../../lib/llama/session';
import { ensureTinyInternVl } from '../../lib/models/tiny-internvl';
import { assertLogitsFollowTheImage } from '../support/logits';
import { seededPattern } from '../support/images';
import { MODEL_CACHE } from '../support/models';

/**
 * The image token counts, worked out by hand from the pinned preprocessing (tools/mtmd/mtmd-image.cpp,
 * llava-uhd's `get_slice_instructions` with the grids of clip.cpp's `set_internvl_dhr_res_candidates`):
 * - an image no larger than a tile (56 x 56) is one tile, stretched to 56 x 56, with no overview;
 * - a larger one is letterboxed into the grid (w x h tiles of 56, 1 to 6 tiles) that keeps most of
 *   its pixels (`min(scaled area, its area)`, the scale that fits it in the grid), the least area
 *   wasted on ties, the first grid in the order w = 1..6, h = 1..6/w on full ties; each tile is a
 *   chunk, then the whole image stretched to 56 x 56 one more.
 * A tile is 56/14 = 4 patches a side, shuffled 2 x 2: (4/2)^2 = 4 tokens.
 */
const COUNTS: readonly (readonly [width: number, height: number, tokens: number, why: string])[] = [
  [40, 30, 4, 'within a tile: 1 chunk of 4'],
  // 112x56: scale min(112/57, 56/20) = 1.96 -> 112x39, whole image kept (1140 pixels), 6272 - 1140 wasted;
  // the 1-wide grids keep only 56x19 (1064), the others that keep all 1140 waste more.
  [57, 20, 12, 'one pixel wider than a tile: 2x1 tiles and the overview, 3 chunks of 4'],
  // 1x1 keeps 56x56 (3136 of 3249 pixels), 2x1 and 1x2 too; 2x2 (scale 112/57) keeps all, wasting less than 2x3 and 3x2.
  // (InternVL's own preprocessing would match the 1:1 aspect ratio with one tile and no overview.)
  [57, 57, 20, 'one pixel larger than a tile both ways: 2x2 tiles and the overview, 5 chunks of 4'],
  // 168x112: scale min(168/150, 112/90) = 1.12 -> 168x100 >= 150x90 (13500 pixels): the only grid that keeps
  // them all (the other 6-tile grids keep 56x33, 112x67, 93x56; 5 tiles hold 15680 but keep 56x33, 93x56).
  [150, 90, 28, 'landscape 5:3: 3x2 tiles and the overview, 7 chunks of 4'],
  // Portrait 60x200 (12000 pixels): the width caps a 1-wide grid at 56/60 -> 56x186 = 10416, first reached
  // by 1x4 (56x224, 2128 wasted; 1x5 and 1x6 keep as much and waste more); 2x3 keeps 50x168 = 8400.
  [60, 200, 20, 'portrait 3:10: 1x4 tiles and the overview, 5 chunks of 4'],
];

describe('tiny InternVL (56-pixel tiles of 4 tokens, 1 to 6 tiles and an overview)', function () {
  this.timeout(120_000);
  let model: Model;
  let projector: Projector;

  before(async () => {
    const files = await ensureTinyInternVl(MODEL_CACHE);
    model = await Model.load(files.model);
    // One thread here and in the sessions: the models are tiny, and on a busy machine more threads
    // only add synchronization (per tile chunk, per decode) that costs seconds.
    projector = await model.loadProjector(files.mmproj, { threads: 1 });
  });
  after(async () => model?.dispose());

  /** A ChatML turn around an image; returns the image's token count, the positions it took and the logits after the prompt. */
  async function ask(image: RgbPixels): Promise<{ tokens: number; positions: number; logits: Float32Array; generated: Int32Array }> {
    const session = await model.createSession({ contextSize: 1024, threads: 1 });
    try {
      const { position: before } = await session.evaluate('<|im_start|>user\n', { parseSpecial: true });
      const { tokens, position: after } = await session.evaluateImage(projector, image);
      await session.evaluate('What color is the sign?<|im_end|>\n<|im_start|>assistant\n', { parseSpecial: true });
      const logits = (await session.logits())!;
      const { tokens: generated } = await session.generate({ maxTokens: 4 });
      return { tokens, positions: after - before, logits, generated };
    } finally {
      await session.dispose();
    }
  }

  it('reports the projector: 56-pixel images, 4 tokens for one of that size', () => {
    assert.equal(projector.info.imageSize, 56);
    assert.equal(projector.info.tokensPerImage, 4);
  });

  for (const [width, height, expected, why] of COUNTS) {
    it(`a ${width}x${height} image is ${expected} tokens (${why}) between <img> and </img>`, async () => {
      const { tokens, positions, logits, generated } = await ask(seededPattern(width, height, 1));
      assert.equal(tokens, expected);
      // mtmd adds `<img>` before and `</img>` after, one special token each in the tiny vocabulary.
      assert.equal(positions, expected + 2);
      assert.equal(logits.length, model.info.vocabSize);
      assert.ok(logits.every(Number.isFinite), 'logits are finite');
      // The special tokens have zero output weights, so greedy decoding runs to maxTokens.
      assert.equal(generated.length, 4);
    });
  }

  it('two different images give different logits, the same image the same', async () => {
    await assertLogitsFollowTheImage(async (image) => (await ask(image)).logits);
  });
});
