/**
 * A projector: the CLIP image encoder and the projection into the text model's embedding space
 * (an "mmproj" GGUF), loaded by llama.cpp's mtmd library for one Model.
 */
import { binding } from '../native/loader';
import { abortedError } from '../common/errors';
import { checkGguf } from '../gguf/check';
import type { Model } from './model';
import type { NativeProjector, NativeProjectorInfo } from '../native/addon';
import { OperationQueue } from './operation-queue';
import { defaultThreads } from '../native/threads';
import { booleanOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';

/** Options of {@link Model.loadProjector}. */
export interface ProjectorOptions {
  /** Run the image encoder on the GPU when the binary has a GPU backend (default true). */
  gpu?: boolean;
  /** CPU threads for the image encoder (default: the number of CPUs). */
  threads?: number;
  /** Cancels loading: the promise rejects with ERR_ABORTED once the load returns. */
  signal?: AbortSignal;
}

/** What the projector takes and gives. */
export interface ProjectorInfo extends NativeProjectorInfo {
  /** The file the projector was loaded from. */
  path: string;
}

export class Projector {
  readonly #native: NativeProjector;
  readonly #queue: OperationQueue;
  readonly #model: Model;
  #info: ProjectorInfo | undefined;

  private constructor(native: NativeProjector, model: Model) {
    this.#native = native;
    this.#model = model;
    this.#queue = new OperationQueue('the projector', () => undefined);
  }

  /** @internal Use {@link Model.loadProjector}. */
  static async load(model: Model, path: string, options?: ProjectorOptions): Promise<Projector> {
    requiredString(path, 'path');
    const opts = optionsObject(options);
    const nativeOptions = {
      gpu: booleanOption(opts.gpu, 'gpu', true),
      threads: integerOption(opts.threads, 'threads', 1, 1024, defaultThreads()),
      warmup: true,
    };
    const signal = signalOption(opts.signal);
    const native = new (binding().Projector)();
    const projector = new Projector(native, model);
    try {
      await projector.#queue.run(async () => {
        // clip.cpp aborts the process on some malformed files: check the header first.
        await checkGguf(path, 'projector', { textEmbeddingSize: model.info.embeddingSize });
        await native.load(model.native, path, nativeOptions);
      }, signal);
      if (signal?.aborted) throw abortedError(signal.reason);
    } catch (error) {
      native.dispose();
      throw error;
    }
    projector.#info = { path, ...native.info() };
    return projector;
  }

  /** The image size it expects, the tokens one image becomes, and whether it has vision. */
  get info(): ProjectorInfo {
    this.#queue.assertAlive();
    return this.#info as ProjectorInfo;
  }

  /** The model this projector feeds. */
  get model(): Model {
    return this.#model;
  }

  /** @internal */
  get native(): NativeProjector {
    this.#queue.assertAlive();
    return this.#native;
  }

  /** Frees the projector. Safe to call more than once. */
  async dispose(): Promise<void> {
    await this.#queue.dispose(() => this.#native.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** @internal */
  onDispose(listener: () => void): void {
    this.#queue.onDisposed(listener);
  }
}
