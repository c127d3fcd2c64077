/** What the benchmark's processes tell each other: bench/run.ts, bench/worker.ts and the C++ floor. */

/** One operation on a session, as the JS workers log it and the floor replays and reports it. */
export interface Step {
  op: 'clear' | 'truncate' | 'tokens' | 'image' | 'generate';
  /** The turn of the question it belongs to (a turn ends with its generation). */
  turn: number;
  /** Wall time of the call. */
  ms: number;
  /** Text tokens evaluated, image tokens, or tokens generated. */
  tokens?: number;
  /** llama_decode calls. */
  decodes?: number;
  /** For images: milliseconds in the image encoder, and evaluating its tokens in the text model. */
  encodeMs?: number;
  decodeMs?: number;
  /** For generations: the sequence's length at the end of the turn (the token still pending included). */
  position?: number;
}

/** One measured question (or one replay of it by the floor). */
export interface Measured {
  steps: Step[];
  /** Our image pipeline: decoding, padding and resizing the image, cropping the region. */
  preprocessMs: number;
  totalMs: number;
  /** The process's peak resident set so far (it only grows). */
  peakRssKb: number;
}

/**
 * A step of the plan the floor replays; images are raw RGB files the worker wrote. A generation
 * keeps the position A's sequence had after it, which the floor's replay must reach too.
 */
export type PlanStep =
  | { op: 'clear' }
  | { op: 'truncate'; turn: number; position: number }
  | { op: 'tokens'; turn: number; ids: number[] }
  | { op: 'image'; turn: number; path: string; width: number; height: number }
  | { op: 'generate'; turn: number; n: number; position: number };

/** The JS variants, each in its own worker process ('further' shares the 'ask' worker: it goes on from its image). */
export type JsVariant = 'ask' | 'further' | 'recompute' | 'plain';

export interface WorkerInit {
  type: 'init';
  model: string;
  mmproj: string;
  threads: number;
  image: string;
  question: string;
  furtherQuestions: string[];
  answerTokens: number;
  /** Where the 'ask' worker writes the floor's plan (its first run is recorded). */
  planDir: string;
}

export interface WorkerRun {
  type: 'run';
  variant: JsVariant;
}

export type ToWorker = WorkerInit | WorkerRun;

export type FromWorker =
  | { type: 'ready'; loadMs: number; contextSize: number; batchSize: number; gpuOffload: boolean }
  | { type: 'result'; variant: JsVariant; runs: Measured[]; answers: string[]; plan?: PlanStep[] }
  | { type: 'error'; message: string };
