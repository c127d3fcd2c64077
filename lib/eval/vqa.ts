/**
 * VQA scoring and the resumable evaluation runner behind `chain-of-spot eval`.
 *
 * Scoring follows the official VQA evaluation (GT-Vision-Lab/VQA, `vqaEval.py`): answers are
 * normalised (punctuation, number words, articles, contractions) and a prediction earns
 * `min(#humans who gave it / 3, 1)`.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile, truncate } from 'node:fs/promises';
import path from 'node:path';

import type { RegionOfInterest } from '../procedure/types';
import { ChainOfSpotError } from '../common/errors';
import { boxIou, type Box } from '../image/geometry';

// --- scoring -------------------------------------------------------------------------------------

/** vqaEval.py's contractions table: a word written without its apostrophes gets them back. */
const CONTRACTIONS = new Map<string, string>(Object.entries({
  aint: "ain't", arent: "aren't", cant: "can't", couldve: "could've", couldnt: "couldn't",
  "couldn'tve": "couldn't've", "couldnt've": "couldn't've", didnt: "didn't", doesnt: "doesn't", dont: "don't", hadnt: "hadn't",
  "hadnt've": "hadn't've", "hadn'tve": "hadn't've", hasnt: "hasn't", havent: "haven't", hed: "he'd", "hed've": "he'd've",
  "he'dve": "he'd've", hes: "he's", howd: "how'd", howll: "how'll", hows: "how's", "Id've": "I'd've", "I'dve": "I'd've",
  Im: "I'm", Ive: "I've", isnt: "isn't", itd: "it'd", "itd've": "it'd've", "it'dve": "it'd've", itll: "it'll", "let's": "let's",
  maam: "ma'am", mightnt: "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", mightve: "might've",
  mustnt: "mustn't", mustve: "must've", neednt: "needn't", notve: "not've", oclock: "o'clock", oughtnt: "oughtn't",
  "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", shant: "shan't", "shed've": "she'd've", "she'dve": "she'd've",
  "she's": "she's", shouldve: "should've", shouldnt: "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
  "somebody'd": 'somebodyd', "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", somebodyll: "somebody'll",
  somebodys: "somebody's", someoned: "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
  someonell: "someone'll", someones: "someone's", somethingd: "something'd", "somethingd've": "something'd've",
  "something'dve": "something'd've", somethingll: "something'll", thats: "that's", thered: "there'd", "thered've": "there'd've",
  "there'dve": "there'd've", therere: "there're", theres: "there's", theyd: "they'd", "theyd've": "they'd've",
  "they'dve": "they'd've", theyll: "they'll", theyre: "they're", theyve: "they've", twas: "'twas", wasnt: "wasn't",
  "wed've": "we'd've", "we'dve": "we'd've", weve: "we've", werent: "weren't", whatll: "what'll", whatre: "what're",
  whats: "what's", whatve: "what've", whens: "when's", whered: "where'd", wheres: "where's", whereve: "where've",
  whod: "who'd", "whod've": "who'd've", "who'dve": "who'd've", wholl: "who'll", whos: "who's", whove: "who've", whyll: "why'll",
  whyre: "why're", whys: "why's", wont: "won't", wouldve: "would've", wouldnt: "wouldn't", "wouldnt've": "wouldn't've",
  "wouldn'tve": "wouldn't've", yall: "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
  "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", youd: "you'd", "youd've": "you'd've", "you'dve": "you'd've",
  youll: "you'll", youre: "you're", youve: "you've",
}));

const NUMBER_WORDS = new Map<string, string>([
  ['none', '0'], ['zero', '0'], ['one', '1'], ['two', '2'], ['three', '3'], ['four', '4'],
  ['five', '5'], ['six', '6'], ['seven', '7'], ['eight', '8'], ['nine', '9'], ['ten', '10'],
]);

const ARTICLES = new Set(['a', 'an', 'the']);

const PUNCTUATION = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

// vqaEval.py's `(?!<=\d)` was meant as a lookbehind but is a lookahead that always holds, so the
// rule it applies, and this one with it, is: drop every full stop not followed by a digit.
const PERIOD_STRIP = /(?!<=\d)(\.)(?!\d)/g;
const COMMA_STRIP = /(\d)(,)(\d)/;

/** vqaEval.py's `processPunctuation`. */
function processPunctuation(text: string): string {
  // A mark next to a space, or any mark in a text with a digit-comma-digit, is dropped; otherwise it becomes a space.
  const dropAll = COMMA_STRIP.test(text);
  let out = text;
  for (const mark of PUNCTUATION) {
    const drop = dropAll || text.includes(`${mark} `) || text.includes(` ${mark}`);
    out = out.split(mark).join(drop ? '' : ' ');
  }
  return out.replace(PERIOD_STRIP, '');
}

/** vqaEval.py's `processDigitArticle`. */
function processDigitArticle(text: string): string {
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter((word) => word.length > 0)
    .map((word) => NUMBER_WORDS.get(word) ?? word)
    .filter((word) => !ARTICLES.has(word))
    .map((word) => CONTRACTIONS.get(word) ?? word)
    .join(' ');
}

/**
 * An answer normalised as the official VQA evaluation does: newlines and tabs to spaces, trimmed,
 * punctuation removed (or turned into spaces), lower-cased, number words up to ten written as
 * digits (`two` → `2`), articles removed, and contractions given their apostrophes (`dont` → `don't`).
 * `"Two."` → `"2"`, `"a dog"` → `"dog"`, `"yes."` → `"yes"`.
 */
export function normalizeAnswer(answer: string): string {
  if (typeof answer !== 'string') throw new TypeError(`answer must be a string, got ${typeof answer}`);
  return processDigitArticle(processPunctuation(answer.replace(/[\n\t]/g, ' ').trim()));
}

/** How one prediction scores against the human answers. */
export interface AnswerScore {
  /** VQA soft accuracy: `min(#human answers equal to the prediction / 3, 1)`, after normalisation. */
  vqa: number;
  /**
   * The same, averaged over the subsets that leave one human answer out (the 10 choose 9 subsets
   * of VQAv2's ten answers), as the official evaluation reports it: 3 matching answers of 10
   * score 0.9 here and 1 in {@link AnswerScore.vqa}. With a single human answer there is no subset
   * to leave one out of, and it equals `vqa`.
   */
  vqaAveraged: number;
  /** The normalised prediction equals the most frequent normalised human answer (any of them, on a tie). */
  exact: boolean;
}

/**
 * Scores a prediction against the human answers (see {@link AnswerScore}). Both sides are
 * normalised with {@link normalizeAnswer}. (The official script normalises the human answers only
 * when they disagree, relying on its data being normalised already; hand-made data is not.)
 *
 * @throws TypeError when an answer is not a string; RangeError when there are no human answers.
 */
export function scoreAnswer(prediction: string, answers: readonly string[]): AnswerScore {
  if (!Array.isArray(answers)) throw new TypeError('answers must be an array of strings');
  if (answers.length === 0) throw new RangeError('answers must hold at least one human answer');
  const predicted = normalizeAnswer(prediction);
  const normalized = answers.map(normalizeAnswer);
  const matching = normalized.filter((answer) => answer === predicted).length;
  const soft = (count: number): number => Math.min(count / 3, 1);
  const leaveOneOut = normalized.map((answer) => soft(matching - (answer === predicted ? 1 : 0)));
  const vqaAveraged = answers.length < 2 ? soft(matching) : leaveOneOut.reduce((sum, value) => sum + value, 0) / answers.length;
  return { vqa: soft(matching), vqaAveraged, exact: mostFrequent(normalized).has(predicted) };
}

/** VQA soft accuracy of one prediction: `min(#matching human answers / 3, 1)` (see {@link scoreAnswer}). */
export function vqaSoftAccuracy(prediction: string, answers: readonly string[]): number {
  return scoreAnswer(prediction, answers).vqa;
}

function mostFrequent(values: readonly string[]): Set<string> {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  const top = Math.max(...counts.values());
  return new Set([...counts].filter(([, count]) => count === top).map(([value]) => value));
}

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
  /** The predictions already in `out` (all of its lines, in order). */
  readonly done: readonly Prediction[];
  /** The items still to answer, in data order. */
  readonly todo: readonly EvalItem[];
}

/**
 * Decides what an evaluation run has to do, before any model is loaded. With `resume`, the
 * predictions already in `out` are kept and their items skipped (matched by id, or else by
 * index); a last line cut short by a crash is removed from the file and its item done again.
 *
 * @throws ChainOfSpotError `ERR_EVAL_OUTPUT` when `out` already holds predictions and `resume` is not
 *   set, or when its lines are not predictions of the same mode.
 */
export async function planEval(options: PlanOptions): Promise<EvalPlan> {
  const { mode, out } = options;
  const items = options.limit === undefined ? options.items : options.items.slice(0, options.limit);
  const done = out === undefined ? [] : await readPredictions(out, mode, options.resume === true);
  const finished = new Set(done.map(itemKey));
  return { mode, out, total: items.length, done, todo: items.filter((item) => !finished.has(itemKey(item))) };
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
  /** All predictions: those the plan found in the file, then this run's. */
  predictions: Prediction[];
  /** Items answered by this run. */
  answered: number;
  /** Whether the signal stopped the run before the plan was done. */
  interrupted: boolean;
}

/**
 * Answers the plan's items one by one (or `concurrency` at a time), appending each prediction to
 * the plan's file as one line as soon as it is known (a whole line per write, so a crash or Ctrl-C
 * loses no finished item). An item whose image cannot be read or whose question does not fit the
 * context is recorded as failed (score 0) and the run goes on; any other failure stops it.
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
      if (fd !== undefined) writeSync(fd, `${JSON.stringify(prediction)}\n`);
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
