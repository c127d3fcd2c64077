/**
 * LLaVA-1.5, the reference: Vicuna's `vicuna_v1` conversation (prompt.ts), the image padded to a
 * square of the mean colour and resized to the encoder's side, boxes as fractions of that square
 * in the authors' format, and the region padded and resized the same way; in reference mode, the
 * authors' own reading of the box and Pillow's crop.
 */
import { boxToPixels, prepareOriginal, prepareReferenceRegion, prepareRegion, referenceBoxToPixels } from '../../image/image';
import { BOX_GRAMMAR, parseBoxOrFallback, parseReferenceBoxOrFallback } from '../box';
import type { Family, RegionSteps } from '../family';
import { answerContinuation, baselinePrompt, roiPrompt } from '../prompt';

export const LLAVA_15: Family = {
  name: 'llava-1.5',
  title: 'LLaVA-1.5',
  projectorTypes: ['mlp', 'mlp_norm'],
  textArchitectures: ['llama'],
  bind(facts) {
    const { imageSize } = facts;
    const packageSteps: RegionSteps = {
      read: (text, image) => parseBoxOrFallback(text, image),
      zoom: (image, box, _seen, maxPixels) => prepareRegion(image, box, imageSize, maxPixels),
      toPixels: boxToPixels,
    };
    const referenceSteps: RegionSteps = {
      read: (text, image) => parseReferenceBoxOrFallback(text, image),
      zoom: (image, box, _seen, maxPixels) => prepareReferenceRegion(image, box, imageSize, maxPixels),
      toPixels: referenceBoxToPixels,
    };
    return {
      name: 'llava-1.5',
      facts,
      bos: true,
      boxGrammar: BOX_GRAMMAR,
      hasReference: true,
      preparation: `padded-square ${imageSize}`,
      prepareImage: (original, maxPixels) => prepareOriginal(original, imageSize, maxPixels),
      prompts: (question, options) => ({
        turnOne: roiPrompt(question, options),
        turnTwo: answerContinuation(question, options),
        baseline: baselinePrompt(question),
      }),
      steps: (reference) => (reference ? referenceSteps : packageSteps),
      maxImageTokens: facts.tokensPerImage,
    };
  },
};
