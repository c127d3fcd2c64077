/**
 * The HTTP side of {@link RemoteChainOfSpot}: a client of llama-server's endpoints (`/props`,
 * `/completion` streamed, `/tokenize`, the token counting of `/v1/chat/completions/input_tokens`),
 * each request bounded by how long the server may stay silent and each failure a
 * ChainOfSpotError, and the measurement of the projector's image size. It knows nothing of the
 * procedure: the remote conversation (remote.ts) says what to send.
 */
import { abortedError, ChainOfSpotError } from '../common/errors';
import { encodePng } from '../image/image';

/** LLaVA-1.5's CLIP ViT-L/14 patch: one image is (imageSize / 14)² tokens. */
export const PATCH_SIZE = 14;
/**
 * The most milliseconds a server may stay silent (until it answers, and between the pieces of a
 * streamed answer), and the default: Node's fetch waits no longer for a response or its next bytes.
 */
export const DEFAULT_TIMEOUT_MS = 300_000;

/**
 * A `chat_parser` (llama-server's request field, a serialized PEG parser) that accepts any output.
 * llama-server runs its chat parser on `/completion` output too (plain content by default), and
 * that parser refuses text that is not valid UTF-8 (a byte token alone, a character cut short by
 * `n_predict`) with HTTP 500; this one matches nothing and so never fails, and `/completion`'s
 * `content` and `tokens` are the generated ones whatever it makes of them. A server that does not
 * know the field ignores it.
 */
const ANY_OUTPUT_PARSER = JSON.stringify({ parsers: [{ type: 'epsilon' }], rules: {}, root: 0 });
/** The message of that refusal (the format's name varies with the model's chat template). */
const REFUSED_OUTPUT = /produced output that does not match the expected .* format/;

/** What `/props` holds that we read. */
interface Props {
  media_marker?: unknown;
  modalities?: { vision?: unknown };
  chat_template?: unknown;
  bos_token?: unknown;
  eos_token?: unknown;
}

/** What a server told of itself: how its prompts mark an image, and its model's conversation. */
export interface ServerProps {
  readonly mediaMarker: string;
  /** The chat template it renders chats with (the model's, or llama-server's default). */
  readonly chatTemplate: string | null;
  /** The texts of its vocabulary's BOS and EOS tokens. */
  readonly tokens: { readonly bos: string; readonly eos: string };
}

/** The fields of a `/completion` answer that we read. */
export interface Completion {
  content: string;
  tokens: number[];
  id_slot: number;
  tokens_evaluated: number;
  stop_type: string;
  truncated: boolean;
  timings: { cache_n: number; prompt_n: number; prompt_ms: number; predicted_n: number; predicted_ms: number };
}

/** One greedy completion: a raw prompt with its images (base64 PNG, in the order of the media markers). */
export interface CompletionRequest {
  prompt: string;
  images: string[];
  maxTokens: number;
  grammar?: string | undefined;
  /** The slot to run in (the one that served the conversation so far, for its prompt cache). */
  slot?: number | undefined;
}

/** A llama-server: one request at a time, each bounded by the timeout, each error a ChainOfSpotError. */
export class LlamaServerClient {
  constructor(
    readonly url: string,
    readonly timeoutMs: number,
    readonly apiKey: string | undefined,
  ) {}

  /** What `/props` tells, after checking that the server takes images. */
  async props(signal: AbortSignal): Promise<ServerProps> {
    const props = (await this.request('GET', '/props', undefined, signal)) as Props;
    if (props === null || typeof props !== 'object') throw this.malformed('/props', 'not an object');
    if (props.modalities?.vision !== true) {
      throw new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} takes no images: start it with the model's projector (--mmproj)`);
    }
    if (typeof props.media_marker !== 'string' || props.media_marker === '') throw this.malformed('/props', 'no media_marker');
    const text = (value: unknown): string => (typeof value === 'string' ? value : '');
    return {
      mediaMarker: props.media_marker,
      chatTemplate: typeof props.chat_template === 'string' && props.chat_template !== '' ? props.chat_template : null,
      tokens: { bos: text(props.bos_token), eos: text(props.eos_token) },
    };
  }

  /**
   * One greedy `/completion` with the prompt cached for the next request, streamed (to `onText`
   * when given) so that only the server's silences are bounded, never the length of the answer.
   *
   * llama-server streams a token only once the text ends in a whole UTF-8 character, and then
   * lists only that last token: the ids of byte tokens it held back are not in the stream, nor
   * whatever a limit cut off inside a character, and where its output is not valid UTF-8 it ends
   * the stream with an error instead of the totals. When any of that happened, the same
   * completion is asked again unstreamed (greedy, so the same answer; its prompt is in the cache
   * now) with a chat parser that accepts any output, which answers all the text, invalid bytes as
   * U+FFFD (as the local instance shows them), and all the tokens. `onText` gets what the stream
   * did not give.
   */
  async complete(request: CompletionRequest, signal: AbortSignal, onText: ((text: string) => void) | undefined): Promise<Completion> {
    const body = {
      prompt: { prompt_string: request.prompt, multimodal_data: request.images },
      n_predict: request.maxTokens,
      ...(request.grammar === undefined ? {} : { grammar: request.grammar }),
      ...(request.slot === undefined ? {} : { id_slot: request.slot }),
      cache_prompt: true,
      return_tokens: true,
      stream: true,
      // The prompt's timings in every piece, for when the stream ends without its totals.
      timings_per_token: true,
      // Greedy as the local instance: the temperature sampler alone, at 0, keeps the first best
      // token in id order (the default chain's top-k sorts first, which breaks exact ties otherwise).
      samplers: ['temperature'],
      temperature: 0,
    };
    let content = '';
    const tokens: unknown[] = [];
    let generated = 0;
    let promptTimings: Record<string, unknown> | undefined;
    let last: Record<string, unknown> | undefined;
    try {
      last = (await this.request('POST', '/completion', body, signal, (event) => {
        if (typeof event.content !== 'string' || !Array.isArray(event.tokens)) throw this.malformed('/completion', 'an event without content or tokens');
        content += event.content;
        tokens.push(...(event.tokens as unknown[]));
        if (typeof event.tokens_predicted === 'number') generated = event.tokens_predicted;
        if (event.timings !== null && typeof event.timings === 'object') promptTimings = event.timings as Record<string, unknown>;
        if (event.content !== '') onText?.(event.content);
      })) as Record<string, unknown>;
    } catch (error) {
      if (!(error instanceof ChainOfSpotError && REFUSED_OUTPUT.test(error.message))) throw error;
    }
    if (last !== undefined) {
      // A server that answered unstreamed (a proxy, an older llama-server) sent it all at once.
      const rest = typeof last.content === 'string' ? last.content : '';
      if (rest !== '') onText?.(rest);
      const answer = checkCompletion(this, { ...last, content: content + rest, tokens: [...tokens, ...(Array.isArray(last.tokens) ? last.tokens : [])] });
      const total = typeof last.tokens_predicted === 'number' ? last.tokens_predicted : generated;
      if (answer.tokens.length >= total) return answer;
    }
    const whole = checkCompletion(this, await this.request('POST', '/completion', {
      ...body,
      ...(typeof last?.id_slot === 'number' ? { id_slot: last.id_slot } : {}),
      stream: false,
      timings_per_token: false,
      chat_parser: ANY_OUTPUT_PARSER,
    }, signal));
    if (whole.content.startsWith(content) && whole.content.length > content.length) onText?.(whole.content.slice(content.length));
    // The prompt was evaluated (or taken from the cache) by the streamed request: its timings.
    const { cache_n, prompt_n, prompt_ms } = promptTimings ?? {};
    const prompt = [cache_n, prompt_n, prompt_ms].every((n) => typeof n === 'number') ? { cache_n, prompt_n, prompt_ms } : {};
    return checkCompletion(this, { ...whole, timings: { ...whole.timings, ...prompt } });
  }

  /** How many tokens the server makes of a text (BOS included, special tokens parsed). */
  async countTokens(content: string, addSpecial: boolean, signal: AbortSignal): Promise<number> {
    const answer = (await this.request('POST', '/tokenize', { content, add_special: addSpecial, parse_special: true }, signal)) as { tokens?: unknown };
    if (!Array.isArray(answer?.tokens)) throw this.malformed('/tokenize', 'no tokens');
    return answer.tokens.length;
  }

  /**
   * One request and its JSON answer (with `onEvent`, streamed: see {@link #events}). `signal` (an
   * operation's: the caller's abort, or dispose) rejects with ERR_ABORTED; a server silent for
   * `timeoutMs` (before it answers, or between two pieces of a stream) and everything else that
   * goes wrong with ERR_REMOTE (ERR_CONTEXT_FULL for llama-server's context error).
   */
  async request(method: 'GET' | 'POST', path: string, body: object | undefined, signal: AbortSignal, onEvent?: (event: Record<string, unknown>) => void): Promise<unknown> {
    if (signal.aborted) throw abortedError(signal.reason);
    // Aborted when the server has sent nothing for timeoutMs; every piece it sends restarts the clock.
    const silence = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let answering = false;
    const heard = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => silence.abort(), this.timeoutMs);
    };
    // Ends a stream whose onEvent threw.
    const own = new AbortController();
    const both = AbortSignal.any([signal, silence.signal, own.signal]);
    const headers: Record<string, string> = { accept: onEvent === undefined ? 'application/json' : 'text/event-stream, application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    const failed = (error: unknown, during: string): ChainOfSpotError => {
      if (signal.aborted) return abortedError(signal.reason);
      const undiciCode = (error as { cause?: { code?: unknown } }).cause?.code;
      if (silence.signal.aborted || undiciCode === 'UND_ERR_HEADERS_TIMEOUT' || undiciCode === 'UND_ERR_BODY_TIMEOUT') {
        const what = answering ? `went silent for ${this.timeoutMs} ms while answering ${path}` : `did not answer ${path} within ${this.timeoutMs} ms`;
        return new ChainOfSpotError('ERR_REMOTE', `llama-server at ${this.url} ${what} (timeoutMs)`, { cause: error });
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

    heard();
    try {
      let response: Response;
      try {
        response = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: both });
      } catch (error) {
        throw failed(error, 'connect');
      }
      answering = true;
      heard();
      // A server that answers a stream request unstreamed (a proxy, an error) is read as JSON.
      if (onEvent !== undefined && response.ok && response.body && /^text\/event-stream/i.test(response.headers.get('content-type') ?? '')) {
        try {
          return await this.#events(path, response.body, onEvent, own, heard);
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
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A streamed answer (server-sent events, `data: {json}` each): every event before the last to
   * `onEvent`, the last (`stop: true`) returned. An event with an `error` rejects as an HTTP error.
   * `heard` is told of every chunk (llama-server's pings, comments, included).
   */
  async #events(path: string, body: ReadableStream<Uint8Array>, onEvent: (event: Record<string, unknown>) => void, own: AbortController, heard: () => void): Promise<unknown> {
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      heard();
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
export async function measureImageSize(client: LlamaServerClient, mediaMarker: string, signal: AbortSignal): Promise<number> {
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
    const text = (await client.countTokens('', true, signal)) + (await client.countTokens('\n', false, signal));
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

function checkCompletion(client: LlamaServerClient, value: unknown): Completion {
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

export function parseUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`url must be an http(s) URL such as http://127.0.0.1:8080, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`url must be an http(s) URL, got ${JSON.stringify(value)}`);
  return url.href.replace(/\/+$/, '');
}
