/**
 * Serving many users (issue 13): U users ask at once, each about an image of their own, a fixed
 * seeded schedule; each user asks its questions one after the other (the next when the last is
 * answered). Measured for U = 1, 4, 8 (`--users`) in three ways, each in this process, one after the
 * other, on the same load:
 *
 *   sequential  ChainOfSpot.load(): one question at a time, the others queue
 *   parallel    ChainOfSpot.load({ parallel: U }): one batch per decode step over all questions
 *   server      llama-server -np U (continuous batching), driven by ChainOfSpot.connect() over 127.0.0.1
 *
 * Prints questions per minute and the median and p95 latency, and the bound on parallel's gain that
 * the sequential run's own phase times give: batching merges the text work (prompt chunks and
 * generation), not the images (the encoder, and the image tokens' evaluation, are compute-bound).
 *
 *   node dist/bench/concurrency.js [--shape tiny|1b|7b] [--users 1,4,8] [--questions 2]
 *                                  [--answer-tokens 16] [--threads N] [--seed 7] [--no-server]
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { ChainOfSpot } from '../lib/procedure/chain-of-spot';
import type { AskResult } from '../lib/procedure/types';
import type { RemoteChainOfSpot } from '../lib/procedure/remote';
import { mulberry32 } from '../lib/common/random';
import { writeScenes, type SceneQuestion } from '../lib/scenes/index';
import { benchModels, type Shape } from './models';
import { positiveInteger, shapeOption } from './options';
import { median } from './report';
import { buildServer, LlamaServer } from './server';

const REPO_ROOT = path.resolve(__dirname, '../..');
const SCENES_DIR = path.join(REPO_ROOT, '.cache', 'bench-concurrency');
/** Turn one's box, turn two's answer and the prompts, per question (as ChainOfSpot.load sizes it). */
const CONTEXT_PER_QUESTION = 2048;

type Mode = 'sequential' | 'parallel' | 'server';
type Asker = Pick<ChainOfSpot | RemoteChainOfSpot, 'ask' | 'dispose'>;

interface Options {
  shape: Shape;
  users: number[];
  questions: number;
  answerTokens: number;
  threads: number;
  seed: number;
  server: boolean;
}

interface Run {
  users: number;
  mode: Mode;
  questionsPerMinute: number;
  medianMs: number;
  p95Ms: number;
  wallMs: number;
  /** Per question: text work (prompts, generation) and image work (encoder, image tokens), in ms. */
  phases?: { textMs: number; imageMs: number };
  error?: string;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: 'tiny' },
      users: { type: 'string', default: '1,4,8' },
      questions: { type: 'string', default: '2' },
      'answer-tokens': { type: 'string', default: '16' },
      threads: { type: 'string', default: String(availableParallelism()) },
      seed: { type: 'string', default: '7' },
      'no-server': { type: 'boolean', default: false },
    },
  });
  const shape = shapeOption(values.shape);
  return {
    shape,
    users: values.users.split(',').map((text) => positiveInteger('users', text)),
    questions: positiveInteger('questions', values.questions),
    answerTokens: positiveInteger('answer-tokens', values['answer-tokens']),
    threads: positiveInteger('threads', values.threads),
    seed: positiveInteger('seed', values.seed),
    server: !values['no-server'],
  };
}

/** Per user: an image of its own and questions about it (generated scenes, one image per user). */
async function workload(users: number, questions: number, seed: number): Promise<{ image: string; question: string }[][]> {
  const out = path.join(SCENES_DIR, `seed-${seed}`);
  const written = await writeScenes({ count: users * 8, seed, out });
  const rows = (await readFile(written.questions, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as SceneQuestion);
  const byImage = new Map<string, SceneQuestion[]>();
  for (const row of rows) byImage.set(row.image, [...(byImage.get(row.image) ?? []), row]);
  const images = [...byImage.values()].slice(0, users);
  if (images.length < users) throw new Error(`the scenes have ${images.length} images for ${users} users`);
  return images.map((rowsOfImage) => Array.from({ length: questions }, (_, i) => {
    const row = rowsOfImage[i % rowsOfImage.length]!;
    return { image: path.join(out, row.image), question: row.question };
  }));
}

/** Runs the schedule: every user starts within the first 100 ms (seeded), then asks on when answered. */
async function drive(asker: Asker, load: { image: string; question: string }[][], answerTokens: number, seed: number): Promise<{ latencies: number[]; wallMs: number; results: AskResult[] }> {
  const random = mulberry32(seed);
  const starts = load.map(() => random() * 100);
  const latencies: number[] = [];
  const results: AskResult[] = [];
  const begin = performance.now();
  await Promise.all(load.map(async (questions, user) => {
    await new Promise((resolve) => setTimeout(resolve, starts[user]));
    for (const { image, question } of questions) {
      const asked = performance.now();
      results.push(await asker.ask(image, question, { maxTokens: answerTokens }));
      latencies.push(performance.now() - asked);
    }
  }));
  return { latencies, wallMs: performance.now() - begin, results };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function phases(results: AskResult[]): { textMs: number; imageMs: number } {
  const text = results.map((r) => r.turns.reduce((sum, t) => sum + t.timings.promptMs + t.timings.generateMs, 0));
  const image = results.map((r) => r.turns.reduce((sum, t) => sum + t.timings.imageEncodeMs + t.timings.imageDecodeMs, 0));
  return { textMs: median(text), imageMs: median(image) };
}

async function open(mode: Mode, users: number, files: { model: string; mmproj: string }, options: Options, binary: string | undefined): Promise<{ asker: Asker; close: () => Promise<void> }> {
  if (mode !== 'server') {
    const cos = await ChainOfSpot.load({ ...files, threads: options.threads, ...(mode === 'parallel' ? { parallel: users } : {}) });
    return { asker: cos, close: () => cos.dispose() };
  }
  const { server } = await LlamaServer.start(binary!, { ...files, nCtx: users * CONTEXT_PER_QUESTION, nBatch: 512, threads: options.threads, slots: users });
  try {
    const remote = await ChainOfSpot.connect({ url: server.url });
    return { asker: remote, close: async () => { await remote.dispose(); await server.close(); } };
  } catch (error) {
    await server.close();
    throw error;
  }
}

async function main(): Promise<void> {
  const options = parseOptions();
  const files = await benchModels(options.shape);
  const binary = options.server ? await buildServer() : undefined;
  console.log(`concurrency bench: shape ${options.shape}, users ${options.users.join('/')}, ${options.questions} questions each, ${options.answerTokens} answer tokens, ${options.threads} threads; load average ${loadavg()[0]!.toFixed(2)}`);
  const modes: Mode[] = options.server ? ['sequential', 'parallel', 'server'] : ['sequential', 'parallel'];
  const runs: Run[] = [];
  for (const users of options.users) {
    const load = await workload(users, options.questions, options.seed);
    for (const mode of modes) {
      let opened: Awaited<ReturnType<typeof open>> | undefined;
      try {
        opened = await open(mode, users, files, options, binary);
        await opened.asker.ask(load[0]![0]!.image, 'Warm up?', { maxTokens: 2 }); // first-call costs stay out
        const { latencies, wallMs, results } = await drive(opened.asker, load, options.answerTokens, options.seed);
        const run: Run = { users, mode, questionsPerMinute: (latencies.length / wallMs) * 60_000, medianMs: median(latencies), p95Ms: percentile(latencies, 95), wallMs };
        if (mode === 'sequential') run.phases = phases(results);
        runs.push(run);
        console.log(`${users} users, ${mode}: ${run.questionsPerMinute.toFixed(1)} questions/min, median ${run.medianMs.toFixed(0)} ms, p95 ${run.p95Ms.toFixed(0)} ms`);
      } catch (error) {
        runs.push({ users, mode, questionsPerMinute: 0, medianMs: 0, p95Ms: 0, wallMs: 0, error: (error as Error).message.split('\n')[0] });
        console.log(`${users} users, ${mode}: failed: ${(error as Error).message.split('\n')[0]}`);
      } finally {
        await opened?.close();
      }
    }
  }
  console.log(`\n${report(runs)}\nload average at the end ${loadavg()[0]!.toFixed(2)}`);
  const outDir = path.join(REPO_ROOT, '.cache', 'bench-results');
  await mkdir(outDir, { recursive: true });
  const file = path.join(outDir, `concurrency-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, JSON.stringify({ options, runs }, null, 1));
  console.log(`results: ${file}`);
}

/**
 * The table, with per user count: parallel's gain over sequential and its bound. A sequential
 * question takes text + image time; with U questions merged, the text work of U questions costs
 * about that of one (the batch is memory-bound), the images still cost U times theirs:
 * bound = U (text + image) / (text + U image).
 */
function report(runs: Run[]): string {
  const lines = ['| users | mode | questions/min | median latency | p95 latency | parallel ÷ sequential | bound from phases |', '| --- | --- | --- | --- | --- | --- | --- |'];
  for (const run of runs) {
    const sequential = runs.find((r) => r.users === run.users && r.mode === 'sequential');
    let gain = '';
    let bound = '';
    if (run.mode === 'parallel' && sequential?.phases && sequential.questionsPerMinute > 0) {
      const { textMs, imageMs } = sequential.phases;
      gain = (run.questionsPerMinute / sequential.questionsPerMinute).toFixed(2);
      bound = `${((run.users * (textMs + imageMs)) / (textMs + run.users * imageMs)).toFixed(2)} (text ${textMs.toFixed(0)} ms, images ${imageMs.toFixed(0)} ms a question)`;
    }
    const cells = run.error ? [`failed: ${run.error}`, '', ''] : [run.questionsPerMinute.toFixed(1), `${run.medianMs.toFixed(0)} ms`, `${run.p95Ms.toFixed(0)} ms`];
    lines.push(`| ${run.users} | ${run.mode} | ${cells.join(' | ')} | ${gain} | ${bound} |`);
  }
  return lines.join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
