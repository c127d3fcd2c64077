/**
 * The resumable evaluation runner behind `chain-of-spot eval`: the data file, the plan (what is
 * done, what is left), the run that appends predictions line by line, and the summary. Each
 * prediction is scored by ./score (VQA accuracy).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile, truncate } from 'node:fs/promises';
import path from 'node:path';

import type { RegionOfInterest } from '../procedure/types';
import { ChainOfSpotError } from '../common/errors';
import { boxIou, type Box } from '../image/geometry';
import { scoreAnswer, type AnswerScore } from './score';

// --- data ----------------------------------------------------------------------------------------

/** One question of an evaluation file. */
export interface EvalItem {
  /** Its position among the file's questions, from 0 (blank lines do not count): the key when there is no id. */
  readonly index: number;
  readonly id?: string | number;
  /** The image's path, resolved against the data file's folder. */
  readonly image: string;
  readonly question: string;
  /** The human answers; without them the item is answered but not scored. */
  readonly answers?: readonly string[];
  /** The true region, `[left, top, right, bottom]` as fractions of the padded square; with it, turn one's box is scored. */
  readonly box?: Box;
}

/**
 * Parses the lines of an evaluation file: one JSON object per line,
 * `{"image": path, "question": text, "answers": [text, ...], "id": string or number}` with
 * `answers` and `id` optional; blank lines are skipped. Relative image paths resolve against `baseDir`.
 *
 * @param source the file's name, for messages.
 * @throws ChainOfSpotError `ERR_EVAL_DATA` naming the first bad line.
 */
export function parseEvalData(text: string, baseDir: string, source: string): EvalItem[] {
  const items: EvalItem[] = [];
  const ids = new Set<string | number>();
  text.split('\n').forEach((raw, lineIndex) => {
    const line = raw.trim();
    if (line === '') return;
    const fail = (problem: string): ChainOfSpotError =>
      new ChainOfSpotError('ERR_EVAL_DATA', `${source} line ${lineIndex + 1}: ${problem}; each line must be {"image": path, "question": text, "answers": [text, ...]}`);
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw fail('not valid JSON');
    }
    const problem = recordProblem(value);
    if (problem !== undefined) throw fail(problem);
    const { image, question, answers, id, box } = value as DataRecord;
    if (id !== undefined) {
      if (ids.has(id)) throw fail(`the id ${JSON.stringify(id)} is used twice (ids must be unique, to match predictions to questions)`);
      ids.add(id);
    }
    items.push({
      index: items.length,
      ...(id === undefined ? {} : { id }),
      image: path.resolve(baseDir, image),
      question,
      ...(answers === undefined ? {} : { answers }),
      ...(box === undefined ? {} : { box: { left: box[0], top: box[1], right: box[2], bottom: box[3] } }),
    });
  });
  if (items.length === 0) throw new ChainOfSpotError('ERR_EVAL_DATA', `${source} holds no questions; add lines like {"image": "cat.jpg", "question": "What is this?", "answers": ["cat"]}`);
  return items;
}

/** One line of an evaluation file, as written. */
interface DataRecord {
  image: string;
  question: string;
  answers?: string[];
  id?: string | number;
  box?: [number, number, number, number];
}

/** What is wrong with a parsed line, or undefined when it is a {@link DataRecord}. */
function recordProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const { image, question, answers, id, box } = value as Record<string, unknown>;
  if (typeof image !== 'string' || image === '') return '"image" must be a non-empty string';
  if (typeof question !== 'string' || question.trim() === '') return '"question" must be a non-empty string';
  if (answers !== undefined && (!Array.isArray(answers) || answers.length === 0 || !answers.every((answer) => typeof answer === 'string'))) {
    return '"answers" must be a non-empty array of strings';
  }
  if (id !== undefined && typeof id !== 'string' && typeof id !== 'number') return '"id" must be a string or a number';
  if (box !== undefined && !(Array.isArray(box) && box.length === 4 && box.every((value) => typeof value === 'number' && Number.isFinite(value)))) {
    return '"box" must be [left, top, right, bottom], four numbers';
  }
  return undefined;
}

/** Reads an evaluation file (see {@link parseEvalData}). */
export async function readEvalData(file: string): Promise<EvalItem[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ChainOfSpotError('ERR_EVAL_DATA', `cannot read the data file ${file}: ${(error as Error).message}; check the path`, { cause: error });
  }
  return parseEvalData(text, path.dirname(path.resolve(file)), file);
}

// --- predictions ---------------------------------------------------------------------------------

/** How the questions are answered: the two Chain-of-Spot turns, or one plain LLaVA turn. */
export type EvalMode = 'chain-of-spot' | 'baseline';

/** One line of the predictions file. */
export interface Prediction {
  index: number;
  id?: string | number;
  mode: EvalMode;
  question: string;
  /** The model's answer; null when the item failed. */
  answer: string | null;
  /** The region turn two zoomed into; null for the baseline and for a failed item. */
  region: RegionOfInterest | null;
  timings: { totalMs: number } | null;
  /** Null when the item has no human answers. A failed item scores 0. */
  score: AnswerScore | null;
  /** The region's intersection over union with the item's true box; only when both exist. */
  iou?: number;
  /** Why the item failed (an unreadable image, a question too long for the context). */
  error?: { code: string; message: string };
}

/** What the answering function gives the runner for one item. */
export interface EvalAnswer {
  answer: string;
  region: RegionOfInterest | null;
  timings: { totalMs: number };
}

/** Answers one item; rejects with ERR_ABORTED when `signal` fires. */
export type Answerer = (item: EvalItem, signal: AbortSignal) => Promise<EvalAnswer>;

/** Failures of one item that should not stop the others: its image, or its length. */
const ITEM_ERRORS = new Set(['ERR_IMAGE', 'ERR_CONTEXT_FULL']);

/** Which item a prediction is for: its id, or else its index. */
export function itemKey(item: { index: number; id?: string | number | undefined }): string {
  return item.id === undefined ? `index:${item.index}` : `id:${JSON.stringify(item.id)}`;
}

/** Options of {@link planEval}. */
export interface PlanOptions {
  items: readonly EvalItem[];
  mode: EvalMode;
  /** Only the first `limit` items. */
  limit?: number;
  /** The predictions file (JSONL). Without it nothing is written and nothing can be resumed. */
  out?: string;
  /** Keep the predictions already in `out` and plan only the items they miss. */
  resume?: boolean;
}

/** What {@link planEval} found: what is done and what is left. */
export interface EvalPlan {
  readonly mode: EvalMode;
  readonly out: string | undefined;
  /** How many items the run covers: all of them, or the first `limit`. */
  readonly total: number;
  /**
   * The predictions already in `out` for the items this run covers, in the file's order. Lines for
   * other items (beyond `limit`, or not in the data) stay in the file but are left out here, so a
   * resumed run reports on the same items as a run of the same `limit` without `resume`.
   */
  readonly done: readonly Prediction[];
  /** How many lines of `out` are for items this run does not cover (kept in the file, not in {@link EvalPlan.done}). */
  readonly elsewhere: number;
  /** The items still to answer, in data order. */
  readonly todo: readonly EvalItem[];
}

/**
 * Decides what an evaluation run has to do, before any model is loaded. With `resume`, the
 * predictions already in `out` are kept and their items skipped (matched by id, or else by
 * index); a last line cut short by a crash is removed from the file and its item done again.
 * The run covers the first `limit` items (or all), whether answered now or before (see
 * {@link EvalPlan.done}).
 *
 * @throws ChainOfSpotError `ERR_EVAL_OUTPUT` when `out` already holds predictions and `resume` is not
 *   set, or when its lines are not predictions of the same mode.
 */
export async function planEval(options: PlanOptions): Promise<EvalPlan> {
  const { mode, out } = options;
  const items = options.limit === undefined ? options.items : options.items.slice(0, options.limit);
  const written = out === undefined ? [] : await readPredictions(out, mode, options.resume === true);
  const covered = new Set(items.map(itemKey));
  const done = written.filter((prediction) => covered.has(itemKey(prediction)));
  const finished = new Set(done.map(itemKey));
  return { mode, out, total: items.length, done, elsewhere: written.length - done.length, todo: items.filter((item) => !finished.has(itemKey(item))) };
}

async function readPredictions(file: string, mode: EvalMode, resume: boolean): Promise<Prediction[]> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ChainOfSpotError('ERR_EVAL_OUTPUT', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  if (bytes.length === 0) return [];
  if (!resume) {
    throw new ChainOfSpotError('ERR_EVAL_OUTPUT', `${file} already holds predictions: pass --resume to continue that run, or choose another --out`);
  }
  // Every line is written whole, ending in a newline; anything after the last newline is a line
  // cut short by a crash. Drop it, so its item is done again and the file stays valid JSONL.
  const complete = bytes.lastIndexOf(0x0a) + 1;
  if (complete < bytes.length) await truncate(file, complete);
  const lines = bytes.subarray(0, complete).toString('utf8').split('\n').slice(0, -1);
  return lines.map((line, lineIndex) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      value = undefined;
    }
    const prediction = value as Prediction | undefined;
    if (typeof prediction !== 'object' || prediction === null || typeof prediction.index !== 'number' || typeof prediction.mode !== 'string') {
      throw new ChainOfSpotError('ERR_EVAL_OUTPUT', `${file} line ${lineIndex + 1} is not a prediction of chain-of-spot eval; fix or remove it, or choose another --out`);
    }
    if (prediction.mode !== mode) {
      const flag = prediction.mode === 'baseline' ? 'add --baseline' : 'drop --baseline';
      throw new ChainOfSpotError('ERR_EVAL_OUTPUT', `${file} holds ${prediction.mode} predictions, and this run is ${mode}: ${flag} to resume it, or choose another --out`);
    }
    return prediction;
  });
}

/** Options of {@link runEval}. */
export interface RunOptions {
  /** Stops the run: the item in flight is abandoned (it is done again on resume), nothing finished is lost. */
  signal?: AbortSignal;
  /** Called after each item, with its prediction (already written). */
  onPrediction?: (prediction: Prediction, item: EvalItem) => void;
  /**
   * Items answered at once (default 1), for an answerer that runs questions together
   * (`ChainOfSpot.load({ parallel })`). Predictions are written as they finish, so not always in
   * the data's order; resume finds them by id or index all the same.
   */
  concurrency?: number;
}

/** What {@link runEval} did. */
export interface EvalRun {
  /** The predictions of every item the plan covers: those it found in the file, then this run's. */
  predictions: Prediction[];
  /** Items answered by this run. */
  answered: number;
  /** Whether the signal stopped the run before the plan was done. */
  interrupted: boolean;
}

/**
 * Answers the plan's items one by one (or `concurrency` at a time), appending each prediction to
 * the plan's file as one line as soon as it is known (written whole before the next, so a crash or
 * Ctrl-C loses no finished item). An item whose image cannot be read or whose question does not fit
 * the context is recorded as failed (score 0) and the run goes on; any other failure stops it, a
 * line that cannot be written (`ERR_EVAL_OUTPUT`) included.
 */
export async function runEval(plan: EvalPlan, answer: Answerer, options: RunOptions = {}): Promise<EvalRun> {
  const signal = options.signal ?? new AbortController().signal;
  const predictions = [...plan.done];
  let fd: number | undefined;
  if (plan.out !== undefined) {
    try {
      fd = openSync(plan.out, 'a');
    } catch (error) {
      throw new ChainOfSpotError('ERR_EVAL_OUTPUT', `cannot write ${plan.out}: ${(error as Error).message}; check the folder exists and is writable`, { cause: error });
    }
  }
  let answered = 0;
  let next = 0;
  let fatal: { error: unknown } | undefined;
  // Each lane takes the next item until none is left, the run is stopped or another lane failed.
  const lane = async (): Promise<void> => {
    while (next < plan.todo.length && !signal.aborted && fatal === undefined) {
      const item = plan.todo[next++]!;
      let prediction: Prediction;
      try {
        prediction = predictionOf(item, plan.mode, await answer(item, signal));
      } catch (error) {
        if (signal.aborted && error instanceof ChainOfSpotError && error.code === 'ERR_ABORTED') return;
        if (!(error instanceof ChainOfSpotError && ITEM_ERRORS.has(error.code))) {
          fatal ??= { error };
          return;
        }
        prediction = failedPrediction(item, plan.mode, error);
      }
      if (fd !== undefined) {
        try {
          writeAll(fd, Buffer.from(`${JSON.stringify(prediction)}\n`));
        } catch (error) {
          // A line cut short here is what --resume drops, as after a crash.
          fatal ??= { error: new ChainOfSpotError('ERR_EVAL_OUTPUT', `cannot write ${plan.out}: ${(error as Error).message}; make room (disk space, file size limit) and run again with --resume`, { cause: error }) };
          return;
        }
      }
      predictions.push(prediction);
      answered++;
      options.onPrediction?.(prediction, item);
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency ?? 1 }, lane));
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (fatal !== undefined) throw fatal.error;
  return { predictions, answered, interrupted: answered < plan.todo.length };
}

/** A write of part of `buffer` at the file's end, returning how many bytes it wrote (`fs.writeSync`). */
export type WriteFunction = (fd: number, buffer: Uint8Array, offset: number, length: number) => number;

/**
 * Writes all of `bytes`: a write may take only part of them (a file size limit or a full disk
 * reached mid-line, a pipe), and the rest goes in further writes until it is all written or one fails.
 *
 * @throws the write's error (EFBIG, ENOSPC, ...), or an Error when a write takes nothing.
 */
export function writeAll(fd: number, bytes: Uint8Array, write: WriteFunction = writeSync): void {
  for (let offset = 0; offset < bytes.length; ) {
    const written = write(fd, bytes, offset, bytes.length - offset);
    if (written <= 0) throw new Error(`a write took none of the ${bytes.length - offset} bytes left`);
    offset += written;
  }
}

function predictionOf(item: EvalItem, mode: EvalMode, result: EvalAnswer): Prediction {
  return {
    ...identity(item, mode),
    answer: result.answer,
    region: result.region,
    timings: { totalMs: Math.round(result.timings.totalMs * 10) / 10 },
    score: item.answers ? scoreAnswer(result.answer, item.answers) : null,
    ...(item.box && result.region ? { iou: Math.round(boxIou(result.region.box, item.box) * 1e4) / 1e4 } : {}),
  };
}

function failedPrediction(item: EvalItem, mode: EvalMode, error: ChainOfSpotError): Prediction {
  return {
    ...identity(item, mode),
    answer: null,
    region: null,
    timings: null,
    score: item.answers ? { vqa: 0, vqaAveraged: 0, exact: false } : null,
    error: { code: error.code, message: error.message },
  };
}

function identity(item: EvalItem, mode: EvalMode): Pick<Prediction, 'index' | 'id' | 'mode' | 'question'> {
  return item.id === undefined ? { index: item.index, mode, question: item.question } : { index: item.index, id: item.id, mode, question: item.question };
}

// --- summary -------------------------------------------------------------------------------------

/** Totals over predictions. Accuracies are fractions from 0 to 1, over the scored predictions. */
export interface EvalSummary {
  predictions: number;
  /** Predictions with human answers. */
  scored: number;
  failed: number;
  vqa: number;
  vqaAveraged: number;
  exact: number;
  /** Mean time per answered item, in milliseconds. */
  meanMs: number;
  /** Predictions whose region was scored against a true box. */
  boxes: number;
  /** The fraction of those whose IoU reached {@link IOU_THRESHOLD}. */
  boxHits: number;
  meanIou: number;
}

/** The IoU at which a region counts as having found the true one. */
export const IOU_THRESHOLD = 0.5;

/** Sums up predictions (see {@link EvalSummary}); means of nothing are 0. */
export function summarize(predictions: readonly Prediction[]): EvalSummary {
  const scores = predictions.flatMap((prediction) => (prediction.score ? [prediction.score] : []));
  const times = predictions.flatMap((prediction) => (prediction.timings ? [prediction.timings.totalMs] : []));
  const ious = predictions.flatMap((prediction) => (prediction.iou === undefined ? [] : [prediction.iou]));
  const mean = (values: number[]): number => (values.length === 0 ? 0 : values.reduce((sum, value) => sum + value, 0) / values.length);
  return {
    predictions: predictions.length,
    scored: scores.length,
    failed: predictions.filter((prediction) => prediction.error !== undefined).length,
    vqa: mean(scores.map((score) => score.vqa)),
    vqaAveraged: mean(scores.map((score) => score.vqaAveraged)),
    exact: mean(scores.map((score) => (score.exact ? 1 : 0))),
    meanMs: mean(times),
    boxes: ious.length,
    boxHits: mean(ious.map((iou) => (iou >= IOU_THRESHOLD ? 1 : 0))),
    meanIou: mean(ious),
  };
}
