/**
 * The public types of a Chain-of-Spot instance: its options and results, and
 * {@link ChainOfSpotLike}, what the local, the remote and the isolated instance have in common.
 */
import type { ModelLoadOptions } from '../llama/model';
import type { ProjectorOptions } from '../llama/projector';
import type { GenerateResult } from '../llama/session';
import type { ImageInput } from '../image/image';
import type { PixelRect } from '../image/geometry';
import type { Box, RegionBox } from './box';
import type { ChainOfSpotPromptOptions } from './prompt';

/** The model families this package runs (README, "Model families"). */
export const FAMILY_NAMES = ['llava-1.5', 'qwen2.5-vl', 'qwen3-vl', 'internvl', 'gemma3'] as const;
/** One of {@link FAMILY_NAMES}. */
export type FamilyName = (typeof FAMILY_NAMES)[number];

/** Options of {@link ChainOfSpot.load}. */
export interface ChainOfSpotOptions extends ChainOfSpotPromptOptions {
  /** The text model (GGUF) of a supported family (README, "Model families"). */
  model: string;
  /** Its projector (the mmproj GGUF that was released with it). */
  mmproj: string;
  /**
   * The model's family, which sets the conversation, the box format and the zoom (default: detected
   * from the projector's type, and checked against the text model's architecture). Naming one
   * takes the files as that family's without the check.
   */
  family?: FamilyName;
  /** Text model layers on the GPU (see {@link ModelLoadOptions.gpuLayers}; default 'auto'). */
  gpuLayers?: ModelLoadOptions['gpuLayers'];
  /** Run the image encoder on the GPU when there is one (default true). */
  projectorGpu?: boolean;
  /** See {@link ProjectorOptions.imageMinTokens} (Qwen-VL: llama.cpp recommends 1024 for grounding). */
  imageMinTokens?: ProjectorOptions['imageMinTokens'];
  /** See {@link ProjectorOptions.imageMaxTokens}. */
  imageMaxTokens?: ProjectorOptions['imageMaxTokens'];
  /** CPU threads (default: the number of physical cores). */
  threads?: number;
  /**
   * Tokens of KV cache (default: what the procedure needs: two images, both answers and room for
   * the prompts and a long question, rounded up to a multiple of 256; 2048 for LLaVA-1.5).
   */
  contextSize?: number;
  /** Memory-map the model files (default true). */
  mmap?: boolean;
  /** Load progress of the text model, from 0 to 1. */
  onProgress?: (progress: number) => void;
  /** Cancels loading. */
  signal?: AbortSignal;
  /** The most pixels an input image, and the square it is padded to, may have (default 50 million). */
  maxPixels?: number;
  /**
   * Reference mode by default for every {@link ChainOfSpot.ask}, {@link ChainOfSpot.baseline} and
   * {@link ChainOfSpot.open} of this instance (default false); each can override it. See
   * {@link AskOptions.reference}.
   */
  reference?: boolean;
  /**
   * Questions answered at once (default 1), each on its own sequence of one shared context: every
   * decode step puts all of their next tokens (prompt chunks, and one token per generating
   * question with the ones the grammar forces) into one llama.cpp batch, as llama-server's
   * continuous batching does. Further questions wait for a free sequence. Each sequence keeps the
   * prefix of the last image it answered about, and a question goes to the free sequence that holds
   * its image's prefix, else to the least recently used one. Each sequence has its own part of the
   * cache (the default context grows to `parallel` times one question's), so llama.cpp computes a
   * batch whose questions bring different numbers of tokens in several passes (README, "Serving").
   */
  parallel?: number;
  /** See {@link RpcChainOfSpotOptions.rpcServers}: with them, load returns an {@link IsolatedChainOfSpot}. */
  rpcServers?: undefined;
}

/** Options of {@link ChainOfSpot.ask}. */
export interface AskOptions extends ChainOfSpotPromptOptions {
  /** Most tokens of the answer (turn two; default 128, as the reference). */
  maxTokens?: number;
  /** Most tokens of the region answer (turn one; default 128, as the reference). */
  roiMaxTokens?: number;
  /**
   * Constrain turn one to the reference's box format with a grammar (default true, but false in
   * reference mode), so any model yields a box; characters the format fixes cost no decode step.
   * False lets the model write freely.
   */
  grammar?: boolean;
  /**
   * Reference mode (default: the instance's `reference` load option, itself false): do what the
   * authors' code (`model_vqa_loader_CoS.py`, with Pillow 9/10) does where this package
   * deliberately differs, to reproduce their numbers:
   * - the EXIF orientation is not applied (PIL's `Image.open` ignores it);
   * - turn one is generated without the grammar (unless `grammar: true` is passed as well);
   * - the box is read as the reference reads it: the answer's first and last characters cut off,
   *   the rest split at `", "`, the first four parts read with Python's `float()`; anything else
   *   (fewer parts, a part that is no number) zooms into the whole image;
   * - it is cropped as Pillow crops it: coordinates beyond [0, 1] crop black outside the padded
   *   square (the crop's square must still fit `maxPixels`), reversed corners (and NaN or infinite
   *   ones) zoom into the whole image, and a box of zero width or height is a flat image of the pad colour.
   *
   * `roi.box` is then the box as read, which may lie outside [0, 1] or be empty. An image passed
   * to {@link ChainOfSpot.open} in the other mode is turned to this mode's orientation.
   */
  reference?: boolean;
  /** Include the zoomed region, as PNG bytes, in the result (default false). */
  includeRoiImage?: boolean;
  /** Receives each turn's text as it is generated. */
  onText?: (text: string, turn: 1 | 2) => void;
  /** Cancels the question: it rejects with ERR_ABORTED and the instance stays usable. */
  signal?: AbortSignal;
}

/** How the model saw one image of a turn. */
export interface TurnImage {
  /** The tokens it became. */
  tokens: number;
  /**
   * Its token grid, for models with 2-D positions (Qwen-VL): `width` x `height` tokens, each
   * patch size x merge pixels of the image as mtmd resized it. Undefined for other models.
   */
  grid: { width: number; height: number } | undefined;
}

/** One turn of the conversation. */
export interface TurnResult {
  /** The prompt of this turn as the reference's string (`<image>` where an image went). */
  prompt: string;
  /** What the model wrote. */
  text: string;
  /** The generated token ids (they stay in the cache as the model wrote them). */
  tokens: Int32Array;
  /** Tokens evaluated for the prompt (image tokens included). */
  promptTokens: number;
  /**
   * The turn's images, in the order its prompt shows them, as the model saw them. Empty from a
   * llama-server, which does not say.
   */
  images: TurnImage[];
  /** Tokens generated. */
  generatedTokens: number;
  /** Decode steps of the generation (fewer than tokens when a grammar forced some). */
  decodeSteps: number;
  /**
   * Why the turn ended (see {@link GenerateResult.finishReason}). A turn one that ended with
   * `'context'` filled the session's context: turn two then rejects with ERR_CONTEXT_FULL; raise
   * `contextSize`, or lower `roiMaxTokens`.
   */
  finishReason: GenerateResult['finishReason'];
  timings: TurnTimings;
}

/** Milliseconds of one turn, by stage. */
export interface TurnTimings {
  imageEncodeMs: number;
  imageDecodeMs: number;
  /** Text prompt evaluation. */
  promptMs: number;
  generateMs: number;
}

/** The region turn two zoomed into. */
export interface RegionOfInterest {
  /**
   * `[left, top, right, bottom]`: for LLaVA-1.5, fractions of the image padded to a square (the
   * model's frame; in reference mode, as read: possibly beyond [0, 1], or of zero width or height);
   * for every other family, fractions of the image itself, mapped from the family's own frame.
   */
  box: Box;
  /** The same region in the original image's pixels, clamped to it (right and bottom exclusive). */
  pixels: PixelRect;
  /** `model` when read from turn one's answer, `fallback` (the whole image) when none could be read. */
  source: RegionBox['source'];
}

/** What {@link ChainOfSpot.ask} found. */
export interface AskResult<Turn extends TurnResult = TurnResult> {
  /** The answer to the question (turn two's text, trimmed). */
  answer: string;
  roi: RegionOfInterest;
  /** The zoomed region the model saw in turn two, as PNG, when `includeRoiImage` was set. */
  roiImage?: Buffer;
  turns: [Turn, Turn];
  /** Whether the image's prefix was already in the cache (a further question on the same image). */
  prefixReused: boolean;
  timings: {
    /** Decoding the input, padding and resizing both images. */
    preprocessMs: number;
    totalMs: number;
  };
}

/** Options of {@link ChainOfSpot.baseline}. */
export type BaselineOptions = Pick<AskOptions, 'maxTokens' | 'signal' | 'onText' | 'reference'>;

/** What {@link ChainOfSpot.baseline} found: one plain turn. */
export interface BaselineResult<Turn extends TurnResult = TurnResult> {
  answer: string;
  turn: Turn;
  prefixReused: boolean;
  timings: { preprocessMs: number; totalMs: number };
}

/** An image loaded and prepared once, for several questions. */
export interface OpenedImage {
  /** The original image's size in pixels (as opened: upright, or as stored in reference mode). */
  readonly width: number;
  readonly height: number;
}

/**
 * What {@link ChainOfSpot} (this process), {@link RemoteChainOfSpot} (a llama-server) and
 * {@link IsolatedChainOfSpot} (a child process with RPC servers) have in common: code written
 * against it runs on any of them.
 */
export interface ChainOfSpotLike {
  /** See {@link ChainOfSpot.ask}. */
  ask(image: ImageInput | OpenedImage, question: string, options?: AskOptions): Promise<AskResult>;
  /** See {@link ChainOfSpot.baseline}. */
  baseline(image: ImageInput | OpenedImage, question: string, options?: BaselineOptions): Promise<BaselineResult>;
  /** See {@link ChainOfSpot.open}. */
  open(image: ImageInput, options?: Pick<AskOptions, 'reference'>): Promise<OpenedImage>;
  /** See {@link ChainOfSpot.dispose}. */
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
