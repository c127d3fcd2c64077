/**
 * The side-by-side benchmark (`npm run bench`; see bench/README.md). In one run, interleaved
 * (A B C D E, A B C D E, ...), on the same image and question:
 *   A  ChainOfSpot.ask, a first question (image opened anew, its prefix not cached);
 *   B  the reference's way: turn two rebuilt and evaluated from scratch, both images re-encoded;
 *   C  one plain LLaVA-1.5 turn;
 *   D  the floor: A's exact work replayed by llama.cpp's own C++ (bench/floor/floor.cpp);
 *   E  a second and third question on the image A opened, its prefix still in the cache;
 *   F  A again on the prebuilt portable CPU binary (prebuilds/), against A's local -march=native build;
 *   G  llama-server's cached two-turn flow over 127.0.0.1 (bench/server.ts), A's images and token counts.
 * Prints one table of medians and the targets, and writes everything to a JSON file.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { binaryCandidates, type Candidate } from '../lib/native/loader';
import { ChainOfSpot } from '../lib/procedure/chain-of-spot';
import { GgufType } from '../lib/gguf/format';
import { readGgufHeader } from '../lib/gguf/reader';
import { FloorProcess, buildFloor, checkReplay } from './floor';
import { benchModels, type Shape } from './models';
import { positiveInteger, shapeOption } from './options';
import type { FromWorker, JsVariant, Measured, PlanStep, ToWorker, WorkerInit } from './protocol';
import { gb, median, medianStages, renderTable, stages, type Stages, type Target } from './report';
import { LlamaServer, buildServer } from './server';

const REPO_ROOT = path.resolve(__dirname, '../..');
const QUESTION = 'What is on the saucer next to the cup?';
const FURTHER_QUESTIONS = ['What colour is the cup?', 'What is the table made of?'];

type Variant = JsVariant | 'floor' | 'prebuilt' | 'server';
/** The interleaving order: A B C D E F G. */
const ORDER: readonly Variant[] = ['ask', 'recompute', 'plain', 'floor', 'further', 'prebuilt', 'server'];
const NATIVE_BINARY = path.join(REPO_ROOT, 'build', 'Release', 'chain_of_spot.node');

/** The prebuilt CPU binary the loader would take on this CPU, if `npm run prebuild` made one. */
function prebuiltBinary(): Candidate | undefined {
  const flags = new Set(/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/) ?? []);
  return binaryCandidates({ root: REPO_ROOT, platform: process.platform, arch: process.arch, cpuFlags: flags }).find(
    (candidate) => candidate.backend === 'cpu' && candidate.path.includes(`${path.sep}prebuilds${path.sep}`) && existsSync(candidate.path),
  );
}

interface Options {
  shape: Shape;
  reps: number;
  threads: number;
  out: string;
  image: string;
  answerTokens: number;
  /** Build and measure llama-server (G); on by default, CPU only. */
  server: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: '1b' },
      reps: { type: 'string', default: '3' },
      threads: { type: 'string', default: String(availableParallelism()) },
      out: { type: 'string' },
      image: { type: 'string', default: path.join(REPO_ROOT, 'test/fixtures/images/coffee.png') },
      'answer-tokens': { type: 'string', default: '16' },
      'no-server': { type: 'boolean', default: false },
    },
  });
  const shape = shapeOption(values.shape);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return {
    shape,
    reps: positiveInteger('reps', values.reps),
    threads: positiveInteger('threads', values.threads),
    out: path.resolve(values.out ?? path.join(REPO_ROOT, '.cache', 'bench-results', `${stamp}.json`)),
    image: values.image,
    answerTokens: positiveInteger('answer-tokens', values['answer-tokens']),
    server: !values['no-server'],
  };
}

type WorkerResult = Extract<FromWorker, { type: 'result' }>;
type WorkerReady = Extract<FromWorker, { type: 'ready' }>;

/** A JS variant's worker process: one request at a time, answered in order. */
class JsWorker {
  readonly #child: ChildProcess;
  readonly #waiting: { resolve: (message: FromWorker) => void; reject: (error: Error) => void }[] = [];

  /** @param binary the addon this worker loads (CHAIN_OF_SPOT_BINARY), or the loader's choice */
  constructor(binary?: string) {
    const env = binary ? { ...process.env, CHAIN_OF_SPOT_BINARY: binary } : process.env;
    this.#child = fork(path.join(__dirname, 'worker.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
    this.#child.on('message', (message: FromWorker) => {
      const waiter = this.#waiting.shift();
      if (message.type === 'error') waiter?.reject(new Error(`worker: ${message.message}`));
      else waiter?.resolve(message);
    });
    this.#child.on('exit', (code) => {
      for (const waiter of this.#waiting.splice(0)) waiter.reject(new Error(`a worker exited (${code})`));
    });
  }

  init(message: WorkerInit): Promise<WorkerReady> {
    return this.#request(message) as Promise<WorkerReady>;
  }

  run(variant: JsVariant): Promise<WorkerResult> {
    return this.#request({ type: 'run', variant }) as Promise<WorkerResult>;
  }

  close(): void {
    this.#child.disconnect();
  }

  #request(message: ToWorker): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#child.send(message);
    });
  }
}

/** Bytes of the f16 KV cache of `contextSize` tokens, from the text model's header. */
async function kvCacheBytes(modelPath: string, contextSize: number): Promise<number> {
  const { kv } = await readGgufHeader(modelPath);
  const arch = kv.get('general.architecture')!.value as string;
  const u32 = (key: string): number => {
    const entry = kv.get(`${arch}.${key}`);
    if (entry?.type !== GgufType.UINT32) throw new Error(`${modelPath} has no ${arch}.${key}`);
    return entry.value;
  };
  const headDim = u32('embedding_length') / u32('attention.head_count');
  return contextSize * u32('block_count') * 2 * headDim * u32('attention.head_count_kv') * 2;
}

/** An error's first line, for a table note (the full message goes to the log). */
function firstLine(error: unknown): string {
  return ((error as Error).message ?? String(error)).split('\n')[0]!;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

async function main(): Promise<void> {
  const opts = options();
  const runStart = performance.now();
  const log = (text: string): void => {
    process.stderr.write(`[bench ${seconds(performance.now() - runStart).padStart(7)}] ${text}\n`);
  };
  const loadStart = loadavg();

  log(`models for shape ${opts.shape}...`);
  let phase = performance.now();
  const files = await benchModels(opts.shape);
  const modelMs = performance.now() - phase;

  const backend = ChainOfSpot.backend();
  log(`building the C++ floor (${backend.backend})...`);
  phase = performance.now();
  const floorBinary = await buildFloor(backend.path);
  const buildMs = performance.now() - phase;

  // G is optional: whatever stops it (no build, no start, a failed request) is said in its target's note.
  let serverBinary: string | undefined;
  let serverBuildMs: number | undefined;
  let serverMissing = '';
  if (!opts.server) serverMissing = 'skipped (--no-server)';
  else if (backend.backend !== 'cpu') serverMissing = 'skipped: the llama-server build is CPU-only';
  else {
    log('building llama-server (the first time takes many minutes)...');
    phase = performance.now();
    try {
      serverBinary = await buildServer();
      serverBuildMs = performance.now() - phase;
      log(`llama-server built in ${seconds(serverBuildMs)}`);
    } catch (error) {
      serverMissing = `llama-server build failed: ${firstLine(error)}`;
      log(`llama-server build failed: ${(error as Error).message.slice(-2000)}`);
    }
  }

  log('loading the models in every worker...');
  phase = performance.now();
  // Beside the results, one per run: runs at once (from worktrees sharing a .cache) write their own.
  const planDir = opts.out.replace(/\.json$/, '') + '-plan';
  await mkdir(planDir, { recursive: true });
  const init: WorkerInit = {
    type: 'init',
    model: files.model,
    mmproj: files.mmproj,
    threads: opts.threads,
    image: opts.image,
    question: QUESTION,
    furtherQuestions: FURTHER_QUESTIONS,
    answerTokens: opts.answerTokens,
    planDir,
  };
  // A and E share a worker: E goes on from the image A opened. On the CPU, A to E run the local
  // native build (as the floor is built) and F the prebuilt binary, when there is one.
  const native = backend.backend === 'cpu' && existsSync(NATIVE_BINARY) ? NATIVE_BINARY : undefined;
  const prebuilt = backend.backend === 'cpu' ? prebuiltBinary() : undefined;
  const workers = { ask: new JsWorker(native), recompute: new JsWorker(native), plain: new JsWorker(native) };
  const prebuiltWorker = prebuilt && native ? new JsWorker(prebuilt.path) : undefined;
  const workerOf = (variant: JsVariant): JsWorker => (variant === 'further' ? workers.ask : workers[variant]);
  const ready = await workers.ask.init(init);
  await workers.recompute.init(init);
  await workers.plain.init(init);
  await prebuiltWorker?.init(init);
  // As the addon's defaults: every layer on the GPU when there is one, the image encoder too.
  const { floor, loadMs: floorLoadMs } = await FloorProcess.start(floorBinary, {
    model: files.model,
    mmproj: files.mmproj,
    nCtx: ready.contextSize,
    nBatch: ready.batchSize,
    threads: opts.threads,
    gpuLayers: ready.gpuOffload ? -1 : 0,
    projectorGpu: true,
  });
  let server: LlamaServer | undefined;
  let serverLoadMs: number | undefined;
  if (serverBinary) {
    try {
      ({ server, loadMs: serverLoadMs } = await LlamaServer.start(serverBinary, {
        model: files.model,
        mmproj: files.mmproj,
        nCtx: ready.contextSize,
        nBatch: ready.batchSize,
        threads: opts.threads,
      }));
    } catch (error) {
      serverMissing = `llama-server did not start: ${firstLine(error)}`;
      log(`llama-server did not start: ${(error as Error).message.slice(-2000)}`);
    }
  }
  const loadMs = performance.now() - phase;

  const measured: Record<Variant, Measured[]> = { ask: [], recompute: [], plain: [], floor: [], further: [], prebuilt: [], server: [] };
  const answers: Partial<Record<JsVariant | 'server', string[]>> = {};
  const serverCache: { cached: number; prompt: number }[] = [];
  let plan: PlanStep[] | undefined;
  phase = performance.now();
  try {
    for (let rep = 1; rep <= opts.reps; rep++) {
      for (const variant of ORDER) {
        let runs: Measured[];
        if (variant === 'floor') {
          if (!plan) throw new Error('the floor runs after ask, which records its plan');
          const replay = await floor.run(plan);
          checkReplay(plan, replay, rep);
          runs = [replay];
        } else if (variant === 'prebuilt') {
          if (!prebuiltWorker) continue;
          runs = (await prebuiltWorker.run('ask')).runs;
        } else if (variant === 'server') {
          if (!server) continue;
          if (!plan) throw new Error('llama-server runs after ask, which records its plan');
          try {
            const result = await server.twoTurn({ question: QUESTION, plan });
            answers.server ??= result.answers;
            serverCache.push({ cached: result.cachedTokens, prompt: result.promptTokens });
            runs = [result.measured];
          } catch (error) {
            serverMissing = `llama-server failed in round ${rep}: ${firstLine(error)}`;
            log(`llama-server failed in round ${rep}: ${(error as Error).message.slice(-2000)}`);
            await server.close();
            server = undefined;
            measured.server = [];
            continue;
          }
        } else {
          const result = await workerOf(variant).run(variant);
          plan ??= result.plan;
          answers[variant] ??= result.answers;
          runs = result.runs;
        }
        measured[variant].push(...runs);
        log(`rep ${rep}/${opts.reps} ${variant.padEnd(9)} ${runs.map((r) => seconds(r.totalMs)).join(', ')}`);
      }
    }
  } finally {
    floor.close();
    for (const worker of Object.values(workers)) worker.close();
    prebuiltWorker?.close();
    await server?.close();
  }
  const measureMs = performance.now() - phase;

  const med = Object.fromEntries(Object.entries(measured).filter(([, runs]) => runs.length > 0).map(([variant, runs]) => [variant, medianStages(runs.map(stages))])) as Record<Exclude<Variant, 'prebuilt' | 'server'>, Stages> & { prebuilt?: Stages; server?: Stages };
  const modelBytes = (await stat(files.model)).size;
  const mmprojBytes = (await stat(files.mmproj)).size;
  const kvBytes = await kvCacheBytes(files.model, ready.contextSize);
  const rssBudgetKb = ((modelBytes + mmprojBytes + kvBytes) * 1.15) / 1024;
  const askWorkerPeakKb = Math.max(...measured.ask.map((m) => m.peakRssKb), ...measured.further.map((m) => m.peakRssKb));
  const total = (variant: Exclude<Variant, 'prebuilt' | 'server'>): number => med[variant].totalMs;
  const ratio = (value: number): string => value.toFixed(3);

  const floorRatio = total('ask') / total('floor');
  const recomputeRatio = total('recompute') / total('ask');
  const plainRatio = total('ask') / total('plain');
  const furtherRatio = median(measured.further.map((m) => m.totalMs)) / total('ask');
  const prebuiltRatio = med.prebuilt ? med.prebuilt.totalMs / total('ask') : null;
  const serverRatio = med.server ? total('ask') / med.server.totalMs : null;
  const targets: Target[] = [
    {
      name: 'ask ÷ C++ floor',
      value: floorRatio,
      shown: ratio(floorRatio),
      goal: '≤ 1.05',
      met: floorRatio <= 1.05,
      note: `without our image prep: ${ratio((total('ask') - med.ask.preprocessMs) / total('floor'))}`,
    },
    { name: 'reference recompute ÷ ask', value: recomputeRatio, shown: ratio(recomputeRatio), goal: '≥ 1.4', met: recomputeRatio >= 1.4, note: '' },
    { name: 'ask ÷ single plain turn', value: plainRatio, shown: ratio(plainRatio), goal: 'report', met: null, note: '' },
    { name: 'further question ÷ first', value: furtherRatio, shown: ratio(furtherRatio), goal: '≤ 0.6', met: furtherRatio <= 0.6, note: 'E ÷ A' },
    {
      name: 'peak RSS, ask worker',
      value: askWorkerPeakKb / rssBudgetKb,
      shown: gb(askWorkerPeakKb),
      goal: `≤ ${gb(rssBudgetKb)}`,
      met: askWorkerPeakKb <= rssBudgetKb,
      note: `weights ${gb((modelBytes + mmprojBytes) / 1024)} + KV ${gb(kvBytes / 1024)}, + 15%`,
    },
    {
      name: 'prebuilt ÷ native build',
      value: prebuiltRatio,
      shown: prebuiltRatio === null ? '-' : ratio(prebuiltRatio),
      goal: '≤ 1.10',
      met: prebuiltRatio === null ? undefined : prebuiltRatio <= 1.1,
      note: prebuilt && native ? `F ÷ A; ${path.basename(prebuilt.path)}` : 'needs `npm run prebuild` and a local build (CPU only)',
    },
    {
      name: 'ask ÷ llama-server cached two-turn',
      value: serverRatio,
      shown: serverRatio === null ? '-' : ratio(serverRatio),
      goal: '≤ 1',
      met: serverRatio === null ? undefined : serverRatio <= 1,
      note: med.server
        ? `A ÷ G; without our image prep: ${ratio((total('ask') - med.ask.preprocessMs) / med.server.totalMs)}; ` +
          `G's turn 2 took ${serverCache[0]!.cached} of its ${serverCache[0]!.prompt} prompt tokens from the cache; ` +
          `G's box ${answers.server?.[0]?.trim() === answers.ask?.[0]?.trim() ? 'is' : 'is NOT'} A's`
        : serverMissing,
    },
  ];

  const rows = [
    { label: 'A ask (cache kept between turns)', stages: med.ask },
    { label: 'B reference: turn 2 from scratch', stages: med.recompute },
    { label: 'C one plain LLaVA turn', stages: med.plain },
    { label: 'D llama.cpp floor, C++ (*)', stages: med.floor },
    { label: 'E 2nd/3rd question, image open', stages: med.further },
    ...(med.prebuilt ? [{ label: 'F A on the prebuilt CPU binary', stages: med.prebuilt }] : []),
    ...(med.server ? [{ label: 'G llama-server, cached two-turn (†)', stages: med.server }] : []),
  ];
  const loadEnd = loadavg();
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const header = [
    `chain-of-spot bench: shape ${opts.shape} (${path.basename(files.model)} ${gb(modelBytes / 1024)}, mmproj ${gb(mmprojBytes / 1024)}), ` +
      `${backend.backend}, ${opts.threads} threads, ${opts.reps} reps, ${opts.answerTokens}-token answers`,
    `${cpu}, ${cpus().length} CPUs, load average ${loadStart[0]!.toFixed(2)} at start, ${loadEnd[0]!.toFixed(2)} at end` +
      // ggml's threads spin at every barrier: one of them preempted stalls all, so sharing the CPUs distorts every number.
      (loadStart[0]! > 0.5 ? ' (WARNING: other processes were using the CPUs; timings are not reliable)' : ''),
    `image ${path.basename(opts.image)}; question "${QUESTION}"; further questions ${FURTHER_QUESTIONS.map((q) => `"${q}"`).join(', ')}`,
  ].join('\n');
  const footer = [
    '(*) the floor replays A\'s plan: the same token ids, images and token counts, greedy, one llama_decode per generated',
    '    token: plain llama.cpp has no grammar-forced batching (A decodes the tokens the box grammar forces together).',
    'Medians per column; "other" is the total less the columns before it (tokenizing, mtmd image preparation, JS and N-API).',
    ...(med.server
      ? [
          '(†) G: llama-server over 127.0.0.1, two /completion requests (turn one cold, turn two served from its prompt cache),',
          '    A\'s two prepared images sent as PPM; its own timings: "prompt" includes the image encoder and image tokens,',
          '    "other" is HTTP, JSON, base64 and image decoding and its bookkeeping.',
        ]
      : []),
    'Peak RSS is each process\'s own (A and E share one), models included.',
    `Took ${seconds(performance.now() - runStart)}: models ${seconds(modelMs)}, floor build ${seconds(buildMs)}` +
      `${serverBuildMs === undefined ? '' : `, llama-server build ${seconds(serverBuildMs)}`}, loading ${seconds(loadMs)}, measuring ${seconds(measureMs)}.`,
  ].join('\n');
  process.stdout.write(`\n${header}\n\n${renderTable(rows, targets)}\n\n${footer}\n`);

  await mkdir(path.dirname(opts.out), { recursive: true });
  await writeFile(
    opts.out,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        options: opts,
        environment: { cpu, cpus: cpus().length, loadAverageStart: loadStart, loadAverageEnd: loadEnd, node: process.version, backend },
        models: { ...files, modelBytes, mmprojBytes, kvBytes, contextSize: ready.contextSize, batchSize: ready.batchSize },
        questions: { question: QUESTION, further: FURTHER_QUESTIONS },
        answers,
        durationsMs: { models: modelMs, floorBuild: buildMs, serverBuild: serverBuildMs, loading: loadMs, measuring: measureMs },
        // One process's model loading, ours against llama.cpp's (both warm up the image encoder).
        loadMs: { ask: ready.loadMs, floor: floorLoadMs, server: serverLoadMs },
        serverCache,
        medians: med,
        targets,
        plan,
        measured,
      },
      null,
      2,
    )}\n`,
  );
  log(`results written to ${path.relative(process.cwd(), opts.out)}`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
