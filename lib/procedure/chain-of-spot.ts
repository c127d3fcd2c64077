/**
 * Chain-of-Spot (Liu, Dong, Rao, Zhou, Lu) in this process: {@link ChainOfSpot} loads a text model
 * and its projector, finds their family (family-registry.ts), and runs the procedure
 * (procedure.ts) on the session's lanes.
 *
 * Unlike the reference, which rebuilds the whole two-image conversation for turn two, the KV cache
 * stays in native memory between the turns: turn two evaluates only its own tokens and the crop.
 * And the image prefix (system prompt + original image) is kept between questions about the same
 * image, so a further question costs only its own tokens and its crop.
 */
import { backend } from '../native/loader';
import { callerStack, rethrowWithCallerStack } from '../common/errors';
import { booleanOption, integerOption, requiredString, signalOption } from '../common/validate';
import { maxPixelsOption, type ImageInput } from '../image/image';
import { Model } from '../llama/model';
import { imageTokenLimits, type Projector } from '../llama/projector';
import type { Session } from '../llama/session';
import { askConfig, assertReferenceApplies, promptDefaults, type AskConfig } from './ask-config';
import type { BoundFamily } from './family';
import { bindFamily, familyOption } from './family-registry';
import { IsolatedChainOfSpot, type RpcChainOfSpotOptions } from './isolated';
import { Lanes } from './lanes';
import { PreparedImages } from './prepared-images';
import { askBaseline, askChainOfSpot } from './procedure';
import type { ChainOfSpotPromptOptions } from './prompt';
import { RemoteChainOfSpot, type ConnectOptions } from './remote';
import type { AskOptions, AskResult, BaselineOptions, BaselineResult, ChainOfSpotLike, ChainOfSpotOptions, FamilyName, OpenedImage } from './types';

/** Tokens for prompts and question beyond the images and answers, in the default context size. */
const PROMPT_ROOM = 512;

export class ChainOfSpot implements ChainOfSpotLike {
  readonly #model: Model;
  readonly #projector: Projector;
  readonly #session: Session;
  readonly #family: BoundFamily;
  readonly #defaults: ChainOfSpotPromptOptions;
  readonly #reference: boolean;
  readonly #images: PreparedImages;
  /** The sequences questions run on: one at a time, or `parallel` at once. */
  readonly #lanes: Lanes;

  private constructor(model: Model, projector: Projector, session: Session, family: BoundFamily, defaults: ChainOfSpotPromptOptions, maxPixels: number, reference: boolean, parallel: number) {
    this.#model = model;
    this.#projector = projector;
    this.#session = session;
    this.#family = family;
    this.#defaults = defaults;
    this.#reference = reference;
    this.#images = new PreparedImages(family, maxPixels);
    this.#lanes = new Lanes(session, projector, family.bos, parallel, 'this ChainOfSpot instance');
  }

  /**
   * Loads a text model and its projector, ready to ask questions; their family is detected from
   * the projector (or named with `family`). With `rpcServers`,
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
    const named = familyOption(options.family);
    // Checked here, before any work, though the projector is what takes them.
    imageTokenLimits(options.imageMinTokens, options.imageMaxTokens);
    const parallel = integerOption(options.parallel, 'parallel', 1, 128, 1);
    const maxPixels = maxPixelsOption(options.maxPixels);
    const defaults = promptDefaults(options);
    const projectorGpu = booleanOption(options.projectorGpu, 'projectorGpu', true);
    const stack = callerStack();
    try {
      const { gpuLayers, mmap, onProgress, rpcServers } = options;
      const model = await Model.load(modelPath, { gpuLayers, mmap, onProgress, signal, rpcServers });
      try {
        const { imageMinTokens, imageMaxTokens } = options;
        const projector = await model.loadProjector(mmprojPath, { gpu: projectorGpu, threads, imageMinTokens, imageMaxTokens, signal });
        const family = bindFamily(model, projector, named);
        assertReferenceApplies(reference, family);
        const perQuestion = Math.ceil((2 * family.maxImageTokens + 2 * 128 + PROMPT_ROOM) / 256) * 256;
        const contextSize = integerOption(options.contextSize, 'contextSize', 64, 1 << 20, parallel * perQuestion);
        // In parallel, each sequence has its part of the cache: a decode attends over its own cells only.
        const session = await model.createSession({ contextSize, threads, sequences: parallel, unifiedCache: parallel === 1 });
        return new ChainOfSpot(model, projector, session, family, defaults, maxPixels, reference, parallel);
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

  /** Which native binary and backend (CPU, CUDA or Vulkan) this process uses, why, and its devices. */
  static backend(): ReturnType<typeof backend> {
    return backend();
  }

  /** The model's family (README, "Model families"): its conversation, box format and zoom. */
  get family(): FamilyName {
    return this.#family.name;
  }

  /** @internal The family, bound to the loaded files. */
  get boundFamily(): BoundFamily {
    return this.#family;
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
    this.#lanes.assertAlive();
    return this.#images.open(image, options, this.#reference);
  }

  /**
   * Asks a question about an image the Chain-of-Spot way: turn one asks for the region of interest,
   * turn two shows the zoomed region and asks the question. Calls queue, one question at a time,
   * unless the instance was loaded with `parallel`: then that many run at once.
   */
  ask(image: ImageInput | OpenedImage, question: string, options?: AskOptions): Promise<AskResult> {
    const config = this.#askConfig(question, options);
    return this.#lanes.run(config.signal, (converse) => askChainOfSpot({ images: this.#images, converse }, image, config));
  }

  /**
   * The plain answer in one turn (LLaVA-1.5: `USER: <image>\n{question} ASSISTANT:`; the other
   * families: the image and the question in one user message of their template), what
   * Chain-of-Spot is compared against. Shares the image prefix with {@link ask}. In reference mode
   * the image is read without its EXIF orientation, as LLaVA's `model_vqa_loader.py` reads it.
   */
  baseline(image: ImageInput | OpenedImage, question: string, options?: BaselineOptions): Promise<BaselineResult> {
    const config = this.#askConfig(question, options);
    return this.#lanes.run(config.signal, (converse) => askBaseline({ images: this.#images, converse }, image, config));
  }

  /** Frees the models and the cache. Questions in flight reject with ERR_DISPOSED. */
  async dispose(): Promise<void> {
    // Disposing the model disposes the session, which stops the question in flight.
    const settled = this.#lanes.dispose();
    await this.#model.dispose();
    await settled;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #askConfig(question: string, options: AskOptions | undefined): AskConfig {
    return askConfig(question, options, this.#defaults, this.#reference, this.#family);
  }
}
