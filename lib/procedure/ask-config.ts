/**
 * A question, checked into what the procedure (procedure.ts) needs to run it: its options, and
 * everything that belongs to the model's family and the question's mode: the prompts of each
 * turn, turn one's box grammar, and the region steps (read the box, zoom into it, map it onto the
 * picture), this package's or the reference's own. LLaVA-1.5's are the only ones today; another
 * family's prompts and box convention are chosen here, not in the procedure.
 */
import type { RgbImage } from '../common/rgb-image';
import { booleanOption, functionOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';
import type { ImageSize, PixelRect } from '../image/geometry';
import { boxToPixels, prepareReferenceRegion, prepareRegion, referenceBoxToPixels } from '../image/image';
import { BOX_GRAMMAR, parseBoxOrFallback, parseReferenceBoxOrFallback, type Box, type RegionBox } from './box';
import type { AskOptions } from './types';
import { answerContinuation, baselinePrompt, roiPrompt, type ChainOfSpotPromptOptions, type Prompt } from './prompt';

/** A question's options, checked. */
export interface AskConfig {
  reference: boolean;
  maxTokens: number;
  roiMaxTokens: number;
  /** The grammar turn one's box is written under (undefined: the model writes freely). */
  boxGrammar: string | undefined;
  /** How turn one's answer becomes the zoomed region. */
  steps: RegionSteps;
  includeRoiImage: boolean;
  /** Turn one's prompt and turn two's continuation, built once (a malformed instruction throws early). */
  turnOnePrompt: Prompt;
  turnTwoPrompt: Prompt;
  /** The baseline's one turn. */
  baselinePrompt: Prompt;
  signal: AbortSignal | undefined;
  onText1: ((text: string) => void) | undefined;
  onText2: ((text: string) => void) | undefined;
}

/**
 * Checks a question and its options (argument mistakes throw TypeError / RangeError here, before
 * any work), on top of the instance's prompt defaults and reference mode.
 */
export function askConfig(question: string, options: AskOptions | undefined, defaults: ChainOfSpotPromptOptions, referenceDefault: boolean): AskConfig {
  if (typeof question !== 'string') throw new TypeError('question must be a string');
  const opts = optionsObject(options);
  const onText = functionOption<(text: string, turn: 1 | 2) => void>(opts.onText, 'onText');
  const prompts = { ...defaults, ...promptDefaults(opts) };
  const reference = booleanOption(opts.reference, 'reference', referenceDefault);
  return {
    reference,
    maxTokens: integerOption(opts.maxTokens, 'maxTokens', 1, 1 << 20, 128),
    roiMaxTokens: integerOption(opts.roiMaxTokens, 'roiMaxTokens', 1, 1 << 20, 128),
    boxGrammar: booleanOption(opts.grammar, 'grammar', !reference) ? BOX_GRAMMAR : undefined,
    steps: reference ? REFERENCE_STEPS : PACKAGE_STEPS,
    includeRoiImage: booleanOption(opts.includeRoiImage, 'includeRoiImage', false),
    turnOnePrompt: roiPrompt(question, prompts),
    turnTwoPrompt: answerContinuation(question, prompts),
    baselinePrompt: baselinePrompt(question),
    signal: signalOption(opts.signal),
    onText1: onText && ((text: string) => onText(text, 1)),
    onText2: onText && ((text: string) => onText(text, 2)),
  };
}

/** The instruction templates an options object sets, checked. */
export function promptDefaults(options: ChainOfSpotPromptOptions): ChainOfSpotPromptOptions {
  const result: { roiInstruction?: string; answerInstruction?: string } = {};
  if (options.roiInstruction !== undefined) result.roiInstruction = requiredString(options.roiInstruction, 'roiInstruction');
  if (options.answerInstruction !== undefined) result.answerInstruction = requiredString(options.answerInstruction, 'answerInstruction');
  return result;
}

/** Turn one's answer to the zoomed region, the steps that differ between the two modes. */
export interface RegionSteps {
  /** The region turn one's answer names, or the whole image. */
  read(text: string, image: ImageSize): RegionBox;
  /** The region cropped from the padded image and zoomed to `size`. */
  zoom(image: RgbImage, box: Box, size: number, maxPixels?: number): Promise<RgbImage>;
  /** The region in the original image's pixels, to draw it. */
  toPixels(box: Box, width: number, height: number): PixelRect;
}

const PACKAGE_STEPS: RegionSteps = { read: parseBoxOrFallback, zoom: prepareRegion, toPixels: boxToPixels };
const REFERENCE_STEPS: RegionSteps = { read: parseReferenceBoxOrFallback, zoom: prepareReferenceRegion, toPixels: referenceBoxToPixels };
