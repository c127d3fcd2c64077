/**
 * Chain-of-Spot (Liu, Dong, Rao, Zhou, Lu): ask a LLaVA-1.5 model for the region of interest of a
 * question, zoom into it, and ask the question again in the same conversation, with both the
 * image and the zoomed region in view.
 *
 * Unlike the reference, which rebuilds the whole two-image conversation for turn two, the KV cache
 * stays in native memory between the turns: turn two evaluates only its own tokens and the crop.
 * And the image prefix (system prompt + original image) is kept between questions about the same
 * image, so a further question costs only its own tokens and its crop.
 */
import { createHash } from 'node:crypto';

import { backend } from '../native/loader';
import { BOX_GRAMMAR, type Box, type RegionBox } from './box';
import { callerStack, ChainOfSpotError, disposedError, rethrowWithCallerStack } from '../common/errors';
import { askConfig, promptDefaults, regionSteps, type AskConfig } from './ask-config';
import { evaluatePrompt, type PromptEvaluation, type PromptTarget } from './evaluate-prompt';
import {
  DEFAULT_MAX_PIXELS,
  encodePng,
  loadImageWithOrientation,
  prepareOriginal,
  reorient,
  type ImageInput,
} from '../image/image';
import type { PixelRect } from '../image/geometry';
import type { RgbImage } from '../common/rgb-image';
import { Model, type ModelLoadOptions } from '../llama/model';
import { OperationQueue } from '../llama/operation-queue';
import type { Projector } from '../llama/projector';
import {
  baselinePrompt,
  renderPrompt,
  type ChainOfSpotPromptOptions,
  type Prompt,
} from './prompt';
import type { GenerateOptions, GenerateResult, Session } from '../llama/session';
import { Batcher } from '../llama/batcher';
import { SlotPool } from './slot-pool';
import { RemoteChainOfSpot, type ConnectOptions } from './remote';
import { IsolatedChainOfSpot, type RpcChainOfSpotOptions } from './isolated';
import { booleanOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';

/** Options of {@link ChainOfSpot.load}. */
export interface ChainOfSpotOptions extends ChainOfSpotPromptOptions {
  /** The LLaVA-1.5 text model (GGUF). */
  model: string;
  /** Its projector (the mmproj GGUF that was released with it). */
  mmproj: string;
  /** Text model layers on the GPU (see {@link ModelLoadOptions.gpuLayers}; default 'auto'). */
  gpuLayers?: ModelLoadOptions['gpuLayers'];
  /** Run the image encoder on the GPU when there is one (default true). */
  projectorGpu?: boolean;
  /** CPU threads (default: the number of CPUs). */
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
   * cache (the default context grows to `parallel` times one question's).
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
   * `[left, top, right, bottom]` as fractions of the image padded to a square (the model's frame).
   * In reference mode, as read: possibly beyond [0, 1], or of zero width or height.
   */
  box: Box;
  /** The same region in the original image's pixels, clamped to it (right and bottom exclusive). */
  pixels: PixelRect;
  /** `model` when read from turn one's answer, `fallback` (the whole image) when none could be read. */
  source: RegionBox['source'];
}

/** What {@link ChainOfSpot.ask} found. */
export interface AskResult {
  /** The answer to the question (turn two's text, trimmed). */
  answer: string;
  roi: RegionOfInterest;
  /** The zoomed region the model saw in turn two, as PNG, when `includeRoiImage` was set. */
  roiImage?: Buffer;
  turns: [TurnResult, TurnResult];
  /** Whether the image's prefix was already in the cache (a further question on the same image). */
  prefixReused: boolean;
  timings: {
    /** Decoding the input, padding and resizing both images. */
    preprocessMs: number;
    totalMs: number;
  };
}

/** What {@link ChainOfSpot.baseline} found: one plain LLaVA-1.5 turn. */
export interface BaselineResult {
  answer: string;
  turn: TurnResult;
  prefixReused: boolean;
  timings: { preprocessMs: number; totalMs: number };
}

/** An image loaded and prepared once, for several questions. */
export interface OpenedImage {
  /** The original image's size in pixels (as opened: upright, or as stored in reference mode). */
  readonly width: number;
  readonly height: number;
}

/** An image as one mode sees it: upright or as stored. */
interface ImageView {
  readonly original: RgbImage;
  readonly model: RgbImage;
  readonly key: string;
}

interface PreparedImage {
  /** What {@link ChainOfSpot.open} hands out for it. */
  readonly handle: OpenedImage;
  /** The input's EXIF orientation (1 when none). */
  readonly orientation: number;
  /** The image in the mode it was loaded in, and in the other when asked for: by `reference`. */
  readonly views: Map<boolean, ImageView>;
}

/** Where a question's tokens go: a whole session (sequence 0), or one sequence under a Batcher. */
type QuestionTarget = PromptTarget & {
  generate(options: Omit<GenerateOptions, 'sequence'>): Promise<GenerateResult>;
  position(): number;
  truncate(position: number): Promise<void>;
};

/** A sequence questions run on, one at a time, and the image prefix its cache holds. */
interface Lane {
  readonly target: QuestionTarget;
  prefix: { key: string; position: number } | undefined;
}

/** How a question starts its conversation: on a lane (reusing its image prefix when it is this image's). */
interface Conversation {
  open(prepared: ImageView, prompt: Prompt, signal: AbortSignal | undefined): Promise<{ evaluation: PromptEvaluation; prefixReused: boolean; target: QuestionTarget }>;
}

/** Parallel decoding: the batcher and the free lanes. */
interface Parallel {
  readonly batcher: Batcher;
  readonly slots: SlotPool;
}

const preparedImages = new WeakMap<OpenedImage, PreparedImage>();

/** A prompt's image prefix: its parts up to and including the original image. */
interface ImagePrefix {
  /** How many parts. */
  readonly length: number;
  /** What names it in a lane's cache: the image as the model sees it, and those parts. */
  readonly key: string;
}

function imagePrefix(prepared: ImageView, prompt: Prompt): ImagePrefix {
  const length = prompt.findIndex((part) => part.type === 'image') + 1;
  return { length, key: `${prepared.key}\u0000${renderPrompt(prompt.slice(0, length))}` };
}

/** Tokens for prompts and question beyond the images and answers, in the default context size. */
const PROMPT_ROOM = 512;

export class ChainOfSpot {
  readonly #model: Model;
  readonly #projector: Projector;
  readonly #session: Session;
  readonly #queue: OperationQueue;
  readonly #defaults: ChainOfSpotPromptOptions;
  readonly #maxPixels: number | undefined;
  readonly #reference: boolean;
  /** The session itself (one question at a time), or one lane per sequence (parallel). */
  readonly #lanes: Lane[];
  readonly #parallel: Parallel | undefined;

  private constructor(model: Model, projector: Projector, session: Session, defaults: ChainOfSpotPromptOptions, maxPixels: number | undefined, reference: boolean, parallel: number) {
    this.#model = model;
    if (parallel > 1) {
      const batcher = new Batcher(session);
      const sequences = Array.from({ length: parallel }, (_, i) => i);
      this.#lanes = sequences.map((i) => ({ target: batcher.sequence(i), prefix: undefined }));
      this.#parallel = { batcher, slots: new SlotPool(sequences) };
    } else {
      this.#lanes = [{ target: session, prefix: undefined }];
    }
    this.#reference = reference;
    this.#projector = projector;
    this.#session = session;
    this.#defaults = defaults;
    this.#maxPixels = maxPixels;
    this.#queue = new OperationQueue('this ChainOfSpot instance', () => undefined);
  }

  /**
   * Loads a LLaVA-1.5 text model and its projector, ready to ask questions. With `rpcServers`,
   * the layers go to those ggml RPC servers, and the model runs in a child process: see
   * {@link IsolatedChainOfSpot}.
   */
  static load(options: RpcChainOfSpotOptions): Promise<IsolatedChainOfSpot>;
  static load(options: ChainOfSpotOptions): Promise<ChainOfSpot>;
  static load(options: ChainOfSpotOptions | RpcChainOfSpotOptions): Promise<ChainOfSpot | IsolatedChainOfSpot> {
    if (options !== null && typeof options === 'object' && options.rpcServers !== undefined) return IsolatedChainOfSpot.load(options);
    return ChainOfSpot.loadHere(options);
  }

  /**
   * {@link load} in this process, `rpcServers` included (the child of an {@link IsolatedChainOfSpot}).
   * @internal
   */
  static async loadHere(options: ChainOfSpotOptions | RpcChainOfSpotOptions): Promise<ChainOfSpot> {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with model and mmproj paths');
    const modelPath = requiredString(options.model, 'model');
    const mmprojPath = requiredString(options.mmproj, 'mmproj');
    const threads = options.threads === undefined ? undefined : integerOption(options.threads, 'threads', 1, 1024, 1);
    const signal = signalOption(options.signal);
    const reference = booleanOption(options.reference, 'reference', false);
    const parallel = integerOption(options.parallel, 'parallel', 1, 128, 1);
    const stack = callerStack();
    try {
      const { gpuLayers, mmap, onProgress, rpcServers } = options;
      const model = await Model.load(modelPath, { gpuLayers, mmap, onProgress, signal, rpcServers });
      try {
        const projector = await model.loadProjector(mmprojPath, { gpu: booleanOption(options.projectorGpu, 'projectorGpu', true), threads, signal });
        const { tokensPerImage } = projector.info;
        const perQuestion = Math.ceil((2 * tokensPerImage + 2 * 128 + PROMPT_ROOM) / 256) * 256;
        const contextSize = integerOption(options.contextSize, 'contextSize', 64, 1 << 20, parallel * perQuestion);
        // In parallel, each sequence has its part of the cache: a decode attends over its own cells only.
        const session = await model.createSession({ contextSize, threads, sequences: parallel, unifiedCache: parallel === 1 });
        return new ChainOfSpot(model, projector, session, promptDefaults(options), options.maxPixels, reference, parallel);
      } catch (error) {
        await model.dispose();
        throw error;
      }
    } catch (error) {
      return rethrowWithCallerStack(error, stack);
    }
  }

  /**
   * Chain-of-Spot on a llama-server you already run (`llama-server -m model.gguf --mmproj
   * mmproj.gguf`): the same two turns, prompts, box grammar and crop, over HTTP, with the same
   * results. Resolves once the server has answered and the projector's image size is known.
   * Needs no native binary. See {@link RemoteChainOfSpot} for how it maps to llama-server.
   *
   * @throws ChainOfSpotError `ERR_REMOTE` when the server cannot be reached, fails, or takes no images.
   */
  static connect(options: ConnectOptions): Promise<RemoteChainOfSpot> {
    return RemoteChainOfSpot.connect(options);
  }

  /** Which native binary and backend (CPU or CUDA) this process uses, and why. */
  static backend(): ReturnType<typeof backend> {
    return backend();
  }

  /** The text model. */
  get model(): Model {
    return this.#model;
  }

  /** The projector. */
  get projector(): Projector {
    return this.#projector;
  }

  /** The session whose cache holds the conversation. */
  get session(): Session {
    return this.#session;
  }

  /**
   * Loads and prepares an image once, for several questions: each {@link ask} with the result
   * skips decoding and resizing it, and reuses its prefix in the cache when it is still there.
   *
   * `reference` (default: the instance's) opens it as reference mode sees it, without its EXIF
   * orientation, and `width`/`height` are then as stored. A question in the other mode still
   * works: the image is turned (or turned back) for it, once.
   */
  async open(image: ImageInput, options?: Pick<AskOptions, 'reference'>): Promise<OpenedImage> {
    this.#queue.assertAlive();
    const reference = booleanOption(optionsObject(options).reference, 'reference', this.#reference);
    const stack = callerStack();
    try {
      return (await this.#prepare(image, reference)).handle;
    } catch (error) {
      return rethrowWithCallerStack(error, stack, 'ERR_IMAGE');
    }
  }

  /**
   * Asks a question about an image the Chain-of-Spot way: turn one asks for the region of interest,
   * turn two shows the zoomed region and asks the question. Calls queue: one question runs at a time.
   */
  ask(image: ImageInput | OpenedImage, question: string, options?: AskOptions): Promise<AskResult> {
    const config = this.#askConfig(question, options);
    return this.#run(config.signal, (conversation) => this.#ask(image, config, conversation));
  }

  /**
   * The plain LLaVA-1.5 answer in one turn (`USER: <image>\n{question} ASSISTANT:`), what
   * Chain-of-Spot is compared against. Shares the image prefix with {@link ask}. In reference mode
   * the image is read without its EXIF orientation, as LLaVA's `model_vqa_loader.py` reads it.
   */
  baseline(image: ImageInput | OpenedImage, question: string, options?: Pick<AskOptions, 'maxTokens' | 'signal' | 'onText' | 'reference'>): Promise<BaselineResult> {
    const config = this.#askConfig(question, options);
    return this.#run(config.signal, async (conversation) => {
      const start = performance.now();
      const { prepared, preprocessMs } = await this.#prepareTimed(image, config.reference);
      const prompt = baselinePrompt(question);
      const { evaluation, prefixReused, target } = await conversation.open(prepared, prompt, config.signal);
      const turn = await this.#generateTurn(target, prompt, evaluation, { maxTokens: config.maxTokens, signal: config.signal, onText: config.onText1 ?? config.onText2 });
      return { answer: turn.text.trim(), turn, prefixReused, timings: { preprocessMs, totalMs: performance.now() - start } };
    });
  }

  /** Frees the models and the cache. Questions in flight reject with ERR_DISPOSED. */
  async dispose(): Promise<void> {
    // Disposing the model disposes the session, which stops the question in flight.
    const settled = this.#queue.dispose(() => undefined);
    this.#parallel?.slots.close(() => disposedError('this ChainOfSpot instance'));
    await this.#model.dispose();
    await settled;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #askConfig(question: string, options: AskOptions | undefined): AskConfig {
    return askConfig(question, options, this.#defaults, this.#reference);
  }

  /**
   * Runs one question: alone on the session (the queue), or, in parallel mode, on a free sequence
   * under the batcher (waiting for one when all are taken).
   */
  #run<T>(signal: AbortSignal | undefined, work: (conversation: Conversation) => Promise<T>): Promise<T> {
    const parallel = this.#parallel;
    if (!parallel) {
      const lane = this.#lanes[0]!;
      return this.#queue.run(() => work({ open: (prepared, prompt, s) => this.#open(lane, prepared, prompt, imagePrefix(prepared, prompt), s) }), signal);
    }
    // The lane is taken when the image is ready: the free one that holds its prefix, if any.
    let taken: number | undefined;
    const conversation: Conversation = {
      open: async (prepared, prompt, s) => {
        const prefix = imagePrefix(prepared, prompt);
        taken = await parallel.slots.acquire(s, (slot) => this.#lanes[slot]!.prefix?.key === prefix.key);
        return this.#open(this.#lanes[taken]!, prepared, prompt, prefix, s);
      },
    };
    const stack = callerStack();
    return (async () => {
      this.#queue.assertAlive();
      try {
        return await work(conversation);
      } finally {
        if (taken !== undefined) parallel.slots.release(taken);
      }
    })().catch((error: unknown) => rethrowWithCallerStack(error, stack));
  }

  async #ask(image: ImageInput | OpenedImage, config: AskConfig, conversation: Conversation): Promise<AskResult> {
    const start = performance.now();
    const { prepared, preprocessMs: loadMs } = await this.#prepareTimed(image, config.reference);
    const size = this.#projector.info.imageSize;

    // Turn one: the region of interest.
    const { turnOnePrompt, turnTwoPrompt } = config;
    const { evaluation, prefixReused, target } = await conversation.open(prepared, turnOnePrompt, config.signal);
    const turnOne = await this.#generateTurn(target, turnOnePrompt, evaluation, {
      maxTokens: config.roiMaxTokens,
      grammar: config.grammar ? BOX_GRAMMAR : undefined,
      signal: config.signal,
      onText: config.onText1,
    });
    const { original } = prepared;
    const steps = regionSteps(config.reference);
    const region = steps.read(turnOne.text, original);

    // Turn two: the zoomed region, in the same conversation.
    const cropStart = performance.now();
    const roiImage = await steps.zoom(original, region.box, size, this.#maxPixels);
    const cropMs = performance.now() - cropStart;
    const turnTwoEvaluation = await evaluatePrompt(target, this.#projector, turnTwoPrompt, { roi: roiImage }, { bos: false, signal: config.signal });
    const turnTwo = await this.#generateTurn(target, turnTwoPrompt, turnTwoEvaluation, { maxTokens: config.maxTokens, signal: config.signal, onText: config.onText2 });

    const result: AskResult = {
      answer: turnTwo.text.trim(),
      roi: { box: region.box, pixels: steps.toPixels(region.box, original.width, original.height), source: region.source },
      turns: [turnOne, turnTwo],
      prefixReused,
      timings: { preprocessMs: loadMs + cropMs, totalMs: 0 },
    };
    if (config.includeRoiImage) result.roiImage = await encodePng(roiImage);
    result.timings.totalMs = performance.now() - start;
    return result;
  }

  /** The image in the given mode: loaded, or opened before (and turned when opened in the other mode). */
  async #prepare(image: ImageInput | OpenedImage, reference: boolean): Promise<ImageView & { handle: OpenedImage }> {
    const maxPixels = this.#maxPixels ?? DEFAULT_MAX_PIXELS;
    let prepared = preparedImages.get(image as OpenedImage);
    if (!prepared) {
      const { image: original, orientation } = await loadImageWithOrientation(image as ImageInput, { maxPixels, applyOrientation: !reference });
      const handle: OpenedImage = Object.freeze({ width: original.width, height: original.height });
      prepared = { handle, orientation, views: new Map([[reference, await this.#view(original, maxPixels)]]) };
      preparedImages.set(handle, prepared);
    }
    let view = prepared.views.get(reference);
    if (!view) {
      const [loadedAs, loaded] = prepared.views.entries().next().value as [boolean, ImageView];
      view = prepared.orientation === 1 ? loaded : await this.#view(reorient(loaded.original, prepared.orientation, !loadedAs), maxPixels);
      prepared.views.set(reference, view);
    }
    return { ...view, handle: prepared.handle };
  }

  /** An image as the model sees it: padded, resized, and hashed to name its prefix in the cache. */
  async #view(original: RgbImage, maxPixels: number): Promise<ImageView> {
    const model = await prepareOriginal(original, this.#projector.info.imageSize, maxPixels);
    return { original, model, key: createHash('sha256').update(model.data).digest('hex') };
  }

  async #prepareTimed(image: ImageInput | OpenedImage, reference: boolean): Promise<{ prepared: ImageView & { handle: OpenedImage }; preprocessMs: number }> {
    const start = performance.now();
    try {
      const prepared = await this.#prepare(image, reference);
      return { prepared, preprocessMs: performance.now() - start };
    } catch (error) {
      if (error instanceof TypeError || error instanceof RangeError || error instanceof ChainOfSpotError) throw error;
      throw new ChainOfSpotError('ERR_IMAGE', `the image could not be prepared: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Evaluates a conversation-opening prompt on a lane, reusing the image prefix its cache holds
   * when it is this one (`prefix`, of `prompt` on `prepared`); otherwise the lane starts anew.
   */
  async #open(
    lane: Lane,
    prepared: ImageView,
    prompt: Prompt,
    prefix: ImagePrefix,
    signal: AbortSignal | undefined,
  ): Promise<{ evaluation: PromptEvaluation; prefixReused: boolean; target: QuestionTarget }> {
    const { target } = lane;
    const images = { original: prepared.model };
    const rest = prompt.slice(prefix.length);
    if (lane.prefix?.key === prefix.key && target.position() >= lane.prefix.position) {
      await target.truncate(lane.prefix.position);
      return { evaluation: await evaluatePrompt(target, this.#projector, rest, images, { bos: false, signal }), prefixReused: true, target };
    }
    lane.prefix = undefined;
    await target.truncate(0);
    const head = await evaluatePrompt(target, this.#projector, prompt.slice(0, prefix.length), images, { bos: true, signal });
    lane.prefix = { key: prefix.key, position: target.position() };
    const tail = await evaluatePrompt(target, this.#projector, rest, images, { bos: false, signal });
    const evaluation = {
      tokens: head.tokens + tail.tokens,
      textMs: head.textMs + tail.textMs,
      imageEncodeMs: head.imageEncodeMs + tail.imageEncodeMs,
      imageDecodeMs: head.imageDecodeMs + tail.imageDecodeMs,
    };
    return { evaluation, prefixReused: false, target };
  }

  async #generateTurn(
    target: QuestionTarget,
    prompt: Prompt,
    evaluation: PromptEvaluation,
    options: { maxTokens: number; grammar?: string | undefined; signal: AbortSignal | undefined; onText: ((text: string) => void) | undefined },
  ): Promise<TurnResult> {
    const generated = await target.generate({
      maxTokens: options.maxTokens,
      grammar: options.grammar,
      signal: options.signal,
      onText: options.onText,
    });
    return {
      prompt: renderPrompt(prompt),
      text: generated.text,
      tokens: generated.tokens,
      promptTokens: evaluation.tokens,
      generatedTokens: generated.tokens.length,
      decodeSteps: generated.decodeCalls,
      finishReason: generated.finishReason,
      timings: {
        imageEncodeMs: evaluation.imageEncodeMs,
        imageDecodeMs: evaluation.imageDecodeMs,
        promptMs: evaluation.textMs,
        generateMs: generated.ms,
      },
    };
  }
}
