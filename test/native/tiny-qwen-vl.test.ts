/**
 * The tiny Qwen2.5-VL and Qwen3-VL pairs (lib/models/tiny-qwen-vl.ts) through the addon: llama.cpp
 * loads both files, turns images of any size into the number of tokens its Qwen preprocessing
 * gives, and the text model generates from them.
 */
import assert from 'node:assert/strict';

import { Model } from '../../lib/llama/model';
import type { Projector } from '../../lib/llama/projector';
import type { RgbPixels } from '../../lib/llama/session';
import { ensureTinyQwen25Vl, ensureTinyQwen3Vl } from '../../lib/models/tiny-qwen-vl';
import type { TinyLlavaFiles } from '../../lib/models/tiny-model';
import { assertLogitsFollowTheImage } from '../support/logits';
import { seededPattern } from '../support/images';
import { MODEL_CACHE } from '../support/models';

/**
 * The image token counts, worked out by hand from the pinned preprocessing (tools/mtmd/mtmd-image.cpp,
 * `calc_size_preserved_ratio` with align = patch * merge, min_pixels = 8 tokens' pixels): each side
 * is rounded to the nearest multiple of align (at least align); when the area is under min_pixels,
 * both sides are scaled by beta = sqrt(min_pixels / (w * h)) and rounded up to multiples of align.
 * Tokens = (w / align) * (h / align).
 */
interface Family {
  readonly name: string;
  readonly files: () => Promise<TinyLlavaFiles>;
  /** [width, height, tokens] */
  readonly counts: readonly (readonly [number, number, number])[];
}

const FAMILIES: readonly Family[] = [
  {
    name: 'Qwen2.5-VL (14-pixel patches, merge 2: align 28, min_pixels 8 * 784 = 6272)',
    files: () => ensureTinyQwen25Vl(MODEL_CACHE),
    counts: [
      // 150/28 = 5.36 -> 5 (140), 90/28 = 3.21 -> 3 (84); 140 * 84 = 11760 >= 6272: 5 * 3 = 15
      [150, 90, 15],
      // 200/28 = 7.14 -> 7 (196), 120/28 = 4.29 -> 4 (112): 7 * 4 = 28
      [200, 120, 28],
      // 40/28 -> 1, 30/28 -> 1: 28 * 28 = 784 < 6272, beta = sqrt(6272 / 1200) = 2.286;
      // 40 * 2.286 / 28 = 3.27 -> 4, 30 * 2.286 / 28 = 2.45 -> 3: 4 * 3 = 12
      [40, 30, 12],
    ],
  },
  {
    name: 'Qwen3-VL (16-pixel patches, merge 2: align 32, min_pixels 8 * 1024 = 8192)',
    files: () => ensureTinyQwen3Vl(MODEL_CACHE),
    counts: [
      // 150/32 = 4.69 -> 5 (160), 90/32 = 2.81 -> 3 (96); 160 * 96 = 15360 >= 8192: 5 * 3 = 15
      [150, 90, 15],
      // 200/32 = 6.25 -> 6 (192), 120/32 = 3.75 -> 4 (128): 6 * 4 = 24
      [200, 120, 24],
      // 40/32 -> 1, 30/32 -> 1: 32 * 32 = 1024 < 8192, beta = sqrt(8192 / 1200) = 2.613;
      // 40 * 2.613 / 32 = 3.27 -> 4, 30 * 2.613 / 32 = 2.45 -> 3: 4 * 3 = 12
      [40, 30, 12],
    ],
  },
];

for (const family of FAMILIES) {
  describe(`tiny ${family.name}`, function () {
    this.timeout(120_000);
    let model: Model;
    let projector: Projector;

    before(async () => {
      const files = await family.files();
      model = await Model.load(files.model);
      projector = await model.loadProjector(files.mmproj);
    });
    after(async () => model?.dispose());

    /** A ChatML turn around an image; returns the image's token count and the logits after the prompt. */
    async function ask(image: RgbPixels): Promise<{ tokens: number; logits: Float32Array; generated: Int32Array }> {
      const session = await model.createSession({ contextSize: 1024 });
      try {
        await session.evaluate('<|im_start|>user\n', { parseSpecial: true });
        const { tokens } = await session.evaluateImage(projector, image);
        await session.evaluate('What color is the sign?<|im_end|>\n<|im_start|>assistant\n', { parseSpecial: true });
        const logits = (await session.logits())!;
        const { tokens: generated } = await session.generate({ maxTokens: 4 });
        return { tokens, logits, generated };
      } finally {
        await session.dispose();
      }
    }

    for (const [width, height, expected] of family.counts) {
      it(`a ${width}x${height} image is ${expected} tokens`, async () => {
        const { tokens, logits, generated } = await ask(seededPattern(width, height, 1));
        assert.equal(tokens, expected);
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
}
