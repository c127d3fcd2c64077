/**
 * The Chain-of-Spot procedure, written once: turn one asks for the region of interest, the box it
 * answers is read and the region zoomed, and turn two, in the same conversation, shows the zoomed
 * region and asks the question again; and the baseline's one plain turn. It runs over a
 * {@link Conversation}, which says how a turn is run: the local session (lanes.ts) and a
 * llama-server (remote.ts) each implement one, and neither holds any of the procedure.
 */
import { encodePng, type ImageInput } from '../image/image';
import type { RgbImage } from '../common/rgb-image';
import type { AskConfig } from './ask-config';
import type { PreparedImages, ImageView } from './prepared-images';
import type { ImageSlot, Prompt } from './prompt';
import type { AskResult, BaselineResult, OpenedImage, TurnResult } from './types';

/** How a turn generates: how long, under which grammar, streamed where, stopped by what. */
export interface TurnGeneration {
  maxTokens: number;
  /** A GBNF grammar the answer must follow. */
  grammar?: string | undefined;
  onText: ((text: string) => void) | undefined;
  signal: AbortSignal | undefined;
}

/** The images a turn's prompt shows, by the slot its image parts name. */
export type TurnImages = Partial<Record<ImageSlot, RgbImage>>;

/** One question's conversation: each turn continues the one before, whose answer stays in it. */
export interface Conversation<Turn extends TurnResult = TurnResult> {
  /**
   * Continues the conversation (the first turn opens it) with the prompt's parts, its image parts
   * taken from `images`, then generates the model's answer.
   */
  turn(prompt: Prompt, images: TurnImages, generation: TurnGeneration): Promise<Turn>;
  /** Whether the first turn found the image's prefix in a cache (asked once the turns are done). */
  prefixReused(signal: AbortSignal | undefined): Promise<boolean>;
}

/** What the procedure needs of an instance: its images, and a conversation about one. */
export interface ProcedureHost<Turn extends TurnResult = TurnResult> {
  readonly images: PreparedImages;
  converse(view: ImageView): Conversation<Turn>;
}

/** The two turns of Chain-of-Spot on one question. */
export async function askChainOfSpot<Turn extends TurnResult>(host: ProcedureHost<Turn>, image: ImageInput | OpenedImage, config: AskConfig): Promise<AskResult<Turn>> {
  const start = performance.now();
  const { images } = host;
  const { view, ms: loadMs } = await images.view(image, config.reference);
  const conversation = host.converse(view);
  const { signal } = config;

  // Turn one: the region of interest.
  const turnOne = await conversation.turn(config.turnOnePrompt, { original: view.model }, {
    maxTokens: config.roiMaxTokens,
    grammar: config.boxGrammar,
    onText: config.onText1,
    signal,
  });
  const { original } = view;
  const { steps } = config;
  const seen = turnOne.images[0];
  const region = steps.read(turnOne.text, original, seen);

  // Turn two: the zoomed region, in the same conversation.
  const cropStart = performance.now();
  const roiImage = await steps.zoom(original, region.box, seen, images.maxPixels);
  const cropMs = performance.now() - cropStart;
  const turnTwo = await conversation.turn(config.turnTwoPrompt, { roi: roiImage }, { maxTokens: config.maxTokens, onText: config.onText2, signal });

  const result: AskResult<Turn> = {
    answer: turnTwo.text.trim(),
    roi: { box: region.box, pixels: steps.toPixels(region.box, original.width, original.height), source: region.source },
    turns: [turnOne, turnTwo],
    prefixReused: await conversation.prefixReused(signal),
    timings: { preprocessMs: loadMs + cropMs, totalMs: 0 },
  };
  if (config.includeRoiImage) result.roiImage = await encodePng(roiImage);
  result.timings.totalMs = performance.now() - start;
  return result;
}

/** The plain answer in one turn, what Chain-of-Spot is compared against. */
export async function askBaseline<Turn extends TurnResult>(host: ProcedureHost<Turn>, image: ImageInput | OpenedImage, config: AskConfig): Promise<BaselineResult<Turn>> {
  const start = performance.now();
  const { view, ms: preprocessMs } = await host.images.view(image, config.reference);
  const conversation = host.converse(view);
  const turn = await conversation.turn(config.baselinePrompt, { original: view.model }, {
    maxTokens: config.maxTokens,
    onText: config.onText1,
    signal: config.signal,
  });
  const prefixReused = await conversation.prefixReused(config.signal);
  return { answer: turn.text.trim(), turn, prefixReused, timings: { preprocessMs, totalMs: performance.now() - start } };
}
