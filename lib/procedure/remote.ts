/**
 * Chain-of-Spot against a llama-server the user already runs: the same two turns, prompts, box
 * grammar and crop as {@link ChainOfSpot.load}'s local instance, sent to llama-server's
 * `/completion` endpoint as raw prompts with the prepared images (PNG, lossless), turn two in the
 * slot that served turn one so that its prompt cache holds turn one between the turns.
 */
import { abortedError, ChainOfSpotError } from '../common/errors';
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

/** LLaVA-1.5's CLIP ViT-L/14 patch: one image is (imageSize / 14)² tokens. */
const PATCH_SIZE = 14;
const DEFAULT_TIMEOUT_MS = 300_000;

/** What `/props` holds that we read. */
interface Props {
  media_marker?: unknown;
  modalities?: { vision?: unknown };
}

/** The fields of a non-streamed `/completion` answer that we read. */
interface Completion {
  content: string;
  tokens: number[];
  id_slot: number;
  tokens_evaluated: number;
  stop_type: string;
  truncated: boolean;
  timings: { cache_n: number; prompt_n: number; prompt_ms: number; predicted_n: number; predicted_ms: number };
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
  readonly #client: Client;
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

  private constructor(client: Client, mediaMarker: string, imageSize: number, options: ConnectOptions) {
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

    const client = new Client(url, timeoutMs, apiKey);
    const operation = new AbortController();
    const onAbort = (): void => operation.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const props = (await client.request('GET', '/props', undefined, operation.signal)) as Props;
      if (props === null || typeof props !== 'object') throw client.malformed('/props', 'not an object');
      if (props.modalities?.vision !== true) {
        throw new ChainOfSpotError('ERR_REMOTE', `llama-server at ${client.url} takes no images: start it with the model's projector (--mmproj)`);
      }
      if (typeof props.media_marker !== 'string' || props.media_marker === '') throw client.malformed('/props', 'no media_marker');
      const size = imageSize ?? (await measureImageSize(client, props.media_marker, operation.signal));
      return new RemoteChainOfSpot(client, props.media_marker, size, options);
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
    const body = {
      prompt: { prompt_string: raw, multimodal_data: images },
      ...settings,
      cache_prompt: true,
      return_tokens: true,
      // Streamed when the caller wants the text as it comes: the pieces, then the totals.
      stream: onText !== undefined,
      // Greedy as the local instance: the temperature sampler alone, at 0, keeps the first best
      // token in id order (the default chain's top-k sorts first, which breaks exact ties otherwise).
      samplers: ['temperature'],
      temperature: 0,
    };
    let answer: Completion;
    if (onText === undefined) {
      answer = checkCompletion(this.#client, await this.#client.request('POST', '/completion', body, signal));
    } else {
      let content = '';
      const tokens: unknown[] = [];
      const last = (await this.#client.request('POST', '/completion', body, signal, (event) => {
        if (typeof event.content !== 'string' || !Array.isArray(event.tokens)) throw this.#client.malformed('/completion', 'an event without content or tokens');
        content += event.content;
        tokens.push(...(event.tokens as unknown[]));
        if (event.content !== '') onText(event.content);
      })) as Record<string, unknown>;
      answer = checkCompletion(this.#client, { ...last, content, tokens });
    }
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
      const answer = (await this.#client.request('POST', '/tokenize', { content: before, add_special: true, parse_special: true }, signal)) as { tokens?: unknown };
      if (!Array.isArray(answer?.tokens)) throw this.#client.malformed('/tokenize', 'no tokens');
      tokens = answer.tokens.length;
      this.#prefixTokens.set(before, tokens);
    }
    return cached > tokens;
  }
}

/** The HTTP side: one request at a time, each bounded by the timeout, each error a ChainOfSpotError. */
class Client {
  constructor(
    readonly url: string,
    readonly timeoutMs: number,
    readonly apiKey: string | undefined,
  ) {}

  /**
   * One request and its JSON answer. `signal` (an operation's: the caller's abort, or dispose)
   * rejects with ERR_ABORTED; everything else that goes wrong with ERR_REMOTE (ERR_CONTEXT_FULL
   * for llama-server's context error).
   */
  async request(method: 'GET' | 'POST', path: string, body: object | undefined, signal: AbortSignal, onEvent?: (event: Record<string, unknown>) => void): Promise<unknown> {
    if (signal.aborted) throw abortedError(signal.reason);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    // Ends a stream whose onEvent threw.
    const own = new AbortController();
    const both = AbortSignal.any([signal, timeout, own.signal]);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    const failed = (error: unknown, during: string): ChainOfSpotError => {
      if (signal.aborted) return abortedError(signal.reason);
      const undiciCode = (error as { cause?: { code?: unknown } }).cause?.code;
      if (timeout.aborted || undiciCode === 'UND_ERR_HEADERS_TIMEOUT' || undiciCode === 'UND_ERR_BODY_TIMEOUT') {
        return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} did not answer ${path} within ${this.timeoutMs} ms (timeoutMs)`, { cause: error });
      }
      const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
      const code = typeof cause?.code === 'string' ? cause.code : undefined;
      if (during === 'connect' && code !== undefined && /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|UND_ERR_CONNECT_TIMEOUT)$/.test(code)) {
        return new ChainOfSpotError(
          'ERR_REMOTE',
          `cannot reach llama-server at ${this.url} (${code}): start it with \`llama-server -m <model.gguf> --mmproj <mmproj.gguf> --host <host> --port <port>\`, or check the url`,
          { cause: error },
        );
      }
      const detail = [code, typeof cause?.message === 'string' ? cause.message : (error as Error).message].filter(Boolean).join(': ');
      if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || during === 'read') {
        return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} closed the connection before it answered ${path} (${detail}): it may have crashed, see its log`, { cause: error });
      }
      return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url}: ${path} failed (${detail})`, { cause: error });
    };

    let response: Response;
    try {
      response = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: both });
    } catch (error) {
      throw failed(error, 'connect');
    }
    if (onEvent !== undefined && response.ok && response.body) {
      try {
        return await this.#events(path, response.body, onEvent, own);
      } catch (error) {
        if (error instanceof ChainOfSpotError || own.signal.aborted) throw error;
        throw failed(error, 'read');
      }
    }
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw failed(error, 'read');
    }
    if (!response.ok) throw this.#httpError(path, response.status, text);
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw this.malformed(path, `not JSON: ${JSON.stringify(text.slice(0, 200))}`, error);
    }
  }

  /**
   * A streamed answer (server-sent events, `data: {json}` each): every event before the last to
   * `onEvent`, the last (`stop: true`) returned. An event with an `error` rejects as an HTTP error.
   */
  async #events(path: string, body: ReadableStream<Uint8Array>, onEvent: (event: Record<string, unknown>) => void, own: AbortController): Promise<unknown> {
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 1);
        const data = /^(data|error):\s*/.exec(line);
        if (!data) continue;
        let event: Record<string, unknown>;
        try {
          event = JSON.parse(line.slice(data[0].length)) as Record<string, unknown>;
        } catch (error) {
          throw this.malformed(path, `an event is not JSON: ${JSON.stringify(line.slice(0, 200))}`, error);
        }
        if (event === null || typeof event !== 'object') throw this.malformed(path, 'an event is not an object');
        if (data[1] === 'error' || event.error !== undefined) {
          const error = (event.error ?? event) as { code?: unknown };
          throw this.#httpError(path, typeof error.code === 'number' ? error.code : 500, JSON.stringify({ error }));
        }
        if (event.stop === true) return event;
        try {
          onEvent(event);
        } catch (error) {
          own.abort();
          throw error;
        }
      }
    }
    throw new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} closed the connection before it answered ${path} (the stream ended early): it may have crashed, see its log`);
  }

  malformed(path: string, why: string, cause?: unknown): ChainOfSpotError {
    return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} sent a malformed answer to ${path}: ${why}`, { cause });
  }

  /** llama-server's errors are `{ error: { code, message, type } }`; anything else is shown as it came. */
  #httpError(path: string, status: number, text: string): ChainOfSpotError {
    let message = text.slice(0, 500);
    let type: unknown;
    try {
      const error = (JSON.parse(text) as { error?: { message?: unknown; type?: unknown } }).error;
      if (typeof error?.message === 'string') message = error.message;
      type = error?.type;
    } catch {
      // Not JSON: the text as it came.
    }
    if (type === 'exceed_context_size_error') {
      return new ChainOfSpotError('ERR_CONTEXT_FULL', `llama-server at ${this.url}: ${message} (start it with a larger --ctx-size)`);
    }
    const hint = status === 503 ? ' (it is still loading its model: try again once /health answers 200)' : '';
    return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} answered ${path} with HTTP ${status}: ${message.trim() || '(no message)'}${hint}`);
  }
}

/**
 * The projector's image side, from the tokens one image makes: (side / 14)² for LLaVA-1.5. First
 * by counting without evaluating (`/v1/chat/completions/input_tokens` with no, one and two small
 * images: both differences must agree); where that endpoint is missing or the counts disagree, by
 * evaluating one small image and a newline with `/completion` (the prompt tokens less BOS and the
 * newline's; the newline is needed: the pinned llama-server aborts on a prompt ending with an image).
 */
async function measureImageSize(client: Client, mediaMarker: string, signal: AbortSignal): Promise<number> {
  const probe = (await encodePng({ width: PATCH_SIZE, height: PATCH_SIZE, data: Buffer.alloc(PATCH_SIZE * PATCH_SIZE * 3, 127) })).toString('base64');
  let imageTokens: number | undefined;
  try {
    const counts: number[] = [];
    for (const images of [0, 1, 2]) {
      const content = [
        ...Array.from({ length: images }, () => ({ type: 'image_url', image_url: { url: `data:image/png;base64,${probe}` } })),
        { type: 'text', text: 'x' },
      ];
      const answer = (await client.request('POST', '/v1/chat/completions/input_tokens', { messages: [{ role: 'user', content }] }, signal)) as { input_tokens?: unknown };
      if (typeof answer?.input_tokens !== 'number') throw client.malformed('/v1/chat/completions/input_tokens', 'no input_tokens');
      counts.push(answer.input_tokens);
    }
    if (counts[1]! - counts[0]! === counts[2]! - counts[1]!) imageTokens = counts[1]! - counts[0]!;
  } catch (error) {
    if (signal.aborted) throw error;
    // An older llama-server: evaluate one instead.
  }
  if (imageTokens === undefined) {
    const count = async (content: string, addSpecial: boolean): Promise<number> => {
      const answer = (await client.request('POST', '/tokenize', { content, add_special: addSpecial, parse_special: true }, signal)) as { tokens?: unknown };
      if (!Array.isArray(answer?.tokens)) throw client.malformed('/tokenize', 'no tokens');
      return answer.tokens.length;
    };
    const text = (await count('', true)) + (await count('\n', false));
    const answer = checkCompletion(client, await client.request('POST', '/completion', {
      prompt: { prompt_string: `${mediaMarker}\n`, multimodal_data: [probe] },
      n_predict: 1,
      cache_prompt: false,
      stream: false,
      temperature: 0,
    }, signal));
    imageTokens = answer.tokens_evaluated - text;
  }
  const side = Math.sqrt(imageTokens) * PATCH_SIZE;
  if (!Number.isInteger(side) || side <= 0) {
    throw new ChainOfSpotError('ERR_REMOTE', `llama-server at ${client.url} makes ${imageTokens} tokens of an image, which is no LLaVA-1.5 projector's square of 14-pixel patches: pass imageSize`);
  }
  return side;
}

function checkCompletion(client: Client, value: unknown): Completion {
  const answer = value as Partial<Completion> | null;
  const t = answer?.timings;
  const numbers = t && [t.cache_n, t.prompt_n, t.prompt_ms, t.predicted_n, t.predicted_ms].every((n) => typeof n === 'number');
  if (
    answer === null || typeof answer !== 'object' || typeof answer.content !== 'string' || !numbers ||
    typeof answer.id_slot !== 'number' || typeof answer.tokens_evaluated !== 'number' ||
    !Array.isArray(answer.tokens) || !answer.tokens.every((token) => Number.isInteger(token))
  ) {
    throw client.malformed('/completion', 'no content, tokens, id_slot, tokens_evaluated or timings');
  }
  return answer as Completion;
}

function parseUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`url must be an http(s) URL such as http://127.0.0.1:8080, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`url must be an http(s) URL, got ${JSON.stringify(value)}`);
  return url.href.replace(/\/+$/, '');
}
