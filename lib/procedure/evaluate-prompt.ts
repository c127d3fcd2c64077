/**
 * Evaluates a structured prompt (lib/prompt.ts) into a session: each text part tokenized on its
 * own without parsing special tokens (so user text stays text, and tokens match the reference's
 * chunk-by-chunk tokenization), template special tokens as their ids, chat-template text with its
 * special tokens parsed, images through the
 * projector. Consecutive token runs go into one evaluate call, so one batch.
 */
import { ChainOfSpotError } from '../common/errors';
import type { Model } from '../llama/model';
import type { Projector } from '../llama/projector';
import { partImage, type ImageSlot, type Prompt, type SpecialPart } from './prompt';
import type { RgbImage } from '../common/rgb-image';
import type { EvaluateResult, ImageEvaluation } from '../llama/session';
import type { TurnImage } from './types';

/** Where the time of one prompt went, and how many tokens it was. */
export interface PromptEvaluation {
  /** Tokens evaluated: text, template tokens and image tokens. */
  tokens: number;
  /** Milliseconds evaluating text tokens. */
  textMs: number;
  /** Milliseconds in the image encoder. */
  imageEncodeMs: number;
  /** Milliseconds evaluating image tokens in the text model. */
  imageDecodeMs: number;
  /** How the model saw each image part, in order. */
  images: TurnImage[];
}

/** Where a prompt is evaluated: a Session (its sequence 0), or one sequence under parallel decoding. */
export interface PromptTarget {
  readonly model: Model;
  evaluate(tokens: Int32Array, options: { signal?: AbortSignal | undefined }): Promise<EvaluateResult>;
  evaluateImage(projector: Projector, image: RgbImage<Uint8Array>, options: { signal?: AbortSignal | undefined }): Promise<ImageEvaluation>;
}

const specialTokenCache = new WeakMap<Model, Map<string, number>>();

/** The id of a template special token such as `</s>`; it must be one token of the vocabulary. */
export function specialTokenId(model: Model, part: SpecialPart): number {
  let ids = specialTokenCache.get(model);
  if (!ids) {
    ids = new Map();
    specialTokenCache.set(model, ids);
  }
  let id = ids.get(part.token);
  if (id === undefined) {
    const tokens = model.tokenize(part.token, { parseSpecial: true });
    if (tokens.length !== 1) {
      throw new ChainOfSpotError('ERR_MODEL_LOAD', `this model's vocabulary has no single ${part.token} token; it is not a LLaVA-1.5 (Vicuna) model: pass the family its files are (option family)`);
    }
    id = tokens[0]!;
    ids.set(part.token, id);
  }
  return id;
}

/** The token ids of the prompt's parts before its first image (BOS first when `bos`). */
export function tokenizeParts(model: Model, parts: Prompt, bos: boolean): Int32Array {
  const tokens: number[] = [];
  parts.forEach((part, index) => {
    if (part.type === 'image') throw new TypeError('tokenizeParts takes text and special parts only');
    if (part.type === 'special') tokens.push(specialTokenId(model, part));
    else tokens.push(...model.tokenize(part.text, { addBos: bos && index === 0, parseSpecial: part.type === 'template' }));
  });
  return Int32Array.from(tokens);
}

/**
 * Evaluates `parts` at the end of the target's sequence. `bos` puts BOS before the first part
 * (only at the start of a conversation).
 */
export async function evaluatePrompt(
  session: PromptTarget,
  projector: Projector,
  parts: Prompt,
  images: Partial<Record<ImageSlot, RgbImage<Uint8Array>>>,
  options: { bos: boolean; signal?: AbortSignal | undefined },
): Promise<PromptEvaluation> {
  const stats: PromptEvaluation = { tokens: 0, textMs: 0, imageEncodeMs: 0, imageDecodeMs: 0, images: [] };
  let run: Prompt[number][] = [];
  let first = true;
  const flush = async (): Promise<void> => {
    if (run.length === 0) return;
    const tokens = tokenizeParts(session.model, run, options.bos && first);
    first = false;
    run = [];
    const result = await session.evaluate(tokens, { signal: options.signal });
    stats.tokens += result.tokens;
    stats.textMs += result.ms;
  };
  for (const part of parts) {
    if (part.type !== 'image') {
      run.push(part);
      continue;
    }
    await flush();
    if (first && options.bos) {
      await session.evaluate(Int32Array.of(session.model.info.bos), { signal: options.signal });
      stats.tokens += 1;
    }
    first = false;
    const result = await session.evaluateImage(projector, partImage(images, part), { signal: options.signal });
    stats.tokens += result.tokens + result.markerTokens;
    stats.imageEncodeMs += result.encodeMs;
    stats.imageDecodeMs += result.decodeMs;
    stats.images.push({ tokens: result.tokens, grid: result.grids[0] });
  }
  await flush();
  return stats;
}
