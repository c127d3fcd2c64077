/**
 * InternVL 2.5 / 3: ChatML conversations with `<image>\n` before the text, boxes as
 * `<ref>label</ref><box>[[x1, y1, x2, y2]]</box>` in thousandths of the original width and height
 * (mtmd cuts the image into stretched tiles plus an overview, so the frame is the image itself).
 */
import { wholeFrame, type Frame } from '../../image/frame';
import { chatFamily, type FamilyFacts } from '../family';

const BOX = /<box>\s*\[\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]\]/u;

/** The first `<box>[[...]]` of an InternVL answer. */
export function readInternVlBox(text: string): [number, number, number, number] | null {
  const match = BOX.exec(text);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3]), Number(match[4])] : null;
}

/** The most tiles the pinned InternVL preprocessing cuts an image into, plus its overview. */
const MAX_TILES = 12;

export const INTERNVL = chatFamily({
  name: 'internvl',
  title: 'InternVL',
  projectorTypes: ['internvl'],
  textArchitectures: ['qwen2', 'qwen3', 'internlm2', 'llama'],
  instructions: {
    roi: '{image}\nTo answer the question: "{question}", please provide the bounding box coordinate of the region of interest in the image.',
    answer: 'The region of interest in the image is {image}\nAnswer the question: "{question}"',
    baseline: '{image}\n{question}',
  },
  box: {
    grammar: [
      '# InternVL box: <ref>label</ref><box>[[x1, y1, x2, y2]]</box> in thousandths of the image.',
      'root ::= "<ref>" label "</ref><box>[[" num ", " num ", " num ", " num "]]</box>"',
      'num ::= "1000" | "0" | [1-9] [0-9]{0,2}',
      'label ::= [^<\\n]{0,40}',
      '',
    ].join('\n'),
    read: readInternVlBox,
    units: 'thousandths',
  },
  frame: (image) => wholeFrame(image),
  // The region gets the area of the whole image, so about as many tiles.
  zoomPixels: (frame: Frame) => frame.width * frame.height,
  maxImageTokens: (facts: FamilyFacts) => facts.tokensPerImage * (MAX_TILES + 1),
});
