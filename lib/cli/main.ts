#!/usr/bin/env node
/**
 * The `chain-of-spot` command: ask a question about an image, run the bundled demo, or evaluate on
 * a VQA-style JSONL file. This file parses arguments and wires the pieces together; the drawing,
 * the scoring and the progress display live in their own modules.
 */
import { readFileSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { drawRegion, REGION_LABEL } from '../image/annotate';
import { PACKAGE_ROOT } from '../native/loader';
import { formatBox } from '../procedure/box';
import { ChainOfSpot, type AskResult, type TurnResult } from '../procedure/chain-of-spot';
import { ChainOfSpotError } from '../common/errors';
import { loadImage, type RawImageInput } from '../image/image';
import { setLogger } from '../native/logger';
import { formatDuration, Progress } from './progress';
import { ensureTinyLlava, TINY_LLAVA } from '../models/tiny-model';
import { planEval, readEvalData, runEval, summarize, type Answerer, type EvalSummary } from '../eval/vqa';

/** The usage text of `chain-of-spot --help`. */
export const USAGE = `Usage: chain-of-spot <command> [options]

Chain-of-Spot (Liu et al.) on LLaVA-1.5 GGUF models: the model first names the region of the
image that matters for the question, then answers with that region zoomed in.

Commands:
  ask IMAGE QUESTION     answer a question about an image
  demo                   run the whole procedure on a bundled photo, with a tiny random-weight model
  eval DATA.jsonl        answer each line's question and score it (VQAv2 accuracy, exact match);
                         lines are {"image": path, "question": text, "answers": [text, ...], "id": ...};
                         questions are asked as written (LLaVA's VQAv2 protocol ends each with
                         "\\nAnswer the question using a single word or phrase.")

Model options (ask, eval):
  -m, --model FILE       the LLaVA-1.5 text model (GGUF)                           (required)
      --mmproj FILE      its projector (the mmproj GGUF released with it)          (required)
      --gpu-layers N     text model layers on the GPU: a number, auto or max       (default auto)
      --threads N        CPU threads                                               (default: all)
      --max-tokens N     most tokens of the answer                                 (default 128)
      --no-grammar       let turn one write its region freely, not in the reference's box format

ask options:
      --json             print one JSON object (answer, region, turns, timings) instead of text
      --stream           print each turn's text as it is generated
      --annotate OUT.png write the image with the region drawn on it
      --save-roi OUT.png write the zoomed region the model saw in turn two

eval options:
      --baseline         answer in one plain LLaVA-1.5 turn (no region, no zoom), to compare with
      --limit N          only the first N questions
      --out PRED.jsonl   write one prediction per line, as each is answered
      --resume           keep the predictions already in --out and answer only the rest

demo options:
      --out DIR          where to write chain-of-spot-demo.png and chain-of-spot-demo-roi.png
                         (default: the current folder)

Other options:
      --debug            on failure print the stack trace; print llama.cpp's log
  -h, --help             print this help
  -v, --version          print the version

Exit status: 0 done, 1 failed, 2 wrong usage, 130 interrupted (Ctrl-C).
Get LLaVA-1.5 weights: see "Getting weights" in the README.
`;

const DEMO_PHOTO = path.join(PACKAGE_ROOT, 'assets', 'chelsea.png');
const DEMO_QUESTION = 'What is the cat looking at?';
const DEMO_FILES = { annotated: 'chain-of-spot-demo.png', roi: 'chain-of-spot-demo-roi.png' };

/** A failure of the command line itself, with its exit status: 2 for wrong usage, 1 otherwise. */
export class CliError extends Error {
  readonly code: 'ERR_USAGE' | 'ERR_OUTPUT';

  constructor(code: CliError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CliError';
    this.code = code;
  }
}

function usageError(message: string): CliError {
  return new CliError('ERR_USAGE', message);
}

// --- arguments -----------------------------------------------------------------------------------

const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  debug: { type: 'boolean' },
} as const;

const MODEL_OPTIONS = {
  ...COMMON_OPTIONS,
  model: { type: 'string', short: 'm' },
  mmproj: { type: 'string' },
  'gpu-layers': { type: 'string' },
  threads: { type: 'string' },
  'max-tokens': { type: 'string' },
  'no-grammar': { type: 'boolean' },
} as const;

const ASK_OPTIONS = {
  ...MODEL_OPTIONS,
  json: { type: 'boolean' },
  stream: { type: 'boolean' },
  annotate: { type: 'string' },
  'save-roi': { type: 'string' },
} as const;

const EVAL_OPTIONS = {
  ...MODEL_OPTIONS,
  baseline: { type: 'boolean' },
  limit: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'boolean' },
} as const;

const DEMO_OPTIONS = {
  ...COMMON_OPTIONS,
  out: { type: 'string' },
} as const;

/** What the model options say, checked. */
interface ModelArgs {
  model: string;
  mmproj: string;
  gpuLayers: number | 'auto' | 'max';
  threads: number | undefined;
  maxTokens: number | undefined;
  grammar: boolean;
}

/** A parsed command line. */
export type Command =
  | { command: 'help' }
  | { command: 'version' }
  | { command: 'ask'; image: string; question: string; model: ModelArgs; json: boolean; stream: boolean; annotate?: string; saveRoi?: string }
  | { command: 'eval'; data: string; model: ModelArgs; baseline: boolean; limit?: number; out?: string; resume: boolean }
  | { command: 'demo'; out: string };

/**
 * Parses the arguments after `chain-of-spot`. Pure: checks only what the arguments say, not the files.
 * @throws CliError `ERR_USAGE` for a wrong command line.
 */
export function parseCommandLine(argv: readonly string[]): Command {
  const [command, ...rest] = argv;
  if (command === undefined) throw usageError('no command given: use ask, demo or eval');
  if (command === '-h' || command === '--help' || command === 'help') return { command: 'help' };
  if (command === '-v' || command === '--version') return { command: 'version' };
  const parse = (options: ParseArgsConfig['options'], positionals: string[]): { values: Record<string, string | boolean | undefined>; positionals: string[] } => {
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
    } catch (error) {
      throw usageError(`${command}: ${(error as Error).message}`);
    }
    const values = parsed.values as Record<string, string | boolean | undefined>;
    if (!values.help && parsed.positionals.length !== positionals.length) {
      const expected = positionals.length === 0 ? 'no arguments' : positionals.join(' ');
      throw usageError(`${command} takes ${expected}, got ${parsed.positionals.length === 0 ? 'none' : parsed.positionals.map((p) => JSON.stringify(p)).join(' ')}`);
    }
    return { values, positionals: parsed.positionals };
  };
  switch (command) {
    case 'ask': {
      const { values, positionals } = parse(ASK_OPTIONS, ['IMAGE', 'QUESTION']);
      if (values.help) return { command: 'help' };
      if (values.json && values.stream) throw usageError('ask: --json and --stream do not go together: the JSON object is printed once, at the end');
      const question = positionals[1]!;
      if (question.trim() === '') throw usageError('ask: the question is empty');
      const parsed: Command = { command: 'ask', image: positionals[0]!, question, model: modelArgs(values, command), json: values.json === true, stream: values.stream === true };
      const annotate = pngPath(values.annotate, '--annotate');
      const saveRoi = pngPath(values['save-roi'], '--save-roi');
      if (annotate !== undefined) parsed.annotate = annotate;
      if (saveRoi !== undefined) parsed.saveRoi = saveRoi;
      return parsed;
    }
    case 'eval': {
      const { values, positionals } = parse(EVAL_OPTIONS, ['DATA.jsonl']);
      if (values.help) return { command: 'help' };
      if (values.resume && values.out === undefined) throw usageError('eval: --resume needs --out, the predictions file to continue');
      if (values.baseline && values['no-grammar']) throw usageError('eval: --no-grammar applies to the region turn, which --baseline does not have');
      const parsed: Command = { command: 'eval', data: positionals[0]!, model: modelArgs(values, command), baseline: values.baseline === true, resume: values.resume === true };
      if (values.limit !== undefined) parsed.limit = integerArg(values.limit, '--limit', 1);
      if (typeof values.out === 'string') parsed.out = values.out;
      return parsed;
    }
    case 'demo': {
      const { values } = parse(DEMO_OPTIONS, []);
      if (values.help) return { command: 'help' };
      return { command: 'demo', out: typeof values.out === 'string' ? values.out : '.' };
    }
    default:
      throw usageError(`unknown command '${command}': use ask, demo or eval`);
  }
}

function modelArgs(values: Record<string, string | boolean | undefined>, command: string): ModelArgs {
  const { model, mmproj } = values;
  if (typeof model !== 'string' || typeof mmproj !== 'string') {
    throw usageError(`${command} needs --model FILE and --mmproj FILE (a LLaVA-1.5 GGUF and its projector)`);
  }
  const gpuLayers = values['gpu-layers'];
  return {
    model,
    mmproj,
    gpuLayers: gpuLayers === undefined || gpuLayers === 'auto' || gpuLayers === 'max' ? (gpuLayers ?? 'auto') : integerArg(gpuLayers, '--gpu-layers', 0, 'a number, auto or max'),
    threads: values.threads === undefined ? undefined : integerArg(values.threads, '--threads', 1),
    maxTokens: values['max-tokens'] === undefined ? undefined : integerArg(values['max-tokens'], '--max-tokens', 1),
    grammar: values['no-grammar'] !== true,
  };
}

function integerArg(value: string | boolean, flag: string, min: number, expected = `a whole number from ${min}`): number {
  const number = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min) throw usageError(`${flag} must be ${expected}, got ${JSON.stringify(value)}`);
  return number;
}

function pngPath(value: string | boolean | undefined, flag: string): string | undefined {
  if (typeof value !== 'string') return undefined;
  if (path.extname(value).toLowerCase() !== '.png') throw usageError(`${flag} writes a PNG: give a file name ending in .png, got ${JSON.stringify(value)}`);
  return value;
}

// --- running -------------------------------------------------------------------------------------

/** Runs a parsed command; resolves to the exit status. */
async function run(command: Command, signal: AbortSignal): Promise<number> {
  switch (command.command) {
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case 'version':
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    case 'ask':
      return ask(command, signal);
    case 'eval':
      return evaluate(command, signal);
    case 'demo':
      return demo(command, signal);
  }
}

async function ask(command: Extract<Command, { command: 'ask' }>, signal: AbortSignal): Promise<number> {
  await Promise.all([command.annotate, command.saveRoi].map((file) => file && checkOutputFolder(file)));
  const image = await readImage(command.image);
  const cos = await loadModel(command.model, signal);
  try {
    const outputs = { annotate: command.annotate, saveRoi: command.saveRoi, stream: command.stream, maxTokens: command.model.maxTokens, grammar: command.model.grammar };
    const result = await askAndSave(cos, image, command.question, outputs, signal);
    if (command.json) {
      process.stdout.write(`${JSON.stringify(askJson(command.image, command.question, result), null, 2)}\n`);
    } else {
      process.stdout.write(formatAskResult(result, image, { streamed: command.stream, saved: savedFiles(command) }));
    }
  } finally {
    await cos.dispose();
  }
  return 0;
}

async function demo(command: Extract<Command, { command: 'demo' }>, signal: AbortSignal): Promise<number> {
  const cache = cacheDir(process.env);
  const preparing = new Progress({ label: `preparing the tiny demo model in ${cache}` });
  let files;
  try {
    files = await ensureTinyLlava(cache, TINY_LLAVA);
  } catch (error) {
    preparing.fail();
    throw new CliError('ERR_OUTPUT', `cannot write the demo model to ${cache}: ${(error as Error).message}; set CHAIN_OF_SPOT_CACHE to a writable folder`, { cause: error });
  }
  preparing.done();
  try {
    await mkdir(command.out, { recursive: true });
  } catch (error) {
    throw new CliError('ERR_OUTPUT', `cannot create the folder ${command.out}: ${(error as Error).message}; choose another --out`, { cause: error });
  }
  const image = await readImage(DEMO_PHOTO);
  const cos = await loadModel({ ...files, gpuLayers: 'auto', threads: undefined }, signal);
  const saved = { annotate: path.join(command.out, DEMO_FILES.annotated), saveRoi: path.join(command.out, DEMO_FILES.roi) };
  try {
    const result = await askAndSave(cos, image, DEMO_QUESTION, { ...saved, stream: false, maxTokens: 16, grammar: true }, signal);
    process.stdout.write(
      `Chain-of-Spot demo on the bundled photo ${path.relative(PACKAGE_ROOT, DEMO_PHOTO)} (${image.width}x${image.height})\n` +
        `Question: ${DEMO_QUESTION}\n` +
        formatAskResult(result, image, { streamed: false, saved: savedFiles(saved) }) +
        '\nThe demo model is tiny and has RANDOM WEIGHTS: its answer and its region mean nothing; the demo only\n' +
        'shows both turns running on this machine. For real answers, get LLaVA-1.5 GGUF weights ("Getting weights"\n' +
        'in the README) and run: chain-of-spot ask IMAGE "QUESTION" --model MODEL.gguf --mmproj MMPROJ.gguf\n',
    );
  } finally {
    await cos.dispose();
  }
  return 0;
}

async function evaluate(command: Extract<Command, { command: 'eval' }>, signal: AbortSignal): Promise<number> {
  if (command.out !== undefined) await checkOutputFolder(command.out);
  const items = await readEvalData(command.data);
  const mode = command.baseline ? 'baseline' : 'chain-of-spot';
  const plan = await planEval({ items, mode, limit: command.limit, out: command.out, resume: command.resume });
  const already = plan.total - plan.todo.length;
  process.stderr.write(`${plan.total} questions from ${command.data}${already > 0 ? `, ${already} already in ${command.out}` : ''}, ${plan.todo.length} to answer (${mode})\n`);

  let summary: EvalSummary;
  let interrupted = false;
  if (plan.todo.length === 0) {
    summary = summarize(plan.done);
  } else {
    const cos = await loadModel(command.model, signal);
    try {
      const answer: Answerer = async (item, itemSignal) => {
        const options = { maxTokens: command.model.maxTokens, signal: itemSignal };
        if (command.baseline) {
          const result = await cos.baseline(item.image, item.question, options);
          return { answer: result.answer, region: null, timings: result.timings };
        }
        const result = await cos.ask(item.image, item.question, { ...options, grammar: command.model.grammar });
        return { answer: result.answer, region: result.roi, timings: result.timings };
      };
      const progress = new Progress({ label: 'eval', total: plan.todo.length });
      const onInterrupt = (): void => progress.log('interrupted: stopping after the questions already answered (Ctrl-C again to quit at once)');
      signal.addEventListener('abort', onInterrupt, { once: true });
      let answered = 0;
      const outcome = await runEval(plan, answer, {
        signal,
        onPrediction: (prediction, item) => {
          if (prediction.error) progress.log(`question ${item.id ?? item.index} (${item.image}): ${prediction.error.message} (${prediction.error.code})`);
          progress.update(++answered);
        },
      }).finally(() => signal.removeEventListener('abort', onInterrupt));
      interrupted = outcome.interrupted;
      if (interrupted) progress.fail(`stopped after ${outcome.answered} of ${plan.todo.length}`);
      else progress.done();
      summary = summarize(outcome.predictions);
    } finally {
      await cos.dispose();
    }
  }
  process.stdout.write(formatSummary(summary, command.out));
  if (interrupted) {
    process.stderr.write(`interrupted: run the same command with --resume to answer the rest${command.out ? '' : ' (add --out FILE to keep predictions)'}\n`);
    return 130;
  }
  return 0;
}

/** What {@link askAndSave} does besides asking. */
interface AskOutputs {
  annotate?: string | undefined;
  saveRoi?: string | undefined;
  stream: boolean;
  maxTokens: number | undefined;
  grammar: boolean;
}

/** Asks the question, printing the turns as they come when streaming, and writes the pictures asked for. */
async function askAndSave(cos: ChainOfSpot, image: RawImageInput, question: string, outputs: AskOutputs, signal: AbortSignal): Promise<AskResult> {
  const result = await cos.ask(image, question, {
    maxTokens: outputs.maxTokens,
    grammar: outputs.grammar,
    includeRoiImage: outputs.saveRoi !== undefined,
    onText: outputs.stream ? streamPrinter() : undefined,
    signal,
  });
  if (outputs.stream) process.stdout.write('\n');
  if (outputs.annotate !== undefined) {
    const label = result.roi.source === 'fallback' ? 'whole image (no region read)' : REGION_LABEL;
    await writeOutput(outputs.annotate, await drawRegion(image, result.roi.pixels, { label }), 'annotated image');
  }
  if (outputs.saveRoi !== undefined) await writeOutput(outputs.saveRoi, result.roiImage!, 'zoomed region');
  return result;
}

/** Prints each turn's text as it arrives, under a heading per turn. */
function streamPrinter(): (text: string, turn: 1 | 2) => void {
  let current = 0;
  return (text, turn) => {
    let piece = text;
    if (turn !== current) {
      process.stdout.write(`${current === 0 ? '' : '\n'}${turn === 1 ? 'Turn 1 (region): ' : 'Turn 2 (answer): '}`);
      current = turn;
      piece = piece.trimStart(); // the model's own space after "ASSISTANT:"
    }
    process.stdout.write(piece);
  };
}

/** A picture the command wrote, and what it shows. */
interface SavedFile {
  file: string;
  what: string;
}

function savedFiles(outputs: { annotate?: string | undefined; saveRoi?: string | undefined }): SavedFile[] {
  const saved: SavedFile[] = [];
  if (outputs.annotate !== undefined) saved.push({ file: outputs.annotate, what: 'the image with the region drawn on it' });
  if (outputs.saveRoi !== undefined) saved.push({ file: outputs.saveRoi, what: 'the zoomed region the model saw in turn two' });
  return saved;
}

/**
 * The human-readable report of a question: the answer (unless it was streamed), the region as the
 * model's box and in the image's pixels, the time per turn, and the pictures written.
 */
export function formatAskResult(result: AskResult, image: { width: number; height: number }, options: { streamed: boolean; saved: readonly SavedFile[] }): string {
  const { box, pixels, source } = result.roi;
  const lines: string[] = [];
  if (!options.streamed) lines.push(`Answer:  ${result.answer}`);
  lines.push(
    `Region:  ${formatBox(box)} (left, top, right, bottom as fractions of the image padded to a square)`,
    `         pixels left ${pixels.left}, top ${pixels.top}, right ${pixels.right}, bottom ${pixels.bottom}: ` +
      `${pixels.right - pixels.left}x${pixels.bottom - pixels.top} of the ${image.width}x${image.height} image`,
  );
  if (source === 'fallback') lines.push(`         the whole image, since turn one's answer ${JSON.stringify(result.turns[0].text.trim())} holds no usable box`);
  const [one, two] = result.turns;
  lines.push(
    `Time:    ${formatDuration(result.timings.totalMs)} in all; turn 1 ${formatDuration(turnMs(one))} (${one.promptTokens} prompt + ${one.generatedTokens} generated tokens), ` +
      `turn 2 ${formatDuration(turnMs(two))} (${two.promptTokens} + ${two.generatedTokens})`,
  );
  options.saved.forEach(({ file, what }, index) => lines.push(`${index === 0 ? 'Saved:  ' : '        '} ${file} (${what})`));
  return `${lines.join('\n')}\n`;
}

function turnMs(turn: TurnResult): number {
  const { imageEncodeMs, imageDecodeMs, promptMs, generateMs } = turn.timings;
  return imageEncodeMs + imageDecodeMs + promptMs + generateMs;
}

/** The `--json` object: the result with the token ids as plain arrays, and without the PNG bytes. */
export function askJson(image: string, question: string, result: AskResult): object {
  return {
    image,
    question,
    answer: result.answer,
    roi: result.roi,
    turns: result.turns.map((turn) => ({ ...turn, tokens: Array.from(turn.tokens) })),
    prefixReused: result.prefixReused,
    timings: result.timings,
  };
}

/** The report of an evaluation: accuracies as percentages over the scored predictions. */
export function formatSummary(summary: EvalSummary, out: string | undefined): string {
  const percent = (value: number): string => `${(value * 100).toFixed(2)} %`;
  const lines = [
    `Predictions:  ${summary.predictions}${out === undefined ? '' : ` in ${out}`} (${summary.scored} with human answers, ${summary.failed} failed)`,
  ];
  if (summary.scored === 0) {
    lines.push('Accuracy:     nothing to score: no question has "answers"');
  } else {
    lines.push(
      `VQA accuracy: ${percent(summary.vqa)} (official average over the leave-one-answer-out subsets: ${percent(summary.vqaAveraged)})`,
      `Exact match:  ${percent(summary.exact)}`,
    );
  }
  if (summary.meanMs > 0) lines.push(`Time:         ${formatDuration(summary.meanMs)} per question`);
  return `${lines.join('\n')}\n`;
}

// --- files ---------------------------------------------------------------------------------------

/**
 * Where the demo keeps its tiny model: `$CHAIN_OF_SPOT_CACHE`, else `$XDG_CACHE_HOME/chain-of-spot`,
 * else `~/.cache/chain-of-spot`.
 */
export function cacheDir(env: NodeJS.ProcessEnv, home: string = homedir()): string {
  if (env.CHAIN_OF_SPOT_CACHE) return path.resolve(env.CHAIN_OF_SPOT_CACHE);
  // The XDG spec says to ignore a relative XDG_CACHE_HOME.
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(home, '.cache'), 'chain-of-spot');
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The image, decoded once: checked before the model loads, and drawn on afterwards. */
async function readImage(file: string): Promise<RawImageInput> {
  try {
    return { ...(await loadImage(file)), channels: 3 };
  } catch (error) {
    if (!(error instanceof ChainOfSpotError) || error.message.includes(file)) throw error;
    throw new ChainOfSpotError(error.code, `${file}: ${error.message}`, { cause: error });
  }
}

/** Loads the model with a progress display, after checking both files exist (the projector is read only after the model). */
async function loadModel(args: Pick<ModelArgs, 'model' | 'mmproj' | 'gpuLayers' | 'threads'>, signal: AbortSignal): Promise<ChainOfSpot> {
  await requireFile(args.model, 'ERR_MODEL_LOAD', 'model file');
  await requireFile(args.mmproj, 'ERR_PROJECTOR_LOAD', 'projector (--mmproj) file');
  const progress = new Progress({ label: `loading model ${path.basename(args.model)}` });
  try {
    const cos = await ChainOfSpot.load({
      model: args.model,
      mmproj: args.mmproj,
      gpuLayers: args.gpuLayers,
      threads: args.threads,
      onProgress: (fraction) => progress.update(fraction),
      signal,
    });
    progress.done();
    return cos;
  } catch (error) {
    progress.fail();
    throw error;
  }
}

async function requireFile(file: string, code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD', what: string): Promise<void> {
  const found = await stat(file).catch(() => undefined);
  if (!found?.isFile()) throw new ChainOfSpotError(code, `${what} not found: ${file}; check the path`);
}

async function checkOutputFolder(file: string): Promise<void> {
  const folder = path.dirname(path.resolve(file));
  const found = await stat(folder).catch(() => undefined);
  if (!found?.isDirectory()) throw new CliError('ERR_OUTPUT', `the folder ${folder} does not exist: create it, or write ${path.basename(file)} elsewhere`);
}

async function writeOutput(file: string, bytes: Buffer, what: string): Promise<void> {
  try {
    await writeFile(file, bytes);
  } catch (error) {
    throw new CliError('ERR_OUTPUT', `cannot write the ${what} to ${file}: ${(error as Error).message}; check the folder exists and is writable`, { cause: error });
  }
}

// --- errors and the entry point ------------------------------------------------------------------

/**
 * What to print for a failure and the exit status: one line, `chain-of-spot: error: <message> (<code>)`,
 * status 2 for wrong usage, 1 otherwise, and 130 for an interruption. With `debug` the stack traces follow.
 */
export function errorReport(error: unknown, debug: boolean): { text: string; exitCode: number } {
  const code: unknown = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_ABORTED') return { text: 'chain-of-spot: interrupted\n', exitCode: 130 };
  const message = (error instanceof Error ? error.message : String(error)).replace(/\s*\n\s*/g, ' ').trim();
  const hint = code === 'ERR_USAGE' ? "; see 'chain-of-spot --help'" : '';
  let text = `chain-of-spot: error: ${message}${typeof code === 'string' ? ` (${code})` : ''}${hint}\n`;
  if (debug) {
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) text += `${cause.stack ?? cause.message}\n`;
  }
  return { text, exitCode: code === 'ERR_USAGE' ? 2 : 1 };
}

/**
 * Runs the command line and resolves to the exit status. The first Ctrl-C cancels what is running
 * (an evaluation keeps every finished line); a second one quits at once.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const controller = new AbortController();
  const onSigint = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const command = parseCommandLine(argv);
    if (debug) setLogger((_level, text) => process.stderr.write(text), 'info');
    return await run(command, controller.signal);
  } catch (error) {
    const report = errorReport(error, debug);
    process.stderr.write(report.text);
    return report.exitCode;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
