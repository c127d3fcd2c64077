/**
 * How the local instance runs a conversation's turns: on a lane, a sequence of the session's KV
 * cache that keeps the prefix (system prompt and image) of the last image it answered about. One
 * question at a time runs on the session itself; with `parallel`, each question takes a free lane
 * (the one holding its image's prefix, else the least recently used) under a Batcher that puts
 * the lanes' work into shared decode steps.
 */
import { callerStack, disposedError, rethrowWithCallerStack } from '../common/errors';
import { Batcher } from '../llama/batcher';
import { OperationQueue } from '../llama/operation-queue';
import type { Projector } from '../llama/projector';
import type { GenerateOptions, GenerateResult, Session } from '../llama/session';
import { evaluatePrompt, type PromptEvaluation, type PromptTarget } from './evaluate-prompt';
import type { ImageView } from './prepared-images';
import type { Conversation, TurnGeneration, TurnImages } from './procedure';
import { renderPrompt, type Prompt } from './prompt';
import { SlotPool } from './slot-pool';
import type { TurnImage, TurnResult } from './types';

/** Where a question's tokens go: a whole session (sequence 0), or one sequence under a Batcher. */
type QuestionTarget = PromptTarget & {
  generate(options: Omit<GenerateOptions, 'sequence'>): Promise<GenerateResult>;
  position(): number;
  truncate(position: number): Promise<void>;
};

/** A sequence questions run on, one at a time, and the image prefix its cache holds (with how the model saw its image). */
interface Lane {
  readonly target: QuestionTarget;
  prefix: { key: string; position: number; images: TurnImage[] } | undefined;
}

/** A prompt's image prefix: its parts up to and including its first image. */
interface ImagePrefix {
  /** How many parts. */
  readonly length: number;
  /** What names it in a lane's cache: the image as the model sees it, and those parts. */
  readonly key: string;
}

/** Gives a conversation its lane, for its image's prefix. */
type TakeLane = (prefix: ImagePrefix, signal: AbortSignal | undefined) => Promise<Lane>;

function imagePrefix(view: ImageView, prompt: Prompt): ImagePrefix {
  const length = prompt.findIndex((part) => part.type === 'image') + 1;
  return { length, key: `${view.key}\u0000${renderPrompt(prompt.slice(0, length))}` };
}

/** The lanes of one session, and the queue that runs one question at a time when there is one lane. */
export class Lanes {
  readonly #projector: Projector;
  readonly #bos: boolean;
  readonly #what: string;
  readonly #queue: OperationQueue;
  readonly #lanes: Lane[];
  /** Parallel decoding: the free lanes (the Batcher is in their targets). */
  readonly #slots: SlotPool | undefined;

  /** @param bos whether a conversation starts with the vocabulary's BOS token (the family's chat template writes it otherwise) */
  constructor(session: Session, projector: Projector, bos: boolean, parallel: number, what: string) {
    this.#projector = projector;
    this.#bos = bos;
    this.#what = what;
    this.#queue = new OperationQueue(what, () => undefined);
    if (parallel > 1) {
      const batcher = new Batcher(session);
      const sequences = Array.from({ length: parallel }, (_, i) => i);
      this.#lanes = sequences.map((i) => ({ target: batcher.sequence(i), prefix: undefined }));
      this.#slots = new SlotPool(sequences);
    } else {
      this.#lanes = [{ target: session, prefix: undefined }];
    }
  }

  assertAlive(): void {
    this.#queue.assertAlive();
  }

  /**
   * Runs one question: alone on the session (the queue), or, in parallel, on a lane taken when its
   * first turn opens (waiting for one when all are taken) and given back when it ends.
   */
  run<T>(signal: AbortSignal | undefined, work: (converse: (view: ImageView) => Conversation) => Promise<T>): Promise<T> {
    const slots = this.#slots;
    if (!slots) {
      const lane = this.#lanes[0]!;
      return this.#queue.run(() => work((view) => new LaneConversation(this.#projector, this.#bos, view, async () => lane)), signal);
    }
    const taken: number[] = [];
    const take: TakeLane = async (prefix, s) => {
      const slot = await slots.acquire(s, (i) => this.#lanes[i]!.prefix?.key === prefix.key);
      taken.push(slot);
      return this.#lanes[slot]!;
    };
    const stack = callerStack();
    return (async () => {
      this.#queue.assertAlive();
      try {
        return await work((view) => new LaneConversation(this.#projector, this.#bos, view, take));
      } finally {
        for (const slot of taken) slots.release(slot);
      }
    })().catch((error: unknown) => rethrowWithCallerStack(error, stack));
  }

  /** Questions in flight and waiting reject with ERR_DISPOSED (disposing the session stops the one running). */
  dispose(): Promise<void> {
    const settled = this.#queue.dispose(() => undefined);
    this.#slots?.close(() => disposedError(this.#what));
    return settled;
  }
}

/** One question's conversation on a lane: its first turn takes the lane and opens there. */
class LaneConversation implements Conversation {
  readonly #projector: Projector;
  readonly #bos: boolean;
  readonly #view: ImageView;
  readonly #take: TakeLane;
  #target: QuestionTarget | undefined;
  #prefixReused = false;

  constructor(projector: Projector, bos: boolean, view: ImageView, take: TakeLane) {
    this.#projector = projector;
    this.#bos = bos;
    this.#view = view;
    this.#take = take;
  }

  async turn(prompt: Prompt, images: TurnImages, generation: TurnGeneration): Promise<TurnResult> {
    const { signal } = generation;
    let evaluation: PromptEvaluation;
    if (this.#target === undefined) {
      const prefix = imagePrefix(this.#view, prompt);
      const lane = await this.#take(prefix, signal);
      this.#target = lane.target;
      evaluation = await this.#open(lane, prompt, images, prefix, signal);
    } else {
      evaluation = await evaluatePrompt(this.#target, this.#projector, prompt, images, { bos: false, signal });
    }
    const generated = await this.#target.generate({ maxTokens: generation.maxTokens, grammar: generation.grammar, signal, onText: generation.onText });
    return {
      prompt: renderPrompt(prompt),
      text: generated.text,
      tokens: generated.tokens,
      promptTokens: evaluation.tokens,
      images: evaluation.images,
      generatedTokens: generated.tokens.length,
      decodeSteps: generated.decodeCalls,
      finishReason: generated.finishReason,
      timings: {
        imageEncodeMs: evaluation.imageEncodeMs,
        imageDecodeMs: evaluation.imageDecodeMs,
        promptMs: evaluation.textMs,
        generateMs: generated.ms,
      },
    };
  }

  async prefixReused(): Promise<boolean> {
    return this.#prefixReused;
  }

  /**
   * Evaluates the opening prompt on the lane, reusing the image prefix its cache holds when it is
   * this one; otherwise the lane starts anew, and keeps this prefix for the next question.
   */
  async #open(lane: Lane, prompt: Prompt, images: TurnImages, prefix: ImagePrefix, signal: AbortSignal | undefined): Promise<PromptEvaluation> {
    const { target } = lane;
    const rest = prompt.slice(prefix.length);
    if (lane.prefix?.key === prefix.key && target.position() >= lane.prefix.position) {
      await target.truncate(lane.prefix.position);
      this.#prefixReused = true;
      const tail = await evaluatePrompt(target, this.#projector, rest, images, { bos: false, signal });
      return { ...tail, images: [...lane.prefix.images, ...tail.images] };
    }
    lane.prefix = undefined;
    await target.truncate(0);
    const head = await evaluatePrompt(target, this.#projector, prompt.slice(0, prefix.length), images, { bos: this.#bos, signal });
    lane.prefix = { key: prefix.key, position: target.position(), images: head.images };
    const tail = await evaluatePrompt(target, this.#projector, rest, images, { bos: false, signal });
    return {
      tokens: head.tokens + tail.tokens,
      textMs: head.textMs + tail.textMs,
      imageEncodeMs: head.imageEncodeMs + tail.imageEncodeMs,
      imageDecodeMs: head.imageDecodeMs + tail.imageDecodeMs,
      images: [...head.images, ...tail.images],
    };
  }
}
