/**
 * The tiny Gemma 3 pair (lib/models/tiny-gemma3.ts) through the addon: llama.cpp loads both files,
 * tokenizes Gemma's turn and image markers as single tokens, letterboxes every image into the
 * encoder's square and turns it into the fixed token count of Gemma 3's pooled projector, between
 * the `<start_of_image>` / `<end_of_image>` tokens mtmd adds, and the text model generates from it.
 */
import assert from 'node:assert/strict';

import { Model } from '../../lib/llama/model';
import type { Projector } from '../../lib/llama/projector';
import type { RgbPixels } from '../../lib/llama/session';
import { ensureTinyGemma3 } from '../../lib/models/tiny-gemma3';
import { assertLogitsFollowTheImage, maxRelativeDifference } from '../support/logits';
import { seededPattern } from '../support/images';
import { MODEL_CACHE } from '../support/models';

/** `image` pasted into a black `side` x `side` square at row `top`, full width. */
function inBlackSquare(image: RgbPixels, side: number, top: number): RgbPixels {
  assert.equal(image.width, side);
  const data = new Uint8Array(side * side * 3);
  data.set(image.data, top * side * 3);
  return { data, width: side, height: side };
}

/** `image` with each row twice: twice as tall, as a stretch to the square would make it (nearly). */
function rowsDoubled(image: RgbPixels): RgbPixels {
  const row = image.width * 3;
  const data = new Uint8Array(row * image.height * 2);
  for (let y = 0; y < image.height; y++) {
    const line = image.data.subarray(y * row, (y + 1) * row);
    data.set(line, 2 * y * row);
    data.set(line, (2 * y + 1) * row);
  }
  return { data, width: image.width, height: image.height * 2 };
}

/**
 * The image token count, worked out by hand from the pinned source: mtmd's fixed-size
 * preprocessor (tools/mtmd/mtmd-image.cpp) letterboxes every image into the 224-pixel square;
 * 224 / 14 = 16 patches per side (clip.cpp's graph), average-pooled 4 x 4 (clip.cpp's default
 * `n_merge` for Gemma 3, tools/mtmd/models/siglip.cpp): 4 x 4 = 16 tokens, whatever the image size.
 */
const IMAGE_TOKENS = 16;

describe('tiny Gemma 3 (SigLIP 224-pixel images in 14-pixel patches, pooled 4 x 4)', function () {
  this.timeout(120_000);
  let model: Model;
  let projector: Projector;

  before(async () => {
    const files = await ensureTinyGemma3(MODEL_CACHE);
    model = await Model.load(files.model);
    projector = await model.loadProjector(files.mmproj);
  });
  after(async () => model?.dispose());

  it('loads as a gemma3 text model with the SentencePiece vocabulary and its special tokens', () => {
    assert.equal(model.info.architecture, 'gemma3');
    assert.equal(model.info.embeddingSize, 256);
    // <pad> 0, <eos> 1, <bos> 2, <unk> 3, as in Gemma's vocabulary.
    assert.equal(model.info.bos, 2);
    assert.equal(model.info.eos, 1);
  });

  it("tokenizes the template's and mtmd's markers as one token each", () => {
    // GEMMA3_SPECIAL_TOKENS' ids, in order from <start_of_turn> (4) to <end_of_image> (7).
    const markers: [string, number][] = [
      ['<bos>', 2],
      ['<start_of_turn>', 4],
      ['<end_of_turn>', 5],
      ['<start_of_image>', 6],
      ['<end_of_image>', 7],
    ];
    for (const [marker, id] of markers) {
      assert.deepEqual(Array.from(model.tokenize(marker, { parseSpecial: true })), [id], marker);
      assert.equal(model.detokenize([id], { special: true }), marker);
    }
    // Without parseSpecial the marker is text, several pieces.
    assert.ok(model.tokenize('<start_of_image>').length > 1);
  });

  /** A Gemma turn around an image; returns what evaluateImage gave, the positions it took, the logits after the prompt. */
  async function ask(image: RgbPixels): Promise<{ tokens: number; positions: number; logits: Float32Array; generated: Int32Array }> {
    const session = await model.createSession({ contextSize: 1024 });
    try {
      await session.evaluate('<start_of_turn>user\n', { parseSpecial: true });
      const before = session.position();
      const { tokens, position } = await session.evaluateImage(projector, image);
      await session.evaluate('What color is the sign?<end_of_turn>\n<start_of_turn>model\n', { parseSpecial: true });
      const logits = (await session.logits())!;
      const { tokens: generated } = await session.generate({ maxTokens: 4 });
      return { tokens, positions: position - before, logits, generated };
    } finally {
      await session.dispose();
    }
  }

  for (const [width, height] of [
    [224, 224],
    [150, 90],
    [90, 300],
  ] as const) {
    it(`a ${width}x${height} image is ${IMAGE_TOKENS} tokens between <start_of_image> and <end_of_image>`, async () => {
      const { tokens, positions, logits, generated } = await ask(seededPattern(width, height, 1));
      assert.equal(tokens, IMAGE_TOKENS);
      // mtmd adds one <start_of_image> and one <end_of_image> token (tools/mtmd/mtmd.cpp), no newlines.
      assert.equal(positions, IMAGE_TOKENS + 2);
      assert.equal(logits.length, model.info.vocabSize);
      assert.ok(logits.every(Number.isFinite), 'logits are finite');
      // The special tokens have zero output weights, so greedy decoding runs to maxTokens.
      assert.equal(generated.length, 4);
    });
  }

  it('letterboxes a non-square image: centred on black, not stretched', async () => {
    // 224x112 fits the 224 square at scale 1 (the resize is the identity), centred at row (224 - 112) / 2 = 56.
    const wide = seededPattern(224, 112, 3);
    const letterboxed = await ask(wide);
    const boxed = await ask(inBlackSquare(wide, 224, 56));
    const stretched = await ask(rowsDoubled(wide));
    assert.ok(maxRelativeDifference(letterboxed.logits, boxed.logits) < 1e-4, 'the same as the image on black bands');
    const difference = maxRelativeDifference(letterboxed.logits, stretched.logits);
    assert.ok(difference > 1e-2, `unlike the image stretched to the square (by ${difference})`);
  });

  it('two different images give different logits, the same image the same', async () => {
    await assertLogitsFollowTheImage(async (image) => (await ask(image)).logits);
  });
});
