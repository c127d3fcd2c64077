/**
 * A projector: the CLIP image encoder and the projection into the text model's embedding space
 * (an "mmproj" GGUF), loaded by llama.cpp's mtmd library for one Model.
 */
import { binding } from '../native/loader';
import { checkGguf, type GgufSummary } from '../gguf/check';
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
  /**
   * For encoders that choose their own resolution (Qwen-VL): the fewest tokens an image becomes
   * (default: the model's own limit, 8 for Qwen-VL). llama.cpp recommends at least 1024 for
   * Qwen-VL's grounding, which Chain-of-Spot's first turn is. Other encoders ignore it.
   */
  imageMinTokens?: number;
  /** For encoders that choose their own resolution: the most tokens an image becomes (default: the model's own limit, 4096 for Qwen-VL). */
  imageMaxTokens?: number;
  /** Cancels loading: the promise rejects with ERR_ABORTED once the load returns. */
  signal?: AbortSignal;
}

/** What the projector takes and gives. */
export interface ProjectorInfo extends NativeProjectorInfo {
  /** The file the projector was loaded from. */
  path: string;
  /** Its `clip.projector_type`: what kind of model it belongs to (`mlp` for LLaVA-1.5). */
  type: string;
  /** Its `clip.vision.patch_size`, in pixels. */
  patchSize: number;
  /** The limits on an image's tokens it was loaded with ({@link ProjectorOptions.imageMinTokens}, `imageMaxTokens`), where given. */
  imageTokens: ImageTokenLimits;
}

/** Limits on the tokens of one image, where given (mtmd's own otherwise). */
export interface ImageTokenLimits {
  readonly min?: number | undefined;
  readonly max?: number | undefined;
}

/** The most tokens an image limit may name (mtmd's own limits are far below it). */
const MAX_IMAGE_TOKENS = 1 << 16;

/** The image token limits, checked. @internal */
export function imageTokenLimits(min: unknown, max: unknown): ImageTokenLimits {
  const limits = {
    min: min === undefined ? undefined : integerOption(min, 'imageMinTokens', 1, MAX_IMAGE_TOKENS, 0),
    max: max === undefined ? undefined : integerOption(max, 'imageMaxTokens', 1, MAX_IMAGE_TOKENS, 0),
  };
  if (limits.min !== undefined && limits.max !== undefined && limits.min > limits.max) {
    throw new RangeError(`imageMinTokens (${limits.min}) must not exceed imageMaxTokens (${limits.max})`);
  }
  return limits;
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
    const imageTokens = imageTokenLimits(opts.imageMinTokens, opts.imageMaxTokens);
    const nativeOptions = {
      gpu: booleanOption(opts.gpu, 'gpu', true),
      threads: integerOption(opts.threads, 'threads', 1, 1024, defaultThreads()),
      warmup: true,
      // -1: the model's own limit.
      imageMinTokens: imageTokens.min ?? -1,
      imageMaxTokens: imageTokens.max ?? -1,
    };
    const signal = signalOption(opts.signal);
    const projector = new Projector(new (binding().Projector)(), model);
    let header: GgufSummary | undefined;
    await projector.create(async () => {
      // clip.cpp aborts the process on some malformed files: check the header first.
      header = await checkGguf(path, 'projector', { textEmbeddingSize: model.inputEmbeddingSize });
      await projector.native.load(model.native, path, nativeOptions);
    }, signal);
    // The header check requires both keys of a projector.
    const type = header!.projectorType!;
    const patchSize = Number(header!.metadata.get('clip.vision.patch_size'));
    projector.#info = { path, type, patchSize, imageTokens, ...projector.native.info() };
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
