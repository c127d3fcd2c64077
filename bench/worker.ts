/**
 * One JS variant of the benchmark, in a process of its own (forked by bench/run.ts), so that each
 * has its own model, cache and peak RSS. The session's operations are wrapped to log what each one
 * did; the 'ask' worker's first question is also recorded as the plan the C++ floor replays.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import { BOX_GRAMMAR, parseBoxOrFallback } from '../lib/procedure/box';
import { ChainOfSpot } from '../lib/procedure/chain-of-spot';
import type { OpenedImage } from '../lib/procedure/types';
import { evaluatePrompt } from '../lib/procedure/evaluate-prompt';
import { loadImage, prepareOriginal, prepareRegion } from '../lib/image/image';
import { roiPrompt, twoTurnPrompt } from '../lib/procedure/prompt';
import type { Session } from '../lib/llama/session';
import type { FromWorker, JsVariant, Measured, PlanStep, Step, ToWorker, WorkerInit } from './protocol';

/** What the wrapped session did since the last reset, and optionally the plan to replay it. */
class StepLog {
  steps: Step[] = [];
  /** Recording: the plan, with images kept in memory until the question is over. */
  plan: PlanStep[] | undefined;
  images: Uint8Array[] = [];
  turn = 1;

  reset(record: boolean): void {
    this.steps = [];
    this.plan = record ? [] : undefined;
    this.images = [];
    this.turn = 1;
  }

  add(step: Omit<Step, 'turn'>): void {
    this.steps.push({ ...step, turn: this.turn });
  }
}

/** Wraps the session's methods on the instance: ChainOfSpot and evaluatePrompt call them through it. */
function instrument(session: Session, log: StepLog): void {
  const evaluate = session.evaluate.bind(session);
  session.evaluate = async (input, options) => {
    if (typeof input === 'string') throw new TypeError('the benchmark records token ids, not strings');
    const result = await evaluate(input, options);
    log.add({ op: 'tokens', ms: result.ms, tokens: result.tokens, decodes: result.decodeCalls });
    log.plan?.push({ op: 'tokens', turn: log.turn, ids: Array.from(input) });
    return result;
  };
  const evaluateImage = session.evaluateImage.bind(session);
  session.evaluateImage = async (projector, image, options) => {
    const start = performance.now();
    const result = await evaluateImage(projector, image, options);
    const ms = performance.now() - start;
    log.add({ op: 'image', ms, tokens: result.tokens, encodeMs: result.encodeMs, decodeMs: result.decodeMs });
    if (log.plan) {
      log.plan.push({ op: 'image', turn: log.turn, path: `image-${log.images.length}.rgb`, width: image.width, height: image.height });
      log.images.push(Uint8Array.from(image.data));
    }
    return result;
  };
  const generate = session.generate.bind(session);
  session.generate = async (options) => {
    const result = await generate(options);
    log.add({ op: 'generate', ms: result.ms, tokens: result.tokens.length, decodes: result.decodeCalls, position: result.position });
    log.plan?.push({ op: 'generate', turn: log.turn, n: result.tokens.length, position: result.position });
    log.turn++;
    return result;
  };
  const clear = session.clear.bind(session);
  session.clear = async () => {
    const start = performance.now();
    await clear();
    log.add({ op: 'clear', ms: performance.now() - start });
    log.plan?.push({ op: 'clear' });
  };
  const truncate = session.truncate.bind(session);
  session.truncate = async (position, sequence) => {
    const start = performance.now();
    await truncate(position, sequence);
    log.add({ op: 'truncate', ms: performance.now() - start });
    log.plan?.push({ op: 'truncate', turn: log.turn, position });
  };
}

/** Writes the recorded plan's images beside where the floor will read the plan from. */
async function savePlan(log: StepLog, dir: string): Promise<PlanStep[]> {
  const plan = log.plan ?? [];
  let index = 0;
  for (const step of plan) {
    if (step.op !== 'image') continue;
    step.path = path.join(dir, step.path);
    await writeFile(step.path, log.images[index++]!);
  }
  return plan;
}

class Worker {
  readonly #config: WorkerInit;
  readonly #cos: ChainOfSpot;
  readonly #log = new StepLog();
  /** The image the 'ask' variant opened; the 'further' questions go on from its prefix. */
  #opened: OpenedImage | undefined;
  #planRecorded = false;

  constructor(config: WorkerInit, cos: ChainOfSpot) {
    this.#config = config;
    this.#cos = cos;
    instrument(cos.session, this.#log);
  }

  async run(variant: JsVariant): Promise<FromWorker> {
    switch (variant) {
      case 'ask':
        return this.#ask();
      case 'further':
        return this.#further();
      case 'recompute':
        return this.#recompute();
      case 'plain':
        return this.#plain();
    }
  }

  /** A first question: the image opened anew and its prefix not in the cache. */
  async #ask(): Promise<FromWorker> {
    const { image, question, answerTokens, planDir } = this.#config;
    const record = !this.#planRecorded;
    // The clear is in the plan: it is where A's work starts, and the floor's replay with it.
    this.#log.reset(record);
    await this.#cos.session.clear();
    const start = performance.now();
    this.#opened = await this.#cos.open(image);
    const openMs = performance.now() - start;
    const result = await this.#cos.ask(this.#opened, question, { maxTokens: answerTokens });
    const totalMs = performance.now() - start;
    const measured = this.#measured(openMs + result.timings.preprocessMs, totalMs);
    const message: FromWorker = { type: 'result', variant: 'ask', runs: [measured], answers: [result.turns[0].text, result.answer] };
    if (record) {
      message.plan = await savePlan(this.#log, planDir);
      this.#planRecorded = true;
    }
    return message;
  }

  /** Further questions on the image the last 'ask' opened: its prefix stays in the cache. */
  async #further(): Promise<FromWorker> {
    if (!this.#opened) throw new Error("'further' runs after 'ask', in the same worker");
    const runs: Measured[] = [];
    const answers: string[] = [];
    for (const question of this.#config.furtherQuestions) {
      this.#log.reset(false);
      const start = performance.now();
      const result = await this.#cos.ask(this.#opened, question, { maxTokens: this.#config.answerTokens });
      const totalMs = performance.now() - start;
      if (!result.prefixReused) throw new Error('a further question did not reuse the image prefix');
      runs.push(this.#measured(result.timings.preprocessMs, totalMs));
      answers.push(result.turns[0].text, result.answer);
    }
    return { type: 'result', variant: 'further', runs, answers };
  }

  /**
   * The reference's way: turn one as in ask, then turn two rebuilt from scratch (both images
   * re-encoded, the whole conversation re-evaluated), through the low-level Session API.
   */
  async #recompute(): Promise<FromWorker> {
    const { image, question, answerTokens } = this.#config;
    const session = this.#cos.session;
    const projector = this.#cos.projector;
    const size = projector.info.imageSize;
    this.#log.reset(false);
    const start = performance.now();
    const original = await loadImage(image);
    const modelImage = await prepareOriginal(original, size);
    let preprocessMs = performance.now() - start;
    await session.clear();
    await evaluatePrompt(session, projector, roiPrompt(question), { original: modelImage }, { bos: true });
    const turnOne = await session.generate({ maxTokens: 128, grammar: BOX_GRAMMAR });
    const cropStart = performance.now();
    const roi = await prepareRegion(original, parseBoxOrFallback(turnOne.text, original).box, size);
    preprocessMs += performance.now() - cropStart;
    await session.clear();
    await evaluatePrompt(session, projector, twoTurnPrompt(question, turnOne.text), { original: modelImage, roi }, { bos: true });
    const turnTwo = await session.generate({ maxTokens: answerTokens });
    const totalMs = performance.now() - start;
    return { type: 'result', variant: 'recompute', runs: [this.#measured(preprocessMs, totalMs)], answers: [turnOne.text, turnTwo.text.trim()] };
  }

  /** One plain LLaVA-1.5 turn on a fresh prefix. */
  async #plain(): Promise<FromWorker> {
    const { image, question, answerTokens } = this.#config;
    await this.#cos.session.clear();
    this.#log.reset(false);
    const start = performance.now();
    const result = await this.#cos.baseline(image, question, { maxTokens: answerTokens });
    const totalMs = performance.now() - start;
    return { type: 'result', variant: 'plain', runs: [this.#measured(result.timings.preprocessMs, totalMs)], answers: [result.answer] };
  }

  #measured(preprocessMs: number, totalMs: number): Measured {
    return { steps: this.#log.steps, preprocessMs, totalMs, peakRssKb: process.resourceUsage().maxRSS };
  }
}

/**
 * What a first question would otherwise pay for once per process: the pixel worker thread, and
 * every weight's page of the memory-mapped model (one decode of BOS and EOS, as llama.cpp's own
 * tools and the floor warm up). The image encoder was warmed up when it loaded.
 */
async function warmUp(cos: ChainOfSpot, image: string): Promise<void> {
  await prepareOriginal(await loadImage(image), cos.projector.info.imageSize);
  await cos.session.evaluate([cos.model.info.bos, cos.model.info.eos]);
  await cos.session.clear();
}

function send(message: FromWorker): void {
  process.send!(message);
}

let worker: Worker | undefined;
let pending: Promise<void> = Promise.resolve();

process.on('message', (message: ToWorker) => {
  // One message at a time, in order.
  pending = pending.then(async () => {
    try {
      if (message.type === 'init') {
        const start = performance.now();
        const cos = await ChainOfSpot.load({ model: message.model, mmproj: message.mmproj, threads: message.threads });
        await warmUp(cos, message.image);
        worker = new Worker(message, cos);
        const { contextSize, batchSize } = cos.session.info;
        send({ type: 'ready', loadMs: performance.now() - start, contextSize, batchSize, gpuOffload: ChainOfSpot.backend().gpuOffload });
      } else {
        if (!worker) throw new Error('run before init');
        send(await worker.run(message.variant));
      }
    } catch (error) {
      send({ type: 'error', message: (error as Error).stack ?? String(error) });
    }
  });
});
// The parent closing the channel ends the worker (its models are freed with the process).
process.on('disconnect', () => process.exit(0));
