/**
 * Qwen2.5-VL and Qwen3-VL: ChatML conversations, boxes as JSON `{"bbox_2d": [x1, y1, x2, y2],
 * "label": "..."}`, and dynamic resolution. mtmd resizes an image to sides that are multiples of
 * patch x merge (its smart resize, within 8 to 4096 tokens as the pinned clip.cpp sets them), fitting
 * it in with centred black padding (mtmd's resize, unlike transformers' stretch), and lays the
 * tokens out on that grid. Qwen2.5-VL writes boxes in pixels of that resized frame, Qwen3-VL in
 * thousandths of it; the frame is the grid mtmd reported for turn one's image (where it did not,
 * over llama-server, the same resize computed here).
 */
import { alignedSize, letterbox, type Frame } from '../../image/frame';
import type { ImageSize } from '../../image/geometry';
import { chatFamily, type BoxConvention, type FamilyFacts } from '../family';
import type { TurnImage } from '../types';

/** Spatial merge of the pinned Qwen-VL projectors (2 x 2 patches per token). */
const MERGE = 2;
/** The pinned clip.cpp's limits on a Qwen-VL image, in tokens (imageMinTokens / imageMaxTokens change them). */
const MIN_TOKENS = 8;
const MAX_TOKENS = 4096;

/** The JSON box, numbers as `num` gives them; the label is short, plain text. */
function jsonBoxGrammar(num: string, comment: string): string {
  return [
    `# ${comment}`,
    'root ::= "{\\"bbox_2d\\": [" num ", " num ", " num ", " num "], \\"label\\": \\"" label "\\"}"',
    `num ::= ${num}`,
    'label ::= [^"\\\\\\n]{0,40}',
    '',
  ].join('\n');
}

const BBOX = /"bbox_2d"\s*:\s*\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]/u;

/** The first `"bbox_2d": [...]` of a Qwen-VL answer. */
export function readBbox2d(text: string): [number, number, number, number] | null {
  const match = BBOX.exec(text);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3]), Number(match[4])] : null;
}

/** The frame of an image: turn one's token grid, else mtmd's resize computed. */
function qwenFrame(image: ImageSize, seen: TurnImage | undefined, facts: FamilyFacts): Frame {
  const unit = facts.patchSize * MERGE;
  const grid = seen?.grid;
  const { min = MIN_TOKENS, max = MAX_TOKENS } = facts.imageTokens;
  const size = grid ? { width: grid.width * unit, height: grid.height * unit } : alignedSize(image, unit, min * unit * unit, max * unit * unit);
  return letterbox(image, size);
}

const INSTRUCTIONS = {
  roi: '{image}To answer the question: "{question}", locate the region of interest in the image and output its bbox coordinates in JSON format.',
  answer: 'The region of interest in the image is {image}. Answer the question: "{question}"',
  baseline: '{image}{question}',
};

const shared = {
  instructions: INSTRUCTIONS,
  frame: qwenFrame,
  // The region gets the area the whole image was seen at, so about as many tokens.
  zoomPixels: (frame: Frame) => (frame.content.right - frame.content.left) * (frame.content.bottom - frame.content.top),
  maxImageTokens: (facts: FamilyFacts) => facts.imageTokens.max ?? MAX_TOKENS,
};

const QWEN25_BOX: BoxConvention = {
  grammar: jsonBoxGrammar('"0" | [1-9] [0-9]{0,4}', 'Qwen2.5-VL box: JSON bbox_2d in pixels of the image as the model saw it.'),
  read: readBbox2d,
  units: 'pixels',
};

const QWEN3_BOX: BoxConvention = {
  grammar: jsonBoxGrammar('"1000" | "0" | [1-9] [0-9]{0,2}', 'Qwen3-VL box: JSON bbox_2d in thousandths of the image as the model saw it.'),
  read: readBbox2d,
  units: 'thousandths',
};

export const QWEN25_VL = chatFamily({
  ...shared,
  name: 'qwen2.5-vl',
  title: 'Qwen2.5-VL',
  projectorTypes: ['qwen2.5vl_merger'],
  textArchitectures: ['qwen2vl'],
  box: QWEN25_BOX,
});

export const QWEN3_VL = chatFamily({
  ...shared,
  name: 'qwen3-vl',
  title: 'Qwen3-VL',
  projectorTypes: ['qwen3vl_merger'],
  textArchitectures: ['qwen3vl', 'qwen3vlmoe'],
  box: QWEN3_BOX,
});
