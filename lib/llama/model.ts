/**
 * A text model (the LLaVA-1.5 language model, a GGUF file) loaded by llama.cpp.
 */
import { binding } from '../native/loader';
import { callerStack, rethrowWithCallerStack } from '../common/errors';
import { checkGguf } from '../gguf/check';
import type { NativeModel, NativeModelInfo } from '../native/addon';
import { OperationQueue } from './operation-queue';
import { Projector, type ProjectorOptions } from './projector';
import { Session, type SessionOptions } from './session';
import { booleanOption, functionOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';

/** Options of {@link Model.load}. */
export interface ModelLoadOptions {
  /**
   * How many layers to put on the GPU: a number, `'max'` for all, or `'auto'` (the default): all
   * when the loaded binary has a GPU backend, none otherwise.
   */
  gpuLayers?: number | 'auto' | 'max';
  /** Memory-map the file instead of reading it (default true: loads fast, shares pages). */
  mmap?: boolean;
  /** Called with the load progress, from 0 to 1. */
  onProgress?: (progress: number) => void;
  /** Cancels loading: the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
}

/** What the model file says about itself. */
export interface ModelInfo extends NativeModelInfo {
  /** The file the model was loaded from. */
  path: string;
}

/** Options of {@link Model.tokenize}. */
export interface TokenizeOptions {
  /** Put the BOS token first (default false). */
  addBos?: boolean;
  /** Parse special-token text such as `</s>` into special tokens (default false: user text stays text). */
  parseSpecial?: boolean;
}

interface Dependent {
  dispose(): Promise<void>;
}

function gpuLayerCount(value: ModelLoadOptions['gpuLayers']): number {
  if (value === undefined || value === 'auto') return binding().systemInfo().gpuOffload ? -1 : 0;
  if (value === 'max') return -1;
  return integerOption(value, 'gpuLayers', 0, 100_000, 0);
}

export class Model {
  readonly #native: NativeModel;
  readonly #queue: OperationQueue;
  readonly #dependents = new Set<Dependent>();
  #info: ModelInfo | undefined;

  private constructor(native: NativeModel) {
    this.#native = native;
    this.#queue = new OperationQueue('the model', () => native.abortLoad());
  }

  /** Loads a GGUF text model. Rejects with ERR_MODEL_LOAD (and a reason) when it cannot. */
  static async load(path: string, options?: ModelLoadOptions): Promise<Model> {
    requiredString(path, 'path');
    const opts = optionsObject(options);
    const nativeOptions = {
      gpuLayers: gpuLayerCount(opts.gpuLayers),
      mmap: booleanOption(opts.mmap, 'mmap', true),
      repack: true,
    };
    const onProgress = functionOption<(progress: number) => void>(opts.onProgress, 'onProgress');
    const signal = signalOption(opts.signal);

    const native = new (binding().Model)();
    const model = new Model(native);
    try {
      await model.#queue.run(async () => {
        // llama.cpp aborts the process on some malformed files: check the header first.
        await checkGguf(path, 'text-model');
        await native.load(path, nativeOptions, onProgress);
      }, signal);
    } catch (error) {
      native.dispose();
      throw error;
    }
    model.#info = { path, ...native.info() };
    return model;
  }

  /** Metadata of the loaded model. */
  get info(): ModelInfo {
    this.#queue.assertAlive();
    return this.#info as ModelInfo;
  }

  /** The native object, for the classes of this package. @internal */
  get native(): NativeModel {
    this.#queue.assertAlive();
    return this.#native;
  }

  /** Text to token ids with the model's tokenizer. */
  tokenize(text: string, options?: TokenizeOptions): Int32Array {
    if (typeof text !== 'string') throw new TypeError('text must be a string');
    const opts = optionsObject(options);
    const addBos = booleanOption(opts.addBos, 'addBos', false);
    const parseSpecial = booleanOption(opts.parseSpecial, 'parseSpecial', false);
    const stack = callerStack();
    try {
      return this.native.tokenize(text, addBos, parseSpecial);
    } catch (error) {
      return rethrowWithCallerStack(error, stack);
    }
  }

  /** Token ids back to text; special tokens are left out unless `special` is true. */
  detokenize(tokens: ArrayLike<number>, options?: { special?: boolean }): string {
    if (tokens === null || typeof tokens !== 'object') throw new TypeError('tokens must be an array of token ids');
    const special = booleanOption(optionsObject(options).special, 'special', false);
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(Array.from(tokens, Number));
    const stack = callerStack();
    try {
      return this.native.detokenize(ids, special);
    } catch (error) {
      return rethrowWithCallerStack(error, stack);
    }
  }

  /** A new session (a context with its own KV cache) over this model. */
  async createSession(options?: SessionOptions): Promise<Session> {
    this.#queue.assertAlive();
    const session = await Session.create(this, options);
    this.#track(session);
    return session;
  }

  /** Loads a projector (mmproj GGUF) that turns images into this model's embeddings. */
  async loadProjector(path: string, options?: ProjectorOptions): Promise<Projector> {
    this.#queue.assertAlive();
    const projector = await Projector.load(this, path, options);
    this.#track(projector);
    return projector;
  }

  /**
   * Disposes the sessions and projectors made from this model, then frees the model. Safe to call
   * more than once; any later call rejects with ERR_DISPOSED.
   */
  async dispose(): Promise<void> {
    const dependents = [...this.#dependents];
    this.#dependents.clear();
    await Promise.all(dependents.map((dependent) => dependent.dispose()));
    await this.#queue.dispose(() => this.#native.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #track(dependent: Dependent & { onDispose(listener: () => void): void }): void {
    this.#dependents.add(dependent);
    dependent.onDispose(() => this.#dependents.delete(dependent));
  }
}
