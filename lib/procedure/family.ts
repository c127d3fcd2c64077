/**
 * A model family: everything about the procedure that differs between vision-language models —
 * the conversation and its image marker, turn one's question and the box format it is answered in
 * (with a grammar admitting exactly that format and a lenient reader), the frame the box's numbers
 * are in and its mapping to the original pixels, how the region is zoomed, and turn two's message.
 * The procedure (procedure.ts) is the same for every family.
 *
 * This file holds the contract and the family shape shared by the chat-template families (one
 * file each under families/); LLaVA-1.5, the reference, is families/llava.ts.
 */
import { ChainOfSpotError } from '../common/errors';
import type { ImageTokenLimits } from '../llama/projector';
import type { RgbImage } from '../common/rgb-image';
import { frameRectToImageFractions, type Frame } from '../image/frame';
import type { Box, ImageSize, PixelRect } from '../image/geometry';
import { imageBoxToPixels, zoomRegion } from '../image/image';
import { fallbackBox, writtenCorners, type RegionBox } from './box';
import { ChatTemplate, type ChatMessage } from './chat';
import { fillTemplate, type ChainOfSpotPromptOptions, type InstructionTemplate, type Prompt } from './prompt';
import type { FamilyName, TurnImage } from './types';

/** What a family needs to know of the loaded files. */
export interface FamilyFacts {
  /** The chat template the text model carries (`tokenizer.chat_template`), if any. */
  readonly chatTemplate: string | null;
  /** The texts of the vocabulary's BOS and EOS tokens, for templates that write them. */
  readonly tokens: { readonly bos: string; readonly eos: string };
  /** The projector's `clip.vision.image_size`. */
  readonly imageSize: number;
  /** The projector's `clip.vision.patch_size`. */
  readonly patchSize: number;
  /** Tokens one image of `imageSize` x `imageSize` becomes. */
  readonly tokensPerImage: number;
  /** The limits on one image's tokens the projector runs under, where they are not its own (imageMinTokens, imageMaxTokens). */
  readonly imageTokens: ImageTokenLimits;
}

/** Turn one's answer to the zoomed region. */
export interface RegionSteps {
  /**
   * The region turn one's answer names, or the whole image: from the answer, the original's size
   * and how the model saw the image in turn one (its token grid, where mtmd reports one).
   */
  read(text: string, image: ImageSize, seen: TurnImage | undefined): RegionBox;
  /** The region cropped and zoomed, as the projector will be given it. */
  zoom(image: RgbImage, box: Box, seen: TurnImage | undefined, maxPixels: number): Promise<RgbImage>;
  /** The region in the original image's pixels, to draw it. */
  toPixels(box: Box, width: number, height: number): PixelRect;
}

/** One question's prompts. */
export interface QuestionPrompts {
  readonly turnOne: Prompt;
  /** What follows turn one's answer. */
  readonly turnTwo: Prompt;
  readonly baseline: Prompt;
}

/** A family, bound to the files it was loaded from. */
export interface BoundFamily {
  readonly name: FamilyName;
  /** What it was bound with (a family's binding is a function of these alone). */
  readonly facts: FamilyFacts;
  /** Whether a conversation starts with the vocabulary's BOS token put first (the template writes it otherwise). */
  readonly bos: boolean;
  /** Turn one's box grammar. */
  readonly boxGrammar: string;
  /** Whether reference mode (the authors' own code, on LLaVA-1.5) applies. */
  readonly hasReference: boolean;
  /** Names how `prepareImage` prepares an image (for the cache of prepared images). */
  readonly preparation: string;
  /** The image as the projector is given it. */
  prepareImage(original: RgbImage, maxPixels: number): Promise<RgbImage>;
  prompts(question: string, options: ChainOfSpotPromptOptions): QuestionPrompts;
  steps(reference: boolean): RegionSteps;
  /** The most tokens one image may take, for the default context size. */
  readonly maxImageTokens: number;
}

/** A family: how it is recognized, and its binding to a pair of files. */
export interface Family {
  readonly name: FamilyName;
  /** Its name for people: `Qwen2.5-VL`. */
  readonly title: string;
  /** The projector types (`clip.projector_type`) it is detected by. */
  readonly projectorTypes: readonly string[];
  /** The text models (`general.architecture`) its projectors go with. */
  readonly textArchitectures: readonly string[];
  bind(facts: FamilyFacts): BoundFamily;
}

/** How a chat-template family writes and reads its box. */
export interface BoxConvention {
  /** A GBNF grammar admitting exactly the family's box answer. */
  readonly grammar: string;
  /** The four numbers of the family's own format, or null (then any four numbers are read). */
  readonly read: (text: string) => [number, number, number, number] | null;
  /** What the numbers count: pixels of the frame, thousandths of it, or fractions of it. */
  readonly units: 'pixels' | 'thousandths' | 'fractions';
}

/** The parts of a chat-template family (every family but LLaVA-1.5). */
export interface ChatFamilyShape {
  readonly name: FamilyName;
  readonly title: string;
  readonly projectorTypes: readonly string[];
  readonly textArchitectures: readonly string[];
  /** Default instructions: turn one's (`{image}`: the original), turn two's (`{image}`: the region) and the baseline's. */
  readonly instructions: { readonly roi: InstructionTemplate; readonly answer: InstructionTemplate; readonly baseline: InstructionTemplate };
  readonly box: BoxConvention;
  /** The frame the model read the image in. */
  frame(image: ImageSize, seen: TurnImage | undefined, facts: FamilyFacts): Frame;
  /** The area to enlarge a region's crop to (0: the crop as it is, for fixed-resolution encoders). */
  zoomPixels(frame: Frame): number;
  maxImageTokens(facts: FamilyFacts): number;
}

/** A family whose conversation is its chat template, with the given shape. */
export function chatFamily(shape: ChatFamilyShape): Family {
  return {
    name: shape.name,
    title: shape.title,
    projectorTypes: shape.projectorTypes,
    textArchitectures: shape.textArchitectures,
    bind(facts: FamilyFacts): BoundFamily {
      if (facts.chatTemplate === null) {
        throw new ChainOfSpotError('ERR_MODEL_LOAD', `a ${shape.title} model needs a chat template (tokenizer.chat_template) in its GGUF, and this one has none: use a GGUF converted by llama.cpp's tools`);
      }
      const template = new ChatTemplate(facts.chatTemplate, facts.tokens);
      // Rendered once here, so that a template that cannot render or continue the conversation
      // fails the load, not the first question.
      chatPrompts(template, shape, 'What is this?', {});
      const steps = chatRegionSteps(shape, facts);
      return {
        name: shape.name,
        facts,
        bos: false,
        boxGrammar: shape.box.grammar,
        hasReference: false,
        preparation: 'as-is',
        prepareImage: async (original) => original,
        prompts: (question, options) => chatPrompts(template, shape, question, options),
        steps: () => steps,
        maxImageTokens: shape.maxImageTokens(facts),
      };
    },
  };
}

function chatPrompts(template: ChatTemplate, shape: ChatFamilyShape, question: string, options: ChainOfSpotPromptOptions): QuestionPrompts {
  const turnOne: ChatMessage = { role: 'user', parts: fillTemplate(options.roiInstruction ?? shape.instructions.roi, question, 'original') };
  const turnTwo: ChatMessage = { role: 'user', parts: fillTemplate(options.answerInstruction ?? shape.instructions.answer, question, 'roi') };
  const baseline: ChatMessage = { role: 'user', parts: fillTemplate(shape.instructions.baseline, question, 'original') };
  return {
    turnOne: template.prompt([turnOne]),
    turnTwo: template.continuation([turnOne], [turnTwo]),
    baseline: template.prompt([baseline]),
  };
}

/** Reads a box in the family's frame and units into fractions of the original; zooms by area. */
function chatRegionSteps(shape: ChatFamilyShape, facts: FamilyFacts): RegionSteps {
  return {
    read(text, image, seen) {
      const corners = shape.box.read(text) ?? writtenCorners(text);
      if (corners === null || !corners.every(Number.isFinite)) return fallbackBox();
      const frame = shape.frame(image, seen, facts);
      const scale = { pixels: [1, 1], thousandths: [frame.width / 1000, frame.height / 1000], fractions: [frame.width, frame.height] }[shape.box.units];
      const [x1, y1, x2, y2] = corners;
      const box = frameRectToImageFractions({ left: x1 * scale[0]!, top: y1 * scale[1]!, right: x2 * scale[0]!, bottom: y2 * scale[1]! }, frame);
      return box === null ? fallbackBox() : { box, source: 'model' };
    },
    zoom(image, box, seen, maxPixels) {
      return zoomRegion(image, box, shape.zoomPixels(shape.frame(image, seen, facts)), maxPixels);
    },
    toPixels: imageBoxToPixels,
  };
}
