/**
 * Runs the native operations of one object (a model, a projector, a session) one at a time, in
 * call order: a second call waits for the first instead of failing. Wires an AbortSignal to the
 * native abort for as long as its own operation runs, and settles every queued call with
 * ERR_DISPOSED once the object is disposed.
 */
import { abortedError, callerStack, disposedError, rethrowWithCallerStack } from '../common/errors';

export class OperationQueue {
  #tail: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #disposal: Promise<void> | undefined;
  readonly #onDisposed: (() => void)[] = [];

  /**
   * @param what how errors name the object ("the session")
   * @param abortNative stops the native operation in flight, if any
   */
  constructor(
    private readonly what: string,
    private readonly abortNative: () => void,
  ) {}

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Throws ERR_DISPOSED at once when disposed (for synchronous methods). */
  assertAlive(): void {
    if (this.#disposed) throw disposedError(this.what);
  }

  /** Queues `work`; it starts when every earlier operation has settled. */
  run<T>(work: () => Promise<T> | T, signal?: AbortSignal): Promise<T> {
    const stack = callerStack();
    const task = this.#tail.then(async () => {
      if (this.#disposed) throw disposedError(this.what);
      if (signal?.aborted) throw abortedError(signal.reason);
      const onAbort = (): void => this.abortNative();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return await work();
      } catch (error) {
        // An operation stopped by dispose() reports that, not a plain abort.
        if (this.#disposed && (error as { code?: string }).code === 'ERR_ABORTED') throw disposedError(this.what);
        if ((error as { code?: string }).code === 'ERR_ABORTED' && signal?.aborted) throw abortedError(signal.reason);
        throw error;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    });
    this.#tail = task.catch(() => undefined);
    return task.catch((error: unknown) => rethrowWithCallerStack(error, stack));
  }

  /**
   * Marks the object disposed, stops the operation in flight, runs `disposeNative` (on the first
   * call only) and resolves once it and every queued operation have settled. Safe to call more
   * than once.
   */
  async dispose(disposeNative: () => Promise<void> | void): Promise<void> {
    if (this.#disposal === undefined) {
      this.#disposed = true;
      this.abortNative();
      this.#disposal = (async () => disposeNative())();
    }
    await this.#disposal;
    await this.#tail;
    for (const listener of this.#onDisposed.splice(0)) listener();
  }

  /** Runs `listener` once the object is disposed (a model forgets a session it no longer owns). */
  onDisposed(listener: () => void): void {
    this.#onDisposed.push(listener);
  }
}
