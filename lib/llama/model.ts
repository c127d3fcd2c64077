/**
 * A text model (the language model of a vision-language pair, a GGUF file) loaded by llama.cpp.
 */
import { binding } from '../native/loader';
import { callerStack, rethrowWithCallerStack } from '../common/errors';
import { checkGguf } from '../gguf/check';
import type { NativeModel, NativeModelInfo } from '../native/addon';
import { NativeResource } from './native-resource';
import { Projector, type ProjectorOptions } from './projector';
import { Session, type SessionOptions } from './session';
import { booleanOption, functionOption, integerOption, optionsObject, requiredString, rpcServersOption, signalOption } from '../common/validate';
import { reachRpcServers } from './rpc';

/** Options of {@link Model.load}. */
export interface ModelLoadOptions {
  /**
   * How many layers to put on the GPU (and the RPC servers): a number, `'max'` for all, or
   * `'auto'` (the default): all when the loaded binary has a GPU backend or `rpcServers` are
   * given, none otherwise.
   */
  gpuLayers?: number | 'auto' | 'max';
  /**
   * ggml RPC servers (`chain-of-spot rpc-server`), as `'host:port'`, to put the offloaded layers
   * on, before this machine's GPUs; llama.cpp splits the layers among them by their free memory.
   * Each is reached first (ERR_REMOTE when one cannot be, within 10 seconds), but a server lost
   * after that **aborts this process** (llama.cpp's RPC client does): {@link ChainOfSpot.load}
   * with `rpcServers` runs the model in a child process to keep that out of yours.
   */
  rpcServers?: string[];
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

function gpuLayerCount(value: ModelLoadOptions['gpuLayers'], rpc: boolean): number {
  if (value === undefined || value === 'auto') return rpc || binding().systemInfo().gpuOffload ? -1 : 0;
  if (value === 'max') return -1;
  return integerOption(value, 'gpuLayers', 0, 100_000, 0);
}

export class Model extends NativeResource<NativeModel> {
  #info: ModelInfo | undefined;
  #inputEmbeddingSize = 0;

  private constructor(native: NativeModel) {
    super(native, 'the model', () => native.abortLoad());
  }

  /** Loads a GGUF text model. Rejects with ERR_MODEL_LOAD (and a reason) when it cannot. */
  static async load(path: string, options?: ModelLoadOptions): Promise<Model> {
    requiredString(path, 'path');
    const opts = optionsObject(options);
    const rpcServers = rpcServersOption(opts.rpcServers);
    const nativeOptions = {
      gpuLayers: gpuLayerCount(opts.gpuLayers, rpcServers !== undefined),
      mmap: booleanOption(opts.mmap, 'mmap', true),
      repack: true,
      rpcServers: rpcServers ?? [],
    };
    const onProgress = functionOption<(progress: number) => void>(opts.onProgress, 'onProgress');
    const signal = signalOption(opts.signal);

    const model = new Model(new (binding().Model)());
    let inputSlices = 1;
    await model.create(async () => {
      // llama.cpp aborts the process on some malformed files: check the header first.
      const summary = await checkGguf(path, 'text-model');
      // llama.cpp's n_embd_inp: Qwen3-VL's text model takes one more embedding-wide slice per
      // deepstack layer along with each image token (added to that layer's output).
      const deepstack = summary.metadata.get(`${summary.architecture}.n_deepstack_layers`);
      inputSlices = 1 + (typeof deepstack === 'number' ? deepstack : 0);
      if (rpcServers) await reachRpcServers(rpcServers, signal);
      await model.native.load(path, nativeOptions, onProgress);
    }, signal);
    model.#info = { path, ...model.native.info() };
    model.#inputEmbeddingSize = model.#info.embeddingSize * inputSlices;
    return model;
  }

  /** @internal The values an input embedding (an image token) holds: the embedding size, or a multiple of it (Qwen3-VL's deepstack). */
  get inputEmbeddingSize(): number {
    this.queue.assertAlive();
    return this.#inputEmbeddingSize;
  }

  /** Metadata of the loaded model. */
  get info(): ModelInfo {
    this.queue.assertAlive();
    return this.#info as ModelInfo;
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
    this.queue.assertAlive();
    return Session.create(this, options);
  }

  /** Loads a projector (mmproj GGUF) that turns images into this model's embeddings. */
  async loadProjector(path: string, options?: ProjectorOptions): Promise<Projector> {
    this.queue.assertAlive();
    return Projector.load(this, path, options);
  }

  /**
   * Disposes the sessions and projectors made from this model, then frees the model. Safe to call
   * more than once; any later call rejects with ERR_DISPOSED.
   */
  override dispose(): Promise<void> {
    return super.dispose();
  }
}
