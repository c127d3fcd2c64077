/**
 * Chain-of-Spot with the model's layers on ggml RPC servers, run in a child process: llama.cpp's
 * RPC client aborts its process when a server is lost (ggml-rpc.cpp's RPC_STATUS_ASSERT), so the
 * model lives in a child (isolated-child.ts) that hosts an ordinary local {@link ChainOfSpot}, and
 * this process only talks to it over IPC (advanced serialization: Buffers and typed arrays pass).
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';

import { abortedError, callerStack, ChainOfSpotError, disposedError, isErrorCode, rethrowWithCallerStack } from '../common/errors';
import { booleanOption, functionOption, optionsObject, rpcServersOption, signalOption } from '../common/validate';
import { isSharp, loadImageWithOrientation, maxPixelsOption, type ImageInput, type RawImageInput } from '../image/image';
import { imageTokenLimits } from '../llama/projector';
import { backend } from '../native/loader';
import { askConfig, promptDefaults } from './ask-config';
import type { BoundFamily, FamilyFacts } from './family';
import { FAMILIES, familyOption } from './family-registry';
import type { AskOptions, AskResult, BaselineOptions, BaselineResult, ChainOfSpotLike, ChainOfSpotOptions, FamilyName, OpenedImage } from './types';
import type { ChainOfSpotPromptOptions } from './prompt';

/** Options of {@link ChainOfSpot.load} with RPC servers. */
export interface RpcChainOfSpotOptions extends Omit<ChainOfSpotOptions, 'rpcServers'> {
  /**
   * ggml RPC servers (`npx chain-of-spot rpc-server` on each machine), as `'host:port'` (an IPv4
   * address or a host name): the text model's layers are split among them (by their free memory,
   * llama.cpp's own split) and this machine's GPUs; the projector runs here. Each must be
   * reachable when loading (ERR_REMOTE within 10 seconds otherwise). The protocol has no
   * authentication or encryption: see the README's "Serving".
   */
  rpcServers: string[];
}

/** @internal An image as it crosses to the child: an input that clones, or a handle from {@link IsolatedChainOfSpot.open}. */
export type ImageRef = { input: string | Uint8Array | RawImageInput } | { opened: number };

/** Options that cross to the child: everything but callbacks and signals, which stay here. */
type Plain<T> = Omit<T, 'onText' | 'onProgress' | 'signal'>;

/** @internal What this process asks of the child; each request is answered by one `done` with its id. */
export type Request =
  | { type: 'load'; options: Plain<RpcChainOfSpotOptions> }
  | { type: 'ask' | 'baseline'; image: ImageRef; question: string; options: Plain<AskOptions> }
  | { type: 'open'; image: ImageRef; options: Pick<AskOptions, 'reference'> }
  | { type: 'dispose' };

/** @internal What the child answers a load with: the family it found, and what it was bound with. */
export interface LoadedFamily {
  name: FamilyName;
  facts: FamilyFacts;
}

/** @internal A message to the child. */
export type ToChild = (Request & { id: number; stream: boolean }) | { type: 'abort'; id: number } | { type: 'release'; handle: number };

/** @internal A message from the child: a streamed callback's arguments, or a request's outcome. */
export type FromChild = { type: 'stream'; id: number; args: unknown[] } | { type: 'done'; id: number; value?: unknown; error?: WireError };

/** @internal An error as it crosses the process boundary. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
}

/** @internal An error for the wire: its class (argument errors stay TypeError / RangeError), code and message. */
export function toWire(error: unknown): WireError {
  const e = error instanceof Error ? error : new Error(String(error));
  const code = (e as { code?: unknown }).code;
  return { name: e instanceof TypeError ? 'TypeError' : e instanceof RangeError ? 'RangeError' : e.name, message: e.message, ...(typeof code === 'string' ? { code } : {}) };
}

function fromWire(wire: WireError): Error {
  if (wire.name === 'TypeError') return new TypeError(wire.message);
  if (wire.name === 'RangeError') return new RangeError(wire.message);
  return new ChainOfSpotError(isErrorCode(wire.code) ? wire.code : 'ERR_NATIVE', wire.message);
}

const CHILD_SCRIPT = path.join(__dirname, 'isolated-child.js');
/** How long a disposed child may take to free its model before it is killed. */
const DISPOSE_TIMEOUT_MS = 30_000;
/** How much of the child's stderr is kept, to say why it died. */
const STDERR_TAIL = 8192;
const WHAT = 'this ChainOfSpot instance';

interface Call {
  resolve(value: unknown): void;
  reject(error: Error): void;
  callback: ((...args: never[]) => void) | undefined;
  /** What the callback threw: the call rejects with it. */
  callbackError?: unknown;
  signal: AbortSignal | undefined;
  cleanup(): void;
}

/**
 * Chain-of-Spot on ggml RPC servers: made by {@link ChainOfSpot.load} with `rpcServers`, with the
 * local instance's {@link ChainOfSpot.ask}, {@link ChainOfSpot.baseline},
 * {@link ChainOfSpot.open} and {@link ChainOfSpot.dispose}, and the same results.
 *
 * The model runs in a child Node process (llama.cpp's RPC client aborts its process when a
 * server is lost): when it dies, the question in flight and every later call reject with
 * ERR_REMOTE, and this process goes on; dispose it and load again. Images cross to the child as
 * they are (paths, bytes, raw pixels); a sharp instance is decoded here first. `onText` and
 * `signal` work as locally. The child's llama.cpp log shows on stderr with `CHAIN_OF_SPOT_DEBUG=1`.
 * The lower-level `model`, `projector` and `session` stay in the child.
 */
export class IsolatedChainOfSpot implements ChainOfSpotLike {
  readonly #child: ChildProcess;
  readonly #rpcServers: readonly string[];
  readonly #defaults: ChainOfSpotPromptOptions;
  readonly #reference: boolean;
  readonly #maxPixels: number;
  /** The family the child found, bound here to check questions as the child will. */
  #family: BoundFamily | undefined;
  readonly #calls = new Map<number, Call>();
  readonly #exited: Promise<void>;
  readonly #opened = new WeakMap<OpenedImage, number>();
  /** Tells the child to forget an opened image this process can no longer use. */
  readonly #release = new FinalizationRegistry<number>((handle) => this.#send({ type: 'release', handle }));
  #nextId = 0;
  #stderr = '';
  /** Why the child is gone, once it is. */
  #failure: ChainOfSpotError | undefined;
  #disposal: Promise<void> | undefined;

  private constructor(child: ChildProcess, rpcServers: string[], defaults: ChainOfSpotPromptOptions, reference: boolean, maxPixels: number) {
    this.#child = child;
    this.#rpcServers = Object.freeze(rpcServers);
    this.#defaults = defaults;
    this.#reference = reference;
    this.#maxPixels = maxPixels;
    const debug = !['', '0', undefined].includes(process.env.CHAIN_OF_SPOT_DEBUG);
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-STDERR_TAIL);
      if (debug) process.stderr.write(chunk);
    });
    child.on('message', (message: FromChild) => this.#receive(message));
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit(signal ?? `exit code ${code}`);
        resolve();
      });
      child.once('error', (error) => {
        this.#exit(error.message);
        resolve();
      });
    });
    this.#idle();
  }

  /** @internal Use {@link ChainOfSpot.load} with `rpcServers`. */
  static async load(options: RpcChainOfSpotOptions): Promise<IsolatedChainOfSpot> {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with model and mmproj paths');
    const rpcServers = rpcServersOption(options.rpcServers) as string[];
    const onProgress = functionOption<(progress: number) => void>(options.onProgress, 'onProgress');
    const signal = signalOption(options.signal);
    const maxPixels = maxPixelsOption(options.maxPixels);
    const defaults = promptDefaults(options);
    const reference = booleanOption(options.reference, 'reference', false);
    // The child checks these too; here they fail before a process starts.
    familyOption(options.family);
    imageTokenLimits(options.imageMinTokens, options.imageMaxTokens);
    if (signal?.aborted) throw abortedError(signal.reason);
    const stack = callerStack();
    const { onProgress: _progress, signal: _signal, ...plain } = options;
    // The child loads the binary this process chose (setBinaryPath, setBackend included).
    const child = fork(CHILD_SCRIPT, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, CHAIN_OF_SPOT_BINARY: backend().path, GGML_NO_BACKTRACE: '1' },
    });
    const instance = new IsolatedChainOfSpot(child, rpcServers, defaults, reference, maxPixels);
    // Loading stops by ending the child: it may be inside llama.cpp's connect.
    const onAbort = (): void => {
      child.kill('SIGKILL');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const loaded = (await instance.#call({ type: 'load', options: { ...plain, rpcServers } }, onProgress, undefined)) as LoadedFamily;
      instance.#family = FAMILIES[loaded.name].bind(loaded.facts);
      return instance;
    } catch (error) {
      await instance.dispose();
      return rethrowWithCallerStack(signal?.aborted ? abortedError(signal.reason) : error, stack);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** As {@link ChainOfSpot.family}. */
  get family(): FamilyName {
    return this.#family!.name;
  }

  /** The RPC servers the layers are on, as given. */
  get rpcServers(): readonly string[] {
    return this.#rpcServers;
  }

  /** As {@link ChainOfSpot.open}, in the child. */
  async open(image: ImageInput, options?: Pick<AskOptions, 'reference'>): Promise<OpenedImage> {
    const reference = booleanOption(optionsObject(options).reference, 'reference', this.#reference);
    const stack = callerStack();
    try {
      const ref = await this.#imageRef(image);
      const { handle, width, height } = (await this.#call({ type: 'open', image: ref, options: { reference } }, undefined, undefined)) as { handle: number } & OpenedImage;
      const opened: OpenedImage = Object.freeze({ width, height });
      this.#opened.set(opened, handle);
      this.#release.register(opened, handle);
      return opened;
    } catch (error) {
      return rethrowWithCallerStack(error, stack, 'ERR_IMAGE');
    }
  }

  /** As {@link ChainOfSpot.ask}, in the child: questions queue, or run together with `parallel`, as locally. */
  ask(image: ImageInput | OpenedImage, question: string, options?: AskOptions): Promise<AskResult> {
    return this.#question('ask', image, question, options) as Promise<AskResult>;
  }

  /** As {@link ChainOfSpot.baseline}, in the child: one plain turn. */
  baseline(image: ImageInput | OpenedImage, question: string, options?: BaselineOptions): Promise<BaselineResult> {
    return this.#question('baseline', image, question, options) as Promise<BaselineResult>;
  }

  /**
   * Frees the model and ends the child (killed when it takes more than 30 seconds). Questions in
   * flight reject with ERR_DISPOSED. Resolves also when the child has died.
   */
  dispose(): Promise<void> {
    this.#disposal ??= (async () => {
      if (this.#failure === undefined) {
        const timer = setTimeout(() => this.#child.kill('SIGKILL'), DISPOSE_TIMEOUT_MS);
        this.#call({ type: 'dispose' }, undefined, undefined).catch(() => undefined);
        await this.#exited;
        clearTimeout(timer);
      }
    })();
    return this.#disposal;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  async #question(type: 'ask' | 'baseline', image: ImageInput | OpenedImage, question: string, options: AskOptions | undefined): Promise<unknown> {
    // Argument mistakes throw here, before anything crosses.
    const config = askConfig(question, options, this.#defaults, this.#reference, this.#family!);
    const { onText, signal: _signal, ...plain } = optionsObject(options);
    const stack = callerStack();
    try {
      const ref = await this.#imageRef(image);
      return await this.#call({ type, image: ref, question, options: plain }, onText, config.signal);
    } catch (error) {
      return rethrowWithCallerStack(error, stack);
    }
  }

  /**
   * How the child gets an image: a handle it opened, the input itself, or a sharp pipeline's
   * pixels as stored with their EXIF orientation, so that the child turns them as it would have
   * turned the pipeline (in either mode, now or when asked again in the other).
   */
  async #imageRef(image: ImageInput | OpenedImage): Promise<ImageRef> {
    const handle = this.#opened.get(image as OpenedImage);
    if (handle !== undefined) return { opened: handle };
    if (typeof image !== 'object' || image === null || !isSharp(image)) return { input: image as string | Uint8Array | RawImageInput };
    const { image: stored, orientation } = await loadImageWithOrientation(image, { maxPixels: this.#maxPixels, applyOrientation: false });
    return { input: { ...stored, channels: 3, orientation } };
  }

  /** Sends a request and resolves with the child's answer; `callback` gets what the child streams. */
  #call(request: Request, callback: Call['callback'], signal: AbortSignal | undefined): Promise<unknown> {
    if (this.#disposal !== undefined && request.type !== 'dispose') return Promise.reject(disposedError(WHAT));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      const onAbort = (): void => this.#send({ type: 'abort', id });
      this.#calls.set(id, { resolve, reject, callback, signal, cleanup: () => signal?.removeEventListener('abort', onAbort) });
      this.#busy();
      try {
        this.#send({ ...request, id, stream: callback !== undefined });
      } catch (error) {
        this.#settle(id, this.#calls.get(id) as Call);
        reject(new TypeError(`an option cannot be sent to the model's process: ${(error as Error).message}`));
        return;
      }
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #receive(message: FromChild): void {
    const call = this.#calls.get(message.id);
    if (call === undefined) return;
    if (message.type === 'stream') {
      if (call.callbackError !== undefined) return;
      try {
        call.callback?.(...(message.args as never[]));
      } catch (error) {
        // As locally: the call stops and rejects with what the callback threw.
        call.callbackError = error;
        this.#send({ type: 'abort', id: message.id });
      }
      return;
    }
    this.#settle(message.id, call);
    if (call.callbackError !== undefined) call.reject(call.callbackError as Error);
    else if (message.error === undefined) call.resolve(message.value);
    else if (message.error.code === 'ERR_ABORTED' && call.signal?.aborted) call.reject(abortedError(call.signal.reason));
    else call.reject(fromWire(message.error));
  }

  #settle(id: number, call: Call): void {
    call.cleanup();
    this.#calls.delete(id);
    // A disposal keeps this process alive until the child has exited.
    if (this.#calls.size === 0 && this.#disposal === undefined) this.#idle();
  }

  /** The child is gone: every call in flight and every later one fails. */
  #exit(how: string): void {
    if (this.#failure !== undefined) return;
    const detail = /[\w.-]+\.(?:c|cpp|h):\d+: (.+)$/m.exec(this.#stderr.split('\n').filter(Boolean).reverse().join('\n'))?.[1]?.trim();
    this.#failure = this.#disposal !== undefined
      ? disposedError(WHAT)
      : new ChainOfSpotError(
          'ERR_REMOTE',
          `the process that ran the model on the RPC servers ${this.#rpcServers.join(', ')} ended (${how})${detail ? `: ${detail}` : ''}. ` +
            'A server stopped, could not be reached or the network failed: dispose this instance, check the servers (chain-of-spot rpc-server) and load again',
        );
    for (const [id, call] of this.#calls) {
      this.#settle(id, call);
      call.reject(this.#failure);
    }
  }

  #send(message: ToChild): void {
    // A closed channel is not an error here: the exit handler fails the calls.
    if (this.#child.connected) this.#child.send(message, () => undefined);
  }

  /** The child keeps this process alive only while a call waits on it, as native work would. */
  #busy(): void {
    this.#child.ref();
    (this.#child.channel as { ref?(): void } | undefined)?.ref?.();
  }

  #idle(): void {
    this.#child.unref();
    (this.#child.channel as { unref?(): void } | undefined)?.unref?.();
  }
}
