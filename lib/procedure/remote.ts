/**
 * Chain-of-Spot against a llama-server the user already runs (any family):
 * the same two turns, prompts, box grammar and crop as {@link ChainOfSpot.load}'s local instance,
 * sent to llama-server's `/completion` endpoint as raw prompts with the prepared images (PNG,
 * lossless), turn two in the slot that served turn one so that its prompt cache holds turn one
 * between the turns.
 */
import { abortedError } from '../common/errors';
import type { RgbImage } from '../common/rgb-image';
import { booleanOption, integerOption, requiredString, signalOption } from '../common/validate';
import { encodePng, maxPixelsOption, type ImageInput } from '../image/image';
import { OperationQueue } from '../llama/operation-queue';
import { imageTokenLimits } from '../llama/projector';
import { askConfig, promptDefaults, type AskConfig } from './ask-config';
import { LLAVA_15 } from './families/llava';
import type { BoundFamily } from './family';
import { FAMILIES, familyOption } from './family-registry';
import { DEFAULT_TIMEOUT_MS, LlamaServerClient, measureImageSize, parseUrl, PATCH_SIZE } from './llama-server';
import { PreparedImages } from './prepared-images';
import { askBaseline, askChainOfSpot, type Conversation, type ProcedureHost, type TurnGeneration, type TurnImages } from './procedure';
import { partImage, renderPrompt, type ChainOfSpotPromptOptions, type Prompt } from './prompt';
import type { AskOptions, AskResult, BaselineOptions, BaselineResult, ChainOfSpotLike, FamilyName, OpenedImage, TurnResult } from './types';

/**
 * The chat-template families a llama-server runs here, with what their frames need that
 * llama-server does not report: Qwen-VL's patch size (14 and 16 pixels, merged 2 x 2: the frame
 * is mtmd's resize, computed here), Gemma 3's encoder side (896 in every released size, the
 * square mtmd fits an image into; `imageSize` overrides it). InternVL's frame is the image itself.
 */
const CHAT_FAMILIES: Readonly<Record<Exclude<FamilyName, 'llava-1.5'>, { patchSize: number; imageSize: number }>> = {
  'qwen2.5-vl': { patchSize: 14, imageSize: 0 },
  'qwen3-vl': { patchSize: 16, imageSize: 0 },
  internvl: { patchSize: 14, imageSize: 448 },
  gemma3: { patchSize: 14, imageSize: 896 },
};

/** Options of {@link ChainOfSpot.connect}. */
export interface ConnectOptions extends ChainOfSpotPromptOptions {
  /**
   * Where llama-server listens, e.g. `http://127.0.0.1:8080` (a path prefix, as behind a proxy, is
   * kept). The server must have loaded a model of `family` with its projector (`--mmproj`).
   */
  url: string;
  /**
   * The family of the server's model (default `llava-1.5`): llama-server does not tell its
   * projector's type. Every family runs remotely.
   */
  family?: FamilyName;
  /**
   * The most milliseconds llama-server may stay silent: until it starts answering a request, and
   * then between two pieces of its answer (every answer is streamed; llama-server pings every 30 s
   * while it works). From 1 to 300000, the default (Node's fetch waits no longer for a response or
   * its next bytes). A server silent for longer fails the call with ERR_REMOTE instead of hanging
   * it; one that keeps streaming takes as long as its answer does.
   */
  timeoutMs?: number;
  /** Sent as `Authorization: Bearer <apiKey>`, for a server started with `--api-key`. */
  apiKey?: string;
  /**
   * The projector's image side in pixels, for LLaVA-1.5 (default: measured from the server when
   * connecting, see {@link RemoteChainOfSpot.imageSize}; pass it to skip that request) and Gemma 3
   * (default 896, its encoder's side in every released size).
   */
  imageSize?: number;
  /**
   * For Qwen-VL: the `--image-min-tokens` the server was started with, if any (llama.cpp
   * recommends 1024 for Qwen-VL's grounding), so that boxes are read in the frame it resizes to.
   */
  imageMinTokens?: number;
  /** For Qwen-VL: the server's `--image-max-tokens`, if any. */
  imageMaxTokens?: number;
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
export type RemoteAskResult = AskResult<RemoteTurnResult>;

/** {@link BaselineResult} from a llama-server. */
export type RemoteBaselineResult = BaselineResult<RemoteTurnResult>;

/** What the conversations of one connection share. */
interface Server {
  readonly client: LlamaServerClient;
  readonly mediaMarker: string;
  /** Tokens of each distinct text before the image (BOS included), to tell whether an image's prefix was reused. */
  readonly prefixTokens: Map<string, number>;
  /** Images as llama-server takes them (base64 PNG), encoded once for as long as the image lives. */
  readonly pngs: WeakMap<RgbImage, Promise<string>>;
  /**
   * The BOS text a chat template writes first (Gemma 3's `<bos>`), where llama-server puts the BOS
   * token before every prompt itself: dropped, or the model would see two (as it does not locally).
   */
  readonly leadingBos: string | undefined;
}

/**
 * Chain-of-Spot on a llama-server: made by {@link ChainOfSpot.connect}, with the local instance's
 * {@link ChainOfSpot.ask}, {@link ChainOfSpot.baseline}, {@link ChainOfSpot.open} and
 * {@link ChainOfSpot.dispose}, and the same results.
 *
 * How it maps to llama-server (the `/completion` endpoint, streamed, greedy with
 * `samplers: ['temperature']` at 0, which breaks exact ties as the local instance does):
 * - turn one: the reference's prompt as a raw string with `/props`' media marker where the image
 *   goes, the prepared original (padded and resized here, bit-exact to Pillow) as PNG in
 *   `multimodal_data`, the box grammar in `grammar`, `cache_prompt: true`;
 * - turn two: turn one's prompt, the model's answer as it wrote it and the continuation, with
 *   both images, in the slot that served turn one (`id_slot`): its prompt cache serves everything
 *   up to the end of turn one's answer ({@link RemoteTurnResult.cachedTokens});
 * - a further question on the same image reuses the image's prefix from the same cache;
 * - for the other families (`family`), the prompts are the chat template's, from the server's
 *   `/props` (less a leading BOS text, since llama-server adds the BOS token), the image goes as
 *   it is, and the box is read in the family's frame: for Qwen-VL
 *   computed from mtmd's resize, within the server's token limits (`imageMinTokens`,
 *   `imageMaxTokens`: it reports neither them nor the grid it used).
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
 * - text that is not valid UTF-8 (a byte token alone, a character cut short by `maxTokens`) reads
 *   as U+FFFD, as locally; llama-server refuses such output in the stream, so that turn is asked
 *   again unstreamed (the same greedy answer, its prompt cached). Turn two's prompt then holds
 *   U+FFFD where the local instance holds the byte: no prompt string can hold it alone;
 * - timings: `promptMs` is llama-server's prompt time, image encoding included;
 *   `imageEncodeMs` and `imageDecodeMs` are 0; `promptTokens` are the tokens it evaluated (those
 *   its cache did not serve); `decodeSteps` equals `generatedTokens` (llama-server decodes every
 *   token on its own, grammar-forced ones too);
 *
 * Failures of the server (unreachable, an HTTP error, an answer that is not what llama-server
 * sends, silent for `timeoutMs`) reject with ERR_REMOTE; a prompt that does not fit the
 * server's context with ERR_CONTEXT_FULL.
 */
export class RemoteChainOfSpot implements ChainOfSpotLike {
  readonly #server: Server;
  readonly #family: BoundFamily;
  readonly #images: PreparedImages;
  readonly #defaults: ChainOfSpotPromptOptions;
  readonly #reference: boolean;
  readonly #queue: OperationQueue;
  /** Aborts the requests of the operation in flight (the caller's signal, or dispose). */
  #operation: AbortController | undefined;

  private constructor(server: Server, family: BoundFamily, maxPixels: number, defaults: ChainOfSpotPromptOptions, reference: boolean) {
    this.#server = server;
    this.#family = family;
    this.#images = new PreparedImages(family, maxPixels);
    this.#defaults = defaults;
    this.#reference = reference;
    this.#queue = new OperationQueue('this remote ChainOfSpot instance', () => this.#operation?.abort());
  }

  /** @internal Use {@link ChainOfSpot.connect}. */
  static async connect(options: ConnectOptions): Promise<RemoteChainOfSpot> {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with the url of a llama-server');
    const url = parseUrl(requiredString(options.url, 'url'));
    const timeoutMs = integerOption(options.timeoutMs, 'timeoutMs', 1, DEFAULT_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
    const apiKey = options.apiKey === undefined ? undefined : requiredString(options.apiKey, 'apiKey');
    const imageSize = options.imageSize === undefined ? undefined : integerOption(options.imageSize, 'imageSize', 1, 1 << 16, 0);
    const maxPixels = maxPixelsOption(options.maxPixels);
    const reference = booleanOption(options.reference, 'reference', false);
    const named = familyOption(options.family) ?? 'llava-1.5';
    const imageTokens = imageTokenLimits(options.imageMinTokens, options.imageMaxTokens);
    const defaults = promptDefaults(options);
    const signal = signalOption(options.signal);
    if (signal?.aborted) throw abortedError(signal.reason);

    const client = new LlamaServerClient(url, timeoutMs, apiKey);
    const operation = new AbortController();
    const onAbort = (): void => operation.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const props = await client.props(operation.signal);
      const { mediaMarker } = props;
      let family: BoundFamily;
      if (named === 'llava-1.5') {
        const size = imageSize ?? (await measureImageSize(client, mediaMarker, operation.signal));
        family = LLAVA_15.bind({ chatTemplate: null, tokens: props.tokens, imageSize: size, patchSize: PATCH_SIZE, tokensPerImage: (size / PATCH_SIZE) ** 2, imageTokens });
      } else {
        // These encoders choose their own resolution: no fixed image size, no fixed token count.
        // No fixed token count here: the server sizes its own context.
        const { patchSize, imageSize: side } = CHAT_FAMILIES[named];
        family = FAMILIES[named].bind({ chatTemplate: props.chatTemplate, tokens: props.tokens, imageSize: named === 'gemma3' ? (imageSize ?? side) : side, patchSize, tokensPerImage: 0, imageTokens });
      }
      // Only for a template that may write BOS itself; an empty prompt tokenizes to BOS alone where the server adds it.
      const { bos } = family.facts.tokens;
      const leadingBos = !family.bos && bos !== '' && (await client.countTokens('', true, operation.signal)) > 0 ? bos : undefined;
      return new RemoteChainOfSpot({ client, mediaMarker, prefixTokens: new Map(), pngs: new WeakMap(), leadingBos }, family, maxPixels, defaults, reference);
    } catch (error) {
      if (operation.signal.aborted && signal?.aborted) throw abortedError(signal.reason);
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The server's address, as given to {@link ChainOfSpot.connect}. */
  get url(): string {
    return this.#server.client.url;
  }

  /**
   * LLaVA-1.5's projector image side in pixels, which images are padded and resized to here. Unless
   * given to {@link ChainOfSpot.connect}, measured when connecting: llama-server's `/props` does
   * not tell it, so the tokens of a small image are counted, (side / 14)² for LLaVA-1.5's 14-pixel
   * patches (without evaluating it where the server can count them). For Gemma 3, 896 unless
   * given; for InternVL, its tile side (448: not used); 0 for Qwen-VL, whose encoders choose
   * their own resolution.
   */
  get imageSize(): number {
    return this.#family.facts.imageSize;
  }

  /** The family of the server's model, as given to {@link ChainOfSpot.connect}. */
  get family(): FamilyName {
    return this.#family.name;
  }

  /** As {@link ChainOfSpot.open}: the image is prepared here once, and sent with each question. */
  async open(image: ImageInput, options?: Pick<AskOptions, 'reference'>): Promise<OpenedImage> {
    this.#queue.assertAlive();
    return this.#images.open(image, options, this.#reference);
  }

  /** As {@link ChainOfSpot.ask}, on the server. Calls queue: one question runs at a time. */
  ask(image: ImageInput | OpenedImage, question: string, options?: AskOptions): Promise<RemoteAskResult> {
    return this.#run(this.#askConfig(question, options), (host, config) => askChainOfSpot(host, image, config));
  }

  /** As {@link ChainOfSpot.baseline}, on the server: one plain turn. */
  baseline(image: ImageInput | OpenedImage, question: string, options?: BaselineOptions): Promise<RemoteBaselineResult> {
    return this.#run(this.#askConfig(question, options), (host, config) => askBaseline(host, image, config));
  }

  /** Ends this connection: questions in flight reject with ERR_DISPOSED. The server goes on. */
  async dispose(): Promise<void> {
    await this.#queue.dispose(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** Runs one question in the queue, under its operation's signal (the caller's abort, or dispose). */
  #run<T>(config: AskConfig, work: (host: ProcedureHost<RemoteTurnResult>, config: AskConfig) => Promise<T>): Promise<T> {
    return this.#queue.run(async () => {
      const operation = new AbortController();
      this.#operation = operation;
      try {
        const host = { images: this.#images, converse: () => new ServerConversation(this.#server) };
        return await work(host, { ...config, signal: operation.signal });
      } finally {
        this.#operation = undefined;
      }
    }, config.signal);
  }

  #askConfig(question: string, options: AskOptions | undefined): AskConfig {
    return askConfig(question, options, this.#defaults, this.#reference, this.#family);
  }
}

/**
 * One question's conversation on the server: each turn sends the whole conversation so far (the
 * earlier prompts and answers as text, every image so far) to the slot that served the turn
 * before, whose prompt cache holds all of it up to that turn's answer.
 */
class ServerConversation implements Conversation<RemoteTurnResult> {
  readonly #server: Server;
  /** The conversation so far as llama-server's raw prompt, answers included. */
  #history = '';
  readonly #images: string[] = [];
  #slot: number | undefined;
  /** The first turn's prompt, and how many of its tokens the server's cache served. */
  #opening: { prompt: Prompt; cached: number } | undefined;

  constructor(server: Server) {
    this.#server = server;
  }

  async turn(prompt: Prompt, images: TurnImages, generation: TurnGeneration): Promise<RemoteTurnResult> {
    for (const part of prompt) {
      if (part.type === 'image') this.#images.push(await this.#png(partImage(images, part)));
    }
    const raw = this.#history === '' ? this.#withoutLeadingBos(this.#raw(prompt)) : this.#history + this.#raw(prompt);
    const answer = await this.#server.client.complete(
      { prompt: raw, images: this.#images, maxTokens: generation.maxTokens, grammar: generation.grammar, slot: this.#slot },
      generation.signal!,
      generation.onText,
    );
    this.#history = raw + answer.content;
    this.#slot = answer.id_slot;
    const { timings: t } = answer;
    // llama-server lists the end-of-generation token it sampled; the local instance does not keep it.
    const tokens = Int32Array.from(answer.stop_type === 'eos' ? answer.tokens.slice(0, -1) : answer.tokens);
    const turn: RemoteTurnResult = {
      prompt: renderPrompt(prompt),
      text: answer.content,
      tokens,
      promptTokens: t.prompt_n,
      cachedTokens: t.cache_n,
      images: [],
      generatedTokens: tokens.length,
      decodeSteps: tokens.length,
      finishReason: answer.truncated ? 'context' : answer.stop_type === 'eos' ? 'eos' : answer.stop_type === 'word' ? 'stop' : 'length',
      timings: { imageEncodeMs: 0, imageDecodeMs: 0, promptMs: t.prompt_ms, generateMs: t.predicted_ms },
    };
    this.#opening ??= { prompt, cached: t.cache_n };
    return turn;
  }

  /**
   * Whether the server's cache served the image of the opening prompt: more cached tokens than
   * the text before the image (llama-server reuses an image whole or not at all).
   */
  async prefixReused(signal: AbortSignal | undefined): Promise<boolean> {
    if (this.#opening === undefined || this.#opening.cached === 0) return false;
    const { prompt, cached } = this.#opening;
    const before = this.#withoutLeadingBos(this.#raw(prompt.slice(0, prompt.findIndex((part) => part.type === 'image'))));
    const { client, prefixTokens } = this.#server;
    let tokens = prefixTokens.get(before);
    if (tokens === undefined) {
      tokens = await client.countTokens(before, true, signal!);
      prefixTokens.set(before, tokens);
    }
    return cached > tokens;
  }

  /** A prompt as the raw string llama-server tokenizes: the media marker where an image goes. */
  /** The conversation's first text without the BOS text llama-server adds as a token itself. */
  #withoutLeadingBos(text: string): string {
    const bos = this.#server.leadingBos;
    return bos !== undefined && text.startsWith(bos) ? text.slice(bos.length) : text;
  }

  #raw(prompt: Prompt): string {
    return prompt.map((part) => (part.type === 'image' ? this.#server.mediaMarker : part.type === 'special' ? part.token : part.text)).join('');
  }

  #png(image: RgbImage): Promise<string> {
    const { pngs } = this.#server;
    let png = pngs.get(image);
    if (png === undefined) {
      png = encodePng(image).then((bytes) => bytes.toString('base64'));
      pngs.set(image, png);
    }
    return png;
  }
}
