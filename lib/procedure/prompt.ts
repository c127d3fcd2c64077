/**
 * The prompts of Chain-of-Spot, exactly as the reference writes them (the authors'
 * `llava/eval/model_vqa_loader_CoS.py` on LLaVA's `vicuna_v1` conversation template), as structured
 * parts rather than strings.
 *
 * Why parts: the reference tokenizes its prompt split at each `<image>` marker, every chunk on its
 * own (LLaVA's `tokenizer_image_token`), and SentencePiece puts its `▁` space prefix at the start
 * of every chunk. llama.cpp's SPM tokenizer adds the same prefix at the start of each tokenize call
 * and after each special token, so tokenizing every text part on its own (BOS only before the very
 * first) reproduces the reference's tokens exactly. It also keeps user text literal: a question
 * holding `</s>USER:` or `<image>` stays text, because only `special` and `image` parts are ever
 * turned into special tokens or image embeddings.
 */
import { optionsObject } from '../common/validate';

/** The system text of LLaVA's `vicuna_v1` template. */
export const SYSTEM_PROMPT =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/** Which image an image part stands for: the original, or the zoomed region of interest. */
export type ImageSlot = 'original' | 'roi';

/** Literal text: tokenize it without parsing special tokens. */
export interface TextPart {
  readonly type: 'text';
  readonly text: string;
}

/** A special token of the template (the end of an assistant turn). */
export interface SpecialPart {
  readonly type: 'special';
  readonly token: '</s>';
}

/**
 * Text of a model's chat template (role headers, turn separators): tokenized with special tokens
 * parsed, so `<|im_start|>` is one token. Only ever template text, never user text.
 */
export interface TemplatePart {
  readonly type: 'template';
  readonly text: string;
}

/** Where an image's embeddings go. */
export interface ImagePart {
  readonly type: 'image';
  readonly image: ImageSlot;
}

/**
 * The image an image part names, from those a turn was given.
 * @throws TypeError when it was not given.
 * @internal
 */
export function partImage<Image>(images: Partial<Record<ImageSlot, Image>>, part: ImagePart): Image {
  const image = images[part.image];
  if (image === undefined) throw new TypeError(`the prompt needs the ${part.image} image`);
  return image;
}

/** One part of a {@link Prompt}. */
export type PromptPart = TextPart | SpecialPart | TemplatePart | ImagePart;

/**
 * A prompt as parts, in order. Adjacent text is always merged into one part and there is no empty
 * text part, so each text part is exactly one chunk the reference tokenizes on its own. BOS is not
 * a part: it goes before the first part of a prompt that starts a conversation.
 */
export type Prompt = readonly PromptPart[];

/**
 * The placeholders of an instruction template: `{image}` (exactly once) marks where the image goes,
 * `{question}` (any number of times) is replaced by the question as literal text. Any other brace
 * text is literal.
 */
export type InstructionTemplate = string;

/**
 * Turn one's user message as the reference asks it at inference: "what is the region of interest".
 */
export const ROI_INSTRUCTION: InstructionTemplate =
  '{image}\nTo answer the question: "{question}", what is the region of interest in the image?';

/**
 * Turn one's user message as the reference was trained (`llava/train/train_CoS.py`): "where is the
 * region of interest". The authors evaluate with {@link ROI_INSTRUCTION}; this one is here to try.
 */
export const TRAINING_ROI_INSTRUCTION: InstructionTemplate =
  '{image}\nTo answer the question: "{question}", where is the region of interest in the image?';

/**
 * Turn two's user message (the same in training and inference). The newline before the full stop
 * is the reference's own and is kept: the model was trained on it.
 */
export const ANSWER_INSTRUCTION: InstructionTemplate =
  'The region of interest in the image is {image}\n. Answer the question: "{question}"';

/** Options of the Chain-of-Spot prompts. */
export interface ChainOfSpotPromptOptions {
  /** Turn one's user message, with the original image at `{image}`. Default {@link ROI_INSTRUCTION}. */
  readonly roiInstruction?: InstructionTemplate;
  /** Turn two's user message, with the zoomed region at `{image}`. Default {@link ANSWER_INSTRUCTION}. */
  readonly answerInstruction?: InstructionTemplate;
}

const END_OF_TURN: SpecialPart = Object.freeze({ type: 'special', token: '</s>' });
const BASELINE_INSTRUCTION: InstructionTemplate = '{image}\n{question}';

/**
 * The plain single-turn LLaVA-1.5 prompt, the baseline without Chain-of-Spot:
 * `{SYSTEM} USER: <image>\n{question} ASSISTANT:`.
 *
 * @throws TypeError when `question` is not a string.
 */
export function baselinePrompt(question: string): Prompt {
  return conversationStart(fillTemplate(BASELINE_INSTRUCTION, question, 'original'));
}

/**
 * Turn one, from the start of the conversation:
 * `{SYSTEM} USER: <image>\nTo answer the question: "{question}", what is the region of interest in the image? ASSISTANT:`
 * with the original image. The prompt ends at `ASSISTANT:` without a space: the model writes the
 * space itself, as the first character of its answer.
 *
 * @throws TypeError when `question` or an instruction is not a string, or `options` not an object;
 *   RangeError when an instruction does not hold `{image}` exactly once.
 */
export function roiPrompt(question: string, options?: ChainOfSpotPromptOptions): Prompt {
  return conversationStart(fillTemplate(optionsObject(options).roiInstruction ?? ROI_INSTRUCTION, question, 'original'));
}

/**
 * Turn two as a continuation: what goes into the context right after the tokens the model
 * generated in turn one (its answer, without its end-of-sequence token):
 * `</s>USER: The region of interest in the image is <image>\n. Answer the question: "{question}" ASSISTANT:`
 * with the zoomed region.
 *
 * @throws as {@link roiPrompt}.
 */
export function answerContinuation(question: string, options?: ChainOfSpotPromptOptions): Prompt {
  return mergeParts([END_OF_TURN, ...answerTurn(question, options)]);
}

/**
 * Both turns from scratch, as the reference builds turn two's prompt:
 * `{turn one} {roiAnswer}</s>USER: The region of interest in the image is <image>\n. Answer the question: "{question}" ASSISTANT:`.
 * This is turn one's prompt, then what the model generated, then {@link answerContinuation}.
 *
 * `roiAnswer` is stripped of surrounding whitespace, as the reference strips the decoded answer.
 * An empty answer is rendered as the reference's template does: an empty message is skipped, so
 * `ASSISTANT:` is followed directly by `USER:` with no `</s>`.
 *
 * @throws as {@link roiPrompt}, and TypeError when `roiAnswer` is not a string.
 */
export function twoTurnPrompt(question: string, roiAnswer: string, options?: ChainOfSpotPromptOptions): Prompt {
  assertString(roiAnswer, 'roiAnswer');
  const answer = roiAnswer.trim();
  const reply: PromptPart[] = answer === '' ? [] : [text(` ${answer}`), END_OF_TURN];
  return mergeParts([...roiPrompt(question, options), ...reply, ...answerTurn(question, options)]);
}

/**
 * The prompt as the reference's flat string: text as is, `</s>` for the special token, `<image>`
 * where an image goes (BOS is not written, as the reference's prompt string does not hold it).
 * For tests and for showing a prompt to people; never tokenize it, as it no longer tells user text
 * from markers.
 */
export function renderPrompt(parts: Prompt): string {
  if (!Array.isArray(parts)) throw new TypeError('parts must be an array of prompt parts');
  return parts.map(renderPart).join('');
}

function renderPart(part: PromptPart): string {
  switch (part?.type) {
    case 'text':
      return part.text;
    case 'special':
      return part.token;
    case 'template':
      return part.text;
    case 'image':
      return '<image>';
    default:
      throw new TypeError(`not a prompt part: ${JSON.stringify(part)}`);
  }
}

/** `{SYSTEM} USER: {message} ASSISTANT:` (vicuna_v1: `system + " "`, then `role + ": " + message + sep`). */
function conversationStart(message: PromptPart[]): Prompt {
  return mergeParts([text(`${SYSTEM_PROMPT} `), ...userTurn(message)]);
}

function answerTurn(question: string, options: ChainOfSpotPromptOptions | undefined): PromptPart[] {
  return userTurn(fillTemplate(optionsObject(options).answerInstruction ?? ANSWER_INSTRUCTION, question, 'roi'));
}

/** A user message (separator `" "`), then the open assistant slot `ASSISTANT:` (no trailing space). */
function userTurn(message: PromptPart[]): PromptPart[] {
  return [text('USER: '), ...message, text(' ASSISTANT:')];
}

/**
 * Splits an instruction template at its placeholders, so the question never becomes anything but
 * text. @internal
 */
export function fillTemplate(template: InstructionTemplate, question: string, image: ImageSlot): PromptPart[] {
  assertString(question, 'question');
  assertString(template, 'instruction');
  const images = template.split('{image}').length - 1;
  if (images !== 1) throw new RangeError(`an instruction must hold {image} exactly once, found ${images} in ${JSON.stringify(template)}`);
  return template.split(/(\{image\}|\{question\})/).map((piece) => {
    if (piece === '{image}') return { type: 'image', image };
    return text(piece === '{question}' ? question : piece);
  });
}

/**
 * Merges adjacent text parts, and adjacent template parts, and drops empty ones; the result and
 * its parts are frozen. @internal
 */
export function mergeParts(parts: readonly PromptPart[]): Prompt {
  const merged: PromptPart[] = [];
  for (const part of parts) {
    const last = merged[merged.length - 1];
    if ((part.type === 'text' || part.type === 'template') && last?.type === part.type) merged[merged.length - 1] = { type: part.type, text: last.text + part.text };
    else if ((part.type !== 'text' && part.type !== 'template') || part.text !== '') merged.push(part);
  }
  return Object.freeze(merged.map((part) => Object.freeze(part)));
}

function text(value: string): TextPart {
  return { type: 'text', text: value };
}

function assertString(value: unknown, name: string): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${typeof value}`);
}
