/**
 * Gemma 3: its own turn markers, one fixed-size image (mtmd fits it into the encoder's square with
 * centred black padding), and no native grounding: turn one is asked in LLaVA's box format,
 * `[left, top, right, bottom]` as fractions, under the same grammar, read as fractions of that
 * square. Such a box is the model's guess; it was not trained to write one.
 */
import { letterbox } from '../../image/frame';
import { BOX_GRAMMAR } from '../box';
import { chatFamily } from '../family';

export const GEMMA3 = chatFamily({
  name: 'gemma3',
  title: 'Gemma 3',
  projectorTypes: ['gemma3'],
  textArchitectures: ['gemma3'],
  instructions: {
    roi:
      '{image}\nTo answer the question: "{question}", what is the region of interest in the image? ' +
      'Answer with its box [left, top, right, bottom], each a fraction of the image from 0 to 1.',
    answer: 'The region of interest in the image is {image}\nAnswer the question: "{question}"',
    baseline: '{image}\n{question}',
  },
  box: { grammar: BOX_GRAMMAR, read: () => null, units: 'fractions' },
  frame: (image, _seen, facts) => letterbox(image, { width: facts.imageSize, height: facts.imageSize }),
  // A fixed-size encoder resizes whatever it is given: the crop as it is.
  zoomPixels: () => 0,
  maxImageTokens: (facts) => facts.tokensPerImage,
});
