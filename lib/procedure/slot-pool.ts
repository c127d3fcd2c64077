/**
 * The sequences questions run on when a ChainOfSpot decodes in parallel: a question takes a free
 * one (one it prefers, else the least recently used), or waits for one. A slot that comes back goes
 * to the longest waiter passed over as many times as there are slots, else to the longest waiter
 * that prefers it, else to the longest waiter that prefers no busy slot, else to the longest waiter.
 * So a question waits for the slot holding its image's prefix only while the slots that come back
 * serve others, and only for a bounded number of them; no slot stays free while a question waits.
 */
import { abortedError } from '../common/errors';

interface Waiter {
  readonly prefer: ((slot: number) => boolean) | undefined;
  /** Slots that came back and went to a later waiter while this one waited for the one it prefers. */
  passes: number;
  resolve(slot: number): void;
  reject(error: unknown): void;
}

export class SlotPool {
  readonly #slots: readonly number[];
  readonly #free: number[];
  readonly #waiters: Waiter[] = [];
  #closed: (() => unknown) | undefined;

  constructor(slots: number[]) {
    this.#slots = [...slots];
    this.#free = [...slots];
  }

  /**
   * A free slot, once there is one: the first free one `prefer` accepts, else the one free the
   * longest. Rejects with ERR_ABORTED when `signal` aborts first. `prefer` is asked again, about
   * the slot that comes back, while the call waits.
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
        prefer,
        passes: 0,
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

  /** Gives a slot back: to a waiting question (see above), else it is the most recently freed. */
  release(slot: number): void {
    const index = this.#waiterFor(slot);
    if (index < 0) {
      this.#free.push(slot);
      return;
    }
    const [waiter] = this.#waiters.splice(index, 1);
    // Those who waited longer for a slot they prefer were passed over.
    for (const earlier of this.#waiters.slice(0, index)) earlier.passes++;
    waiter!.resolve(slot);
  }

  /** Rejects every waiting and later acquire with `error()`. */
  close(error: () => unknown): void {
    this.#closed = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error());
  }

  /** The index of the waiter that gets `slot` as it comes back, or -1 when none waits. */
  #waiterFor(slot: number): number {
    const first = (test: (waiter: Waiter) => boolean): number => this.#waiters.findIndex(test);
    const overdue = first((waiter) => waiter.passes >= this.#slots.length);
    if (overdue >= 0) return overdue;
    const wants = first((waiter) => waiter.prefer?.(slot) === true);
    if (wants >= 0) return wants;
    // The other slots are all busy (none is free while someone waits): does it wait for one of them?
    const waitsForNone = first((waiter) => !this.#slots.some((other) => other !== slot && waiter.prefer?.(other) === true));
    if (waitsForNone >= 0) return waitsForNone;
    return this.#waiters.length > 0 ? 0 : -1;
  }
}
