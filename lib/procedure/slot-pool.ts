/**
 * The sequences questions run on when a ChainOfSpot decodes in parallel: a question takes a free
 * one (one it prefers, else the least recently used), or waits for one in arrival order.
 */
import { abortedError } from '../common/errors';

interface Waiter {
  resolve(slot: number): void;
  reject(error: unknown): void;
}

export class SlotPool {
  readonly #free: number[];
  readonly #waiters: Waiter[] = [];
  #closed: (() => unknown) | undefined;

  constructor(slots: number[]) {
    this.#free = [...slots];
  }

  /**
   * A free slot, once there is one: the first free one `prefer` accepts, else the one free the
   * longest. Rejects with ERR_ABORTED when `signal` aborts first.
   */
  acquire(signal?: AbortSignal, prefer?: (slot: number) => boolean): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closed());
    if (signal?.aborted) return Promise.reject(abortedError(signal.reason));
    const preferred = prefer === undefined ? -1 : this.#free.findIndex(prefer);
    const [slot] = this.#free.splice(Math.max(0, preferred), 1);
    if (slot !== undefined) return Promise.resolve(slot);
    return new Promise<number>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(abortedError(signal?.reason));
      };
      const waiter: Waiter = {
        resolve: (slot) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(slot);
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Gives a slot back: the longest waiting question gets it, else it is the most recently freed. */
  release(slot: number): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(slot);
    else this.#free.push(slot);
  }

  /** Rejects every waiting and later acquire with `error()`. */
  close(error: () => unknown): void {
    this.#closed = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error());
  }
}
