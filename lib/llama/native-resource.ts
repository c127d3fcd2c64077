/**
 * The lifecycle a model, a projector and a session share: one native object, created once (load,
 * create) and used through an OperationQueue, freed by dispose(). A creation that fails, or that
 * the object is disposed (or its signal aborted) during, frees what it produced. Objects made from
 * another one (a model's sessions and projectors) are adopted by it the moment they are
 * constructed, before their creation starts, so disposing the parent disposes them even while they
 * are still being created.
 * @internal
 */
import { abortedError } from '../common/errors';
import { OperationQueue } from './operation-queue';

/** What every native object has. @internal */
export interface NativeObject {
  dispose(): void;
}

/** @internal */
export abstract class NativeResource<N extends NativeObject> {
  /** The object's operations, one at a time. @internal */
  protected readonly queue: OperationQueue;
  readonly #native: N;
  readonly #dependents = new Set<NativeResource<NativeObject>>();

  /**
   * @param what how errors name the object ("the session")
   * @param abortNative stops the native operation in flight, if any
   * @param parent the object this one is made from: it disposes this one with itself
   */
  protected constructor(native: N, what: string, abortNative: () => void, parent?: NativeResource<NativeObject>) {
    this.#native = native;
    this.queue = new OperationQueue(what, abortNative);
    if (parent !== undefined) {
      parent.#dependents.add(this);
      this.queue.onDisposed(() => parent.#dependents.delete(this));
    }
  }

  /** The native object, for the classes of this package. @internal */
  get native(): N {
    this.queue.assertAlive();
    return this.#native;
  }

  /**
   * Runs the native creation as the object's first operation. When it fails, or the object is
   * disposed or `signal` aborts meanwhile, the object is disposed (freeing whatever the creation
   * produced) and the call rejects.
   * @internal
   */
  protected async create(work: () => Promise<void>, signal?: AbortSignal): Promise<void> {
    try {
      await this.queue.run(work, signal);
      if (signal?.aborted) throw abortedError(signal.reason);
    } catch (error) {
      await this.dispose();
      throw error;
    }
  }

  /**
   * Disposes the objects made from this one, then frees the native object. From the first call on,
   * every call on the object rejects with ERR_DISPOSED; each call resolves once all is freed.
   */
  dispose(): Promise<void> {
    return this.queue.dispose(async () => {
      const dependents = [...this.#dependents];
      this.#dependents.clear();
      await Promise.all(dependents.map((dependent) => dependent.dispose()));
      this.#native.dispose();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
