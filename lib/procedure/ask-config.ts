/**
 * A question, checked into what the procedure (procedure.ts) needs to run it: its options, and
 * what the model's family (family.ts) makes of the question: the prompts of each turn, turn one's
 * box grammar, and the region steps (read the box, zoom into it, map it onto the picture), the
 * family's own or, for LLaVA-1.5 in reference mode, the authors'.
 */
import { booleanOption, functionOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';
import type { BoundFamily, RegionSteps } from './family';
import type { AskOptions } from './types';
import type { ChainOfSpotPromptOptions, Prompt } from './prompt';

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
export function askConfig(question: string, options: AskOptions | undefined, defaults: ChainOfSpotPromptOptions, referenceDefault: boolean, family: BoundFamily): AskConfig {
  if (typeof question !== 'string') throw new TypeError('question must be a string');
  const opts = optionsObject(options);
  const onText = functionOption<(text: string, turn: 1 | 2) => void>(opts.onText, 'onText');
  const reference = booleanOption(opts.reference, 'reference', referenceDefault);
  assertReferenceApplies(reference, family);
  const prompts = family.prompts(question, { ...defaults, ...promptDefaults(opts) });
  return {
    reference,
    maxTokens: integerOption(opts.maxTokens, 'maxTokens', 1, 1 << 20, 128),
    roiMaxTokens: integerOption(opts.roiMaxTokens, 'roiMaxTokens', 1, 1 << 20, 128),
    boxGrammar: booleanOption(opts.grammar, 'grammar', !reference) ? family.boxGrammar : undefined,
    steps: family.steps(reference),
    includeRoiImage: booleanOption(opts.includeRoiImage, 'includeRoiImage', false),
    turnOnePrompt: prompts.turnOne,
    turnTwoPrompt: prompts.turnTwo,
    baselinePrompt: prompts.baseline,
    signal: signalOption(opts.signal),
    onText1: onText && ((text: string) => onText(text, 1)),
    onText2: onText && ((text: string) => onText(text, 2)),
  };
}

/** @throws RangeError when reference mode is asked of a family it does not apply to. */
export function assertReferenceApplies(reference: boolean, family: BoundFamily): void {
  if (reference && !family.hasReference) {
    throw new RangeError(`reference mode reproduces the authors' LLaVA-1.5 code; this is a ${family.name} model: leave reference unset`);
  }
}

/** The instruction templates an options object sets, checked. */
export function promptDefaults(options: ChainOfSpotPromptOptions): ChainOfSpotPromptOptions {
  const result: { roiInstruction?: string; answerInstruction?: string } = {};
  if (options.roiInstruction !== undefined) result.roiInstruction = requiredString(options.roiInstruction, 'roiInstruction');
  if (options.answerInstruction !== undefined) result.answerInstruction = requiredString(options.answerInstruction, 'answerInstruction');
  return result;
}
