/**
 * Parallel decoding over one session, as llama-server's continuous batching does it over its slots:
 * questions on different sequences hand their text evaluations and generations to the Batcher, and
 * each step puts every waiting sequence's next work (a prompt chunk, or the next token of a
 * generation with the tokens the grammar forces after it) into one llama.cpp batch, one
 * llama_decode (Session.step). llama.cpp computes that in one pass when the sequences share the
 * cache (unifiedCache); with a part of the cache per sequence, in one pass per run of consecutive
 * sequences that bring as many tokens each (see native/session_step.cpp). Work that arrives while
 * a step runs joins the next one. Images are not batched: their encoding is compute-bound either
 * way, and they go through the session's queue between steps, like the other operations on a
 * sequence (truncate).
 * @internal
 */
import { abortedError } from '../common/errors';
import { functionOption, optionsObject, signalOption } from '../common/validate';
import type { RgbImage } from '../common/rgb-image';
import type { NativeGenerateOptions, NativeStepItem, NativeStepResult } from '../native/addon';
import type { Model } from './model';
import type { Projector } from './projector';
import { Session, type EvaluateResult, type GenerateOptions, type GenerateResult, type ImageEvaluation, type SequenceOptions } from './session';

interface Request {
  readonly sequence: number;
  /** Where the sequence was when the request came: a cancel goes back there. */
  readonly startPosition: number;
  readonly startTime: number;
  /** Evaluation: the tokens not yet in the cache. */
  tokens?: Int32Array;
  readonly evaluatedTokens: number;
  /** Generation: the options, until its first step starts it. */
  options?: NativeGenerateOptions | undefined;
  readonly onText?: ((text: string) => void) | undefined;
  /**
   * Set when the request must stop (aborted, its onText threw, or a step failed it): the next step
   * puts its sequence back where the request found it (cancel), then it rejects with this.
   */
  cancelled?: unknown;
  /** Batches that held tokens of this request (its llama_decode calls). */
  decodeCalls: number;
  settle(error: unknown, value?: EvaluateResult | GenerateResult): void;
}

/** @internal */
export class Batcher {
  readonly #session: Session;
  readonly #waiting: Request[] = [];
  #running = false;

  constructor(session: Session) {
    this.#session = session;
  }

  /** One sequence of the session, with the surface of a whole session, its text work batched. */
  sequence(index: number): BatchedSequence {
    return new BatchedSequence(this, this.#session, index);
  }

  /** Evaluates tokens at the end of a sequence in the coming steps (resolves with logits ready). */
  evaluate(sequence: number, tokens: Int32Array, signal: AbortSignal | undefined): Promise<EvaluateResult> {
    return this.#submit(sequence, signal, { tokens: tokens.slice(), evaluatedTokens: tokens.length });
  }

  /** Generates on a sequence, one token (and the forced ones) per step. */
  generate(sequence: number, options: GenerateOptions | undefined): Promise<GenerateResult> {
    const opts = optionsObject(options);
    const onText = functionOption<(text: string) => void>(opts.onText, 'onText');
    return this.#submit(sequence, signalOption(opts.signal), { options: Session.generateOptions(opts), onText, evaluatedTokens: 0 });
  }

  #submit<T extends EvaluateResult | GenerateResult>(
    sequence: number,
    signal: AbortSignal | undefined,
    work: Pick<Request, 'tokens' | 'options' | 'onText' | 'evaluatedTokens'>,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortedError(signal.reason));
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        request.cancelled ??= abortedError(signal?.reason);
        this.#session.interruptStep();
      };
      const request: Request = {
        ...work,
        sequence,
        startPosition: this.#session.position(sequence),
        startTime: performance.now(),
        decodeCalls: 0,
        settle: (error, value) => {
          signal?.removeEventListener('abort', onAbort);
          this.#waiting.splice(this.#waiting.indexOf(request), 1);
          if (error === undefined) resolve(value as T);
          else reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(request);
      if (this.#running) this.#session.interruptStep(); // join the running generations soon
      else void this.#run();
    });
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#waiting.length > 0) {
        const requests = this.#waiting.slice();
        const items = requests.map((request) => this.#item(request));
        let results: NativeStepResult[];
        try {
          results = await this.#session.step(items);
        } catch (error) {
          // The whole step failed (the session was disposed, say): so does every request in it.
          for (const request of requests) request.settle(error);
          continue;
        }
        requests.forEach((request, i) => this.#apply(request, items[i]!, results[i]!));
      }
    } finally {
      this.#running = false;
    }
  }

  #item(request: Request): NativeStepItem {
    const sequence = request.sequence;
    if (request.cancelled !== undefined) return { sequence, cancel: request.startPosition };
    if (request.tokens !== undefined) return { sequence, tokens: request.tokens };
    const item = { sequence, generate: request.options ?? (true as const) };
    request.options = undefined;
    return item;
  }

  #apply(request: Request, item: NativeStepItem, result: NativeStepResult): void {
    if ('cancel' in item) return request.settle(request.cancelled); // the sequence is back where the request found it
    if ('error' in result) {
      request.cancelled ??= result.error; // it rejects with this once the next step has put its sequence back
      return;
    }
    request.decodeCalls += result.decodes;
    // Stopped while this step ran (an abort, from a timer or another request's onText): the next
    // step cancels it. Work this step finished is done, as a Session call's that the abort came too late for.
    if (!result.done && request.cancelled !== undefined) return;
    const ms = performance.now() - request.startTime;
    if (request.tokens !== undefined) {
      request.tokens = request.tokens.subarray(result.evaluated);
      if (result.done) request.settle(undefined, { position: result.position, tokens: request.evaluatedTokens, decodeCalls: request.decodeCalls, ms });
      return;
    }
    try {
      if (result.text !== '') request.onText?.(result.text);
    } catch (error) {
      // As Session.generate: the call rejects with what onText threw, a generation still running stopped.
      if (result.done) return request.settle(error);
      request.cancelled ??= error;
      return;
    }
    if (result.done && result.result) request.settle(undefined, { ...result.result, decodeCalls: request.decodeCalls, ms });
  }
}

/**
 * One sequence of a session under a Batcher: evaluate and generate as on a Session, batched with
 * the other sequences; the rest goes through the session's queue on this sequence.
 * @internal
 */
export class BatchedSequence {
  constructor(
    private readonly batcher: Batcher,
    private readonly session: Session,
    readonly index: number,
  ) {}

  get model(): Model {
    return this.session.model;
  }

  evaluate(tokens: Int32Array, options?: Pick<SequenceOptions, 'signal'>): Promise<EvaluateResult> {
    return this.batcher.evaluate(this.index, tokens, options?.signal);
  }

  evaluateImage(projector: Projector, image: RgbImage<Uint8Array>, options?: Pick<SequenceOptions, 'signal'>): Promise<ImageEvaluation> {
    return this.session.evaluateImage(projector, image, { sequence: this.index, signal: options?.signal });
  }

  generate(options?: Omit<GenerateOptions, 'sequence'>): Promise<GenerateResult> {
    return this.batcher.generate(this.index, options);
  }

  position(): number {
    return this.session.position(this.index);
  }

  truncate(position: number): Promise<void> {
    return this.session.truncate(position, this.index);
  }
}
