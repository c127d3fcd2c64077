/**
 * A session: a llama.cpp context over a Model, with its own KV cache. Text and images are
 * evaluated into the cache; generation continues from it. Calls on one session run one at a time
 * in call order (a call made while another runs waits for it).
 */
import type { RgbImage } from '../common/rgb-image';
import { binding } from '../native/loader';
import type { Model } from './model';
import type { NativeGenerateOptions, NativeGenerateResult, NativeSession, NativeStepItem, NativeStepResult } from '../native/addon';
import { NativeResource } from './native-resource';
import type { Projector } from './projector';
import { defaultThreads } from '../native/threads';
import {
  booleanOption,
  functionOption,
  integerOption,
  numberOption,
  optionsObject,
  signalOption,
} from '../common/validate';

/** Options of {@link Model.createSession}. */
export interface SessionOptions {
  /** Tokens the KV cache holds (default 2048: one Chain-of-Spot question takes about 1,300). */
  contextSize?: number;
  /** Tokens evaluated per llama.cpp batch (default 512). */
  batchSize?: number;
  /** CPU threads (default: the number of physical CPU cores). */
  threads?: number;
  /** Independent sequences (default 1). */
  sequences?: number;
  /**
   * Whether the sequences share one cache (default true): copying a prefix from one to another
   * ({@link Session.copySequence}) then costs nothing, but every evaluation attends over the cells
   * of all of them. With false, each sequence has `contextSize / sequences` cells of its own, and
   * its evaluations cost what they would alone (as llama-server's slots).
   */
  unifiedCache?: boolean;
}

/** Options shared by the session's operations. */
export interface SequenceOptions {
  /** Which sequence (default 0). */
  sequence?: number;
  /** Cancels the operation: it rejects with ERR_ABORTED and the sequence is left as before the call. */
  signal?: AbortSignal;
}

/** Options of {@link Session.evaluate}. */
export interface EvaluateOptions extends SequenceOptions {
  /** For string input: parse special-token text such as `</s>` (default false: text stays text). */
  parseSpecial?: boolean;
  /** For string input: put the BOS token first (default false). */
  addBos?: boolean;
}

/**
 * The image {@link Session.evaluateImage} takes.
 * @deprecated The same as `RgbImage<Uint8Array>`; use {@link RgbImage}.
 */
export type RgbPixels = RgbImage<Uint8Array>;

/** Options of {@link Session.generate}. */
export interface GenerateOptions extends SequenceOptions {
  /** Most tokens to generate (default 128). */
  maxTokens?: number;
  /** 0 (the default) decodes greedily; above 0 samples with this temperature. */
  temperature?: number;
  /** With temperature > 0: keep the k most likely tokens (default 40; 0 keeps all). */
  topK?: number;
  /** With temperature > 0: nucleus sampling threshold (default 0.95; 1 keeps all). */
  topP?: number;
  /** With temperature > 0: the random seed (default 0), for reproducible sampling: every seed from 0 to 2^32 - 1 is. */
  seed?: number;
  /** A GBNF grammar (start rule `root`) that every generated text must match. */
  grammar?: string;
  /** Generation stops before the first of these strings; it is not part of the text. */
  stop?: string[];
  /**
   * Receives the text as it is generated, piece by piece; every piece arrives before the call
   * settles. If it throws, generation stops and the call rejects with what it threw.
   */
  onText?: (text: string) => void;
}

/** What {@link Session.evaluate} did. */
export interface EvaluateResult {
  /** The sequence's position (tokens in it) afterwards. */
  position: number;
  /** Tokens evaluated. */
  tokens: number;
  /** llama_decode calls made. */
  decodeCalls: number;
  /** Wall time in milliseconds. */
  ms: number;
}

/** What {@link Session.evaluateImage} did. */
export interface ImageEvaluation {
  position: number;
  /** Tokens the image became. */
  tokens: number;
  /** Tokens of the text mtmd puts around the image for some models (`<|vision_start|>` and `<|vision_end|>` for Qwen-VL, `<img>` and `</img>` for InternVL); 0 for LLaVA-1.5. */
  markerTokens: number;
  /**
   * The token grid of each image chunk, for models with 2-D positions (M-RoPE: Qwen-VL), whose
   * tokens are laid out in rows: `width` x `height` tokens, each `patch size x merge` pixels of
   * the image as mtmd resized it. Empty for other models.
   */
  grids: { width: number; height: number }[];
  /** Milliseconds in the image encoder. */
  encodeMs: number;
  /** Milliseconds evaluating the image's tokens in the text model. */
  decodeMs: number;
}

/** What {@link Session.generate} produced. */
export interface GenerateResult {
  /**
   * The generated tokens (the end-of-sequence token is not included). After a stop string, the
   * tokens spell exactly `text`: the stop string and what followed it are not in the sequence.
   */
  tokens: Int32Array;
  text: string;
  /**
   * `eos`: the model (or the grammar) ended; `stop`: a stop string; `length`: maxTokens reached;
   * `context`: the context is full (the sequence reached contextSize, or the cache the sequences
   * share has no room left). The text and tokens are what was generated up to there.
   */
  finishReason: NativeGenerateResult['finishReason'];
  /** Tokens that were sampled; the rest were forced by the grammar and cost no decode step. */
  sampledTokens: number;
  /** llama_decode calls made. */
  decodeCalls: number;
  position: number;
  ms: number;
}

const MAX_CONTEXT = 1 << 20;

export class Session extends NativeResource<NativeSession> {
  readonly #model: Model;
  readonly #sequences: number;

  private constructor(native: NativeSession, model: Model, sequences: number) {
    super(native, 'the session', () => native.abort(), model);
    this.#model = model;
    this.#sequences = sequences;
  }

  /** @internal Use {@link Model.createSession}. */
  static async create(model: Model, options?: SessionOptions): Promise<Session> {
    const opts = optionsObject(options);
    const nativeOptions = {
      contextSize: integerOption(opts.contextSize, 'contextSize', 16, MAX_CONTEXT, 2048),
      batchSize: integerOption(opts.batchSize, 'batchSize', 1, MAX_CONTEXT, 512),
      threads: integerOption(opts.threads, 'threads', 1, 1024, defaultThreads()),
      sequences: integerOption(opts.sequences, 'sequences', 1, 256, 1),
      unifiedCache: booleanOption(opts.unifiedCache, 'unifiedCache', true),
    };
    const session = new Session(new (binding().Session)(), model, nativeOptions.sequences);
    await session.create(() => session.native.create(model.native, nativeOptions));
    return session;
  }

  /** The model this session runs. */
  get model(): Model {
    return this.#model;
  }

  /** Context size, batch size and sequence count, as llama.cpp set them up. */
  get info(): { contextSize: number; batchSize: number; sequences: number } {
    return this.native.info();
  }

  /**
   * Tokens in the sequence so far (its next position), as the last operation that finished left
   * it: an operation in flight changes it when it is done.
   */
  position(sequence = 0): number {
    return this.native.position(this.#sequenceIndex(sequence));
  }

  /**
   * Evaluates text (tokenized without special tokens unless asked) or token ids at the end of the
   * sequence. Rejects with ERR_CONTEXT_FULL, leaving the sequence unchanged, when they do not fit.
   */
  evaluate(input: string | ArrayLike<number>, options?: EvaluateOptions): Promise<EvaluateResult> {
    const opts = optionsObject(options);
    const sequence = this.#sequenceIndex(opts.sequence);
    const signal = signalOption(opts.signal);
    let tokens: Int32Array;
    if (typeof input === 'string') {
      tokens = this.#model.tokenize(input, {
        addBos: booleanOption(opts.addBos, 'addBos', false),
        parseSpecial: booleanOption(opts.parseSpecial, 'parseSpecial', false),
      });
    } else if (input instanceof Int32Array) {
      tokens = input.slice(); // the call may wait in the queue: what counts is the input now
    } else if (input !== null && typeof input === 'object' && typeof input.length === 'number') {
      tokens = Int32Array.from(Array.from(input, Number));
    } else {
      throw new TypeError('input must be a string or an array of token ids');
    }
    return this.queue.run(() => this.native.evaluate(tokens, sequence), signal);
  }

  /** Encodes an RGB image with the projector and evaluates its tokens at the end of the sequence. */
  evaluateImage(projector: Projector, image: RgbImage<Uint8Array>, options?: SequenceOptions): Promise<ImageEvaluation> {
    if (projector === null || typeof projector !== 'object' || !('native' in projector)) {
      throw new TypeError('projector must be a Projector');
    }
    if (image === null || typeof image !== 'object' || !(image.data instanceof Uint8Array)) {
      throw new TypeError('image must be { data: Uint8Array, width, height } with RGB bytes');
    }
    const width = integerOption(image.width, 'image.width', 1, 65535, 0);
    const height = integerOption(image.height, 'image.height', 1, 65535, 0);
    if (image.data.length !== width * height * 3) {
      throw new RangeError(`image.data must hold width * height * 3 = ${width * height * 3} bytes, got ${image.data.length}`);
    }
    const opts = optionsObject(options);
    const sequence = this.#sequenceIndex(opts.sequence);
    const signal = signalOption(opts.signal);
    const pixels = image.data.slice(); // the call may wait in the queue: what counts is the image now
    return this.queue.run(() => this.native.evaluateImage(projector.native, pixels, width, height, sequence), signal);
  }

  /**
   * Generates from the end of the sequence. The generated tokens become part of the sequence
   * (evaluated together with whatever comes next). Rejects with ERR_ABORTED when aborted, leaving
   * the sequence as it was before the call.
   */
  generate(options?: GenerateOptions): Promise<GenerateResult> {
    const opts = optionsObject(options);
    const sequence = this.#sequenceIndex(opts.sequence);
    const signal = signalOption(opts.signal);
    const onText = functionOption<(text: string) => void>(opts.onText, 'onText');
    const nativeOptions = Session.generateOptions(opts);
    return this.queue.run(() => this.native.generate(nativeOptions, sequence, onText), signal);
  }

  /**
   * One step of parallel decoding over several sequences, in one llama.cpp batch (see
   * lib/llama/batcher.ts, its one user).
   * @internal
   */
  step(items: NativeStepItem[]): Promise<NativeStepResult[]> {
    return this.queue.run(() => this.native.step(items));
  }

  /** A step in flight returns after its current decode: new work waits to join. @internal */
  interruptStep(): void {
    if (!this.queue.disposed) this.native.interruptStep();
  }

  /** The native generation options from validated {@link GenerateOptions}. @internal */
  static generateOptions(opts: GenerateOptions): NativeGenerateOptions {
    if (opts.grammar !== undefined && typeof opts.grammar !== 'string') throw new TypeError('grammar must be a string');
    if (opts.stop !== undefined && (!Array.isArray(opts.stop) || opts.stop.some((s) => typeof s !== 'string'))) {
      throw new TypeError('stop must be an array of strings');
    }
    return {
      maxTokens: integerOption(opts.maxTokens, 'maxTokens', 1, MAX_CONTEXT, 128),
      temperature: numberOption(opts.temperature, 'temperature', 0, 100, 0),
      topK: integerOption(opts.topK, 'topK', 0, 1 << 30, 40),
      topP: numberOption(opts.topP, 'topP', 0, 1, 0.95),
      seed: integerOption(opts.seed, 'seed', 0, 0xffffffff, 0),
      grammar: opts.grammar ?? '',
      stop: (opts.stop ?? []).filter((s) => s.length > 0),
    };
  }

  /** Forgets everything in the sequence from `position` on. */
  truncate(position: number, sequence = 0): Promise<void> {
    const index = this.#sequenceIndex(sequence);
    if (typeof position !== 'number') throw new TypeError('position must be a number');
    return this.queue.run(() => this.native.truncate(position, index));
  }

  /** Makes `destination` a copy of `source` (the cache is shared, not copied). */
  copySequence(source: number, destination: number): Promise<void> {
    const from = this.#sequenceIndex(source, 'source');
    const to = this.#sequenceIndex(destination, 'destination');
    return this.queue.run(() => this.native.copySequence(from, to));
  }

  /** Empties every sequence. */
  clear(): Promise<void> {
    return this.queue.run(() => this.native.clear());
  }

  /**
   * The logits predicting the sequence's next token, or null when the last operation did not
   * leave them (after an image, or after generation, until something is evaluated).
   */
  logits(sequence = 0): Promise<Float32Array | null> {
    const index = this.#sequenceIndex(sequence);
    return this.queue.run(() => this.native.logits(index));
  }

  /**
   * Frees the session's context. An operation in flight stops and rejects with ERR_DISPOSED, as do
   * queued ones. Safe to call more than once.
   */
  override dispose(): Promise<void> {
    return super.dispose();
  }

  #sequenceIndex(value: unknown, name = 'sequence'): number {
    return integerOption(value, name, 0, this.#sequences - 1, 0);
  }
}
