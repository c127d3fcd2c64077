/**
 * A projector: the CLIP image encoder and the projection into the text model's embedding space
 * (an "mmproj" GGUF), loaded by llama.cpp's mtmd library for one Model.
 */
import { binding } from '../native/loader';
import { checkGguf } from '../gguf/check';
import type { Model } from './model';
import type { NativeProjector, NativeProjectorInfo } from '../native/addon';
import { NativeResource } from './native-resource';
import { defaultThreads } from '../native/threads';
import { booleanOption, integerOption, optionsObject, requiredString, signalOption } from '../common/validate';

/** Options of {@link Model.loadProjector}. */
export interface ProjectorOptions {
  /** Run the image encoder on the GPU when the binary has a GPU backend (default true). */
  gpu?: boolean;
  /** CPU threads for the image encoder (default: the number of physical CPU cores). */
  threads?: number;
  /** Cancels loading: the promise rejects with ERR_ABORTED once the load returns. */
  signal?: AbortSignal;
}

/** What the projector takes and gives. */
export interface ProjectorInfo extends NativeProjectorInfo {
  /** The file the projector was loaded from. */
  path: string;
}

export class Projector extends NativeResource<NativeProjector> {
  readonly #model: Model;
  #info: ProjectorInfo | undefined;

  private constructor(native: NativeProjector, model: Model) {
    super(native, 'the projector', () => undefined, model);
    this.#model = model;
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
    const projector = new Projector(new (binding().Projector)(), model);
    await projector.create(async () => {
      // clip.cpp aborts the process on some malformed files: check the header first.
      await checkGguf(path, 'projector', { textEmbeddingSize: model.inputEmbeddingSize });
      await projector.native.load(model.native, path, nativeOptions);
    }, signal);
    projector.#info = { path, ...projector.native.info() };
    return projector;
  }

  /** The image size it expects, the tokens one image becomes, and whether it has vision. */
  get info(): ProjectorInfo {
    this.queue.assertAlive();
    return this.#info as ProjectorInfo;
  }

  /** The model this projector feeds. */
  get model(): Model {
    return this.#model;
  }

  /** Frees the projector. Safe to call more than once. */
  override dispose(): Promise<void> {
    return super.dispose();
  }
}
