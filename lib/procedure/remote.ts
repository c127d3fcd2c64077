/**
 * Chain-of-Spot against a llama-server the user already runs: the same two turns, prompts, box
 * grammar and crop as {@link ChainOfSpot.load}'s local instance, sent to llama-server's
 * `/completion` endpoint as raw prompts with the prepared images (PNG, lossless), turn two in the
 * slot that served turn one so that its prompt cache holds turn one between the turns.
 */
import { abortedError, ChainOfSpotError } from '../common/errors';
import { DEFAULT_TIMEOUT_MS, LlamaServerClient, measureImageSize, parseUrl } from './llama-server';
import {
  DEFAULT_MAX_PIXELS,
  encodePng,
  loadImageWithOrientation,
  prepareOriginal,
  type ImageInput,
} from '../image/image';
import type { RgbImage } from '../common/rgb-image';
import { OperationQueue } from '../llama/operation-queue';
import { booleanOption, integerOption, requiredString, signalOption } from '../common/validate';
import { askConfig, promptDefaults, regionSteps, type AskConfig } from './ask-config';
import { BOX_GRAMMAR } from './box';
import { baselinePrompt, renderPrompt, type ChainOfSpotPromptOptions, type Prompt } from './prompt';
import type { AskOptions, AskResult, BaselineResult, ChainOfSpot, ChainOfSpotOptions, TurnResult } from './chain-of-spot';

/** Options of {@link ChainOfSpot.connect}. */
export interface ConnectOptions extends ChainOfSpotPromptOptions {
  /**
   * Where llama-server listens, e.g. `http://127.0.0.1:8080` (a path prefix, as behind a proxy, is
   * kept). The server must have loaded a LLaVA-1.5 model with its projector (`--mmproj`).
   */
  url: string;
  /**
   * The most milliseconds one HTTP request may take, answer included: from 1 to 300000, the
   * default (Node's fetch waits at most 5 minutes for an answer to begin). A server that does not
   * answer in time fails the call with ERR_REMOTE instead of hanging it. A question makes two
   * requests (one per turn).
   */
  timeoutMs?: number;
  /** Sent as `Authorization: Bearer <apiKey>`, for a server started with `--api-key`. */
  apiKey?: string;
  /**
   * The projector's image side in pixels. Default: measured from the server when connecting (see
   * {@link RemoteChainOfSpot.imageSize}); pass it to skip that request.
   */
  imageSize?: number;
  /** As {@link ChainOfSpotOptions.maxPixels}. */
  maxPixels?: number;
  /** As {@link ChainOfSpotOptions.reference}. */
  reference?: boolean;
  /** Cancels connecting. */
  signal?: AbortSignal;
}

/** One turn as {@link TurnResult}, with what llama-server's prompt cache served. */
export interface RemoteTurnResult extends TurnResult {
  /** Tokens of this turn's prompt that llama-server took from its prompt cache (its `timings.cache_n`). */
  cachedTokens: number;
}

/** {@link AskResult} from a llama-server: the turns tell what its prompt cache served. */
export interface RemoteAskResult extends AskResult {
  turns: [RemoteTurnResult, RemoteTurnResult];
}

/** {@link BaselineResult} from a llama-server. */
export interface RemoteBaselineResult extends BaselineResult {
  turn: RemoteTurnResult;
}

/**
 * Chain-of-Spot on a llama-server: made by {@link ChainOfSpot.connect}, with the local instance's
 * {@link ChainOfSpot.ask}, {@link ChainOfSpot.baseline} and {@link ChainOfSpot.dispose}, and the same results.
 *
 * How it maps to llama-server (the `/completion` endpoint, non-streamed, greedy with
 * `samplers: ['temperature']` at 0, which breaks exact ties as the local instance does):
 * - turn one: the reference's prompt as a raw string with `/props`' media marker where the image
 *   goes, the prepared original (padded and resized here, bit-exact to Pillow) as PNG in
 *   `multimodal_data`, the box grammar in `grammar`, `cache_prompt: true`;
 * - turn two: turn one's prompt, the model's answer as it wrote it and the continuation, with
 *   both images, in the slot that served turn one (`id_slot`): its prompt cache serves everything
 *   up to the end of turn one's answer ({@link RemoteTurnResult.cachedTokens});
 * - a further question on the same image reuses the image's prefix from the same cache.
 *
 * What differs from the local instance:
 * - the prompt is a string, which llama-server tokenizes with special tokens parsed: a question
 *   holding `</s>` or `<s>` gives the model that token, where the local instance keeps it as text;
 * - turn two's prompt holds turn one's answer as text, which llama-server tokenizes again (the
 *   local instance keeps the generated tokens): when the model wrote its answer as the tokenizer
 *   writes that text (as a trained LLaVA writes a box), the cache serves all of turn one and turn
 *   two sees what it sees locally; an answer written with other tokens (byte tokens, say) is read
 *   back from where they start;
 * - where the box grammar leaves a single text (`, ` between numbers), the local instance writes
 *   it without sampling, as its ordinary token; llama-server samples among the tokens that spell
 *   it, which is the same token unless the model rates another (a byte token) higher;
 * - timings: `promptMs` is llama-server's prompt time, image encoding included;
 *   `imageEncodeMs` and `imageDecodeMs` are 0; `promptTokens` are the tokens it evaluated (those
 *   its cache did not serve); `decodeSteps` equals `generatedTokens` (llama-server decodes every
 *   token on its own, grammar-forced ones too);
 * - {@link ChainOfSpot.open} is not offered: pass the image to each question.
 *
 * Failures of the server (unreachable, an HTTP error, an answer that is not what llama-server
 * sends, no answer within `timeoutMs`) reject with ERR_REMOTE; a prompt that does not fit the
 * server's context with ERR_CONTEXT_FULL.
 */
export class RemoteChainOfSpot {
  readonly #client: LlamaServerClient;
  readonly #mediaMarker: string;
  readonly #imageSize: number;
  readonly #defaults: ChainOfSpotPromptOptions;
  readonly #maxPixels: number;
  readonly #reference: boolean;
  readonly #queue: OperationQueue;
  /** Aborts the requests of the operation in flight (the caller's signal, or dispose). */
  #operation: AbortController | undefined;
  /** Tokens of each distinct text before the image (BOS included), to tell whether an image's prefix was reused. */
  readonly #prefixTokens = new Map<string, number>();

  private constructor(client: LlamaServerClient, mediaMarker: string, imageSize: number, options: ConnectOptions) {
    this.#client = client;
    this.#mediaMarker = mediaMarker;
    this.#imageSize = imageSize;
    this.#defaults = promptDefaults(options);
    this.#maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
    this.#reference = booleanOption(options.reference, 'reference', false);
    this.#queue = new OperationQueue('this remote ChainOfSpot instance', () => this.#operation?.abort());
  }

  /** @internal Use {@link ChainOfSpot.connect}. */
  static async connect(options: ConnectOptions): Promise<RemoteChainOfSpot> {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with the url of a llama-server');
    const url = parseUrl(requiredString(options.url, 'url'));
    const timeoutMs = integerOption(options.timeoutMs, 'timeoutMs', 1, DEFAULT_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
    const apiKey = options.apiKey === undefined ? undefined : requiredString(options.apiKey, 'apiKey');
    const imageSize = options.imageSize === undefined ? undefined : integerOption(options.imageSize, 'imageSize', 1, 1 << 16, 0);
    if (options.maxPixels !== Infinity) integerOption(options.maxPixels, 'maxPixels', 1, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_PIXELS);
    booleanOption(options.reference, 'reference', false);
    promptDefaults(options);
    const signal = signalOption(options.signal);
    if (signal?.aborted) throw abortedError(signal.reason);

    const client = new LlamaServerClient(url, timeoutMs, apiKey);
    const operation = new AbortController();
    const onAbort = (): void => operation.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const mediaMarker = await client.mediaMarker(operation.signal);
      const size = imageSize ?? (await measureImageSize(client, mediaMarker, operation.signal));
      return new RemoteChainOfSpot(client, mediaMarker, size, options);
    } catch (error) {
      if (operation.signal.aborted && signal?.aborted) throw abortedError(signal.reason);
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The server's address, as given to {@link ChainOfSpot.connect}. */
  get url(): string {
    return this.#client.url;
  }

  /**
   * The projector's image side in pixels, which images are padded and resized to here. Unless
   * given to {@link ChainOfSpot.connect}, measured when connecting: llama-server's `/props` does
   * not tell it, so the tokens of a small image are counted, (side / 14)² for LLaVA-1.5's 14-pixel
   * patches (without evaluating it where the server can count them).
   */
  get imageSize(): number {
    return this.#imageSize;
  }

  /** As {@link ChainOfSpot.ask}, on the server. Calls queue: one question runs at a time. */
  ask(image: ImageInput, question: string, options?: AskOptions): Promise<RemoteAskResult> {
    const config = this.#askConfig(question, options);
    return this.#run(config.signal, (signal) => this.#ask(image, config, signal));
  }

  /** As {@link ChainOfSpot.baseline}, on the server: one plain LLaVA-1.5 turn. */
  baseline(image: ImageInput, question: string, options?: Pick<AskOptions, 'maxTokens' | 'signal' | 'onText' | 'reference'>): Promise<RemoteBaselineResult> {
    const config = this.#askConfig(question, options);
    return this.#run(config.signal, async (signal) => {
      const start = performance.now();
      const { model, preprocessMs } = await this.#prepare(image, config.reference);
      const prompt = baselinePrompt(question);
      const original = (await encodePng(model)).toString('base64');
      const { turn, cachedPrefix } = await this.#turn(prompt, this.#raw(prompt), [original], { n_predict: config.maxTokens }, signal, config.onText1);
      const prefixReused = await this.#prefixReused(prompt, cachedPrefix, signal);
      return { answer: turn.text.trim(), turn, prefixReused, timings: { preprocessMs, totalMs: performance.now() - start } };
    });
  }

  /** Ends this connection: questions in flight reject with ERR_DISPOSED. The server goes on. */
  async dispose(): Promise<void> {
    await this.#queue.dispose(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #run<T>(signal: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return this.#queue.run(async () => {
      const operation = new AbortController();
      this.#operation = operation;
      try {
        return await work(operation.signal);
      } finally {
        this.#operation = undefined;
      }
    }, signal);
  }

  #askConfig(question: string, options: AskOptions | undefined): AskConfig {
    return askConfig(question, options, this.#defaults, this.#reference);
  }

  async #ask(image: ImageInput, config: AskConfig, signal: AbortSignal): Promise<RemoteAskResult> {
    const start = performance.now();
    const { original, model, preprocessMs: loadMs } = await this.#prepare(image, config.reference);
    const originalPng = (await encodePng(model)).toString('base64');

    // Turn one: the region of interest.
    const { turnOnePrompt, turnTwoPrompt } = config;
    const turnOneRaw = this.#raw(turnOnePrompt);
    const one = await this.#turn(turnOnePrompt, turnOneRaw, [originalPng], {
      n_predict: config.roiMaxTokens,
      ...(config.grammar ? { grammar: BOX_GRAMMAR } : {}),
    }, signal, config.onText1);
    const steps = regionSteps(config.reference);
    const region = steps.read(one.turn.text, original);

    // Turn two: the zoomed region, after turn one's answer as the model wrote it, in the same slot.
    const cropStart = performance.now();
    const roiImage = await steps.zoom(original, region.box, this.#imageSize, this.#maxPixels);
    const roiPng = await encodePng(roiImage);
    const cropMs = performance.now() - cropStart;
    const two = await this.#turn(turnTwoPrompt, turnOneRaw + one.turn.text + this.#raw(turnTwoPrompt), [originalPng, roiPng.toString('base64')], {
      n_predict: config.maxTokens,
      id_slot: one.slot,
    }, signal, config.onText2);

    const result: RemoteAskResult = {
      answer: two.turn.text.trim(),
      roi: { box: region.box, pixels: steps.toPixels(region.box, original.width, original.height), source: region.source },
      turns: [one.turn, two.turn],
      prefixReused: await this.#prefixReused(turnOnePrompt, one.cachedPrefix, signal),
      timings: { preprocessMs: loadMs + cropMs, totalMs: 0 },
    };
    if (config.includeRoiImage) result.roiImage = roiPng;
    result.timings.totalMs = performance.now() - start;
    return result;
  }

  /** The image loaded (upright unless in reference mode) and padded and resized for the projector. */
  async #prepare(image: ImageInput, reference: boolean): Promise<{ original: RgbImage; model: RgbImage; preprocessMs: number }> {
    const start = performance.now();
    try {
      const { image: original } = await loadImageWithOrientation(image, { maxPixels: this.#maxPixels, applyOrientation: !reference });
      const model = await prepareOriginal(original, this.#imageSize, this.#maxPixels);
      return { original, model, preprocessMs: performance.now() - start };
    } catch (error) {
      if (error instanceof TypeError || error instanceof RangeError || error instanceof ChainOfSpotError) throw error;
      throw new ChainOfSpotError('ERR_IMAGE', `the image could not be prepared: ${(error as Error).message}`, { cause: error });
    }
  }

  /** The prompt as the raw string llama-server tokenizes: the media marker where an image goes. */
  #raw(prompt: Prompt): string {
    return prompt.map((part) => (part.type === 'image' ? this.#mediaMarker : part.type === 'special' ? part.token : part.text)).join('');
  }

  /** One greedy `/completion`; the turn as the local instance reports it. */
  async #turn(
    prompt: Prompt,
    raw: string,
    images: string[],
    settings: { n_predict: number; grammar?: string; id_slot?: number },
    signal: AbortSignal,
    onText: ((text: string) => void) | undefined,
  ): Promise<{ turn: RemoteTurnResult; slot: number; cachedPrefix: number }> {
    const answer = await this.#client.complete({ prompt: raw, images, maxTokens: settings.n_predict, grammar: settings.grammar, slot: settings.id_slot }, signal, onText);
    const { timings: t } = answer;
    // llama-server lists the end-of-generation token it sampled; the local instance does not keep it.
    const tokens = Int32Array.from(answer.stop_type === 'eos' ? answer.tokens.slice(0, -1) : answer.tokens);
    const turn: RemoteTurnResult = {
      prompt: renderPrompt(prompt),
      text: answer.content,
      tokens,
      promptTokens: t.prompt_n,
      cachedTokens: t.cache_n,
      generatedTokens: tokens.length,
      decodeSteps: tokens.length,
      finishReason: answer.truncated ? 'context' : answer.stop_type === 'eos' ? 'eos' : answer.stop_type === 'word' ? 'stop' : 'length',
      timings: { imageEncodeMs: 0, imageDecodeMs: 0, promptMs: t.prompt_ms, generateMs: t.predicted_ms },
    };
    return { turn, slot: answer.id_slot, cachedPrefix: t.cache_n };
  }

  /**
   * Whether the server's cache served the image of a conversation-opening prompt: more cached
   * tokens than the text before the image (llama-server reuses an image whole or not at all).
   */
  async #prefixReused(prompt: Prompt, cached: number, signal: AbortSignal): Promise<boolean> {
    if (cached === 0) return false;
    const before = this.#raw(prompt.slice(0, prompt.findIndex((part) => part.type === 'image')));
    let tokens = this.#prefixTokens.get(before);
    if (tokens === undefined) {
      tokens = await this.#client.countTokens(before, true, signal);
      this.#prefixTokens.set(before, tokens);
    }
    return cached > tokens;
  }
}
