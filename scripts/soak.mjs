#!/usr/bin/env node
/**
 * Soak test: load and dispose chain-of-spot many times, then ask one instance many questions, and
 * check that the process's memory (RSS) stays flat after a warm-up.
 *
 *   node scripts/soak.mjs [--loads 100] [--asks 1000] [--warmup-loads 30] [--warmup-asks 100]
 *                         [--max-growth-pct 5] [--model fast|336] [--threads 1] [--json]
 *                         [--system-malloc]
 *
 * Phase 1 loads the tiny LLaVA pair, asks one question and disposes, `--loads` times; phase 2 asks
 * one instance `--asks` questions, cycling through images given as paths, encoded bytes and raw
 * pixels, with an aborted question every 10th and an undecodable image every 25th, so that the
 * error paths run too.
 *
 * RSS is sampled (after full garbage collections) about 40 times per phase, after its warm-up. The
 * growth is the lowest RSS in the last quarter of the samples minus the lowest in the first
 * quarter: a leak raises the floor steadily, while the sawtooth of the pixel worker thread's own
 * heap (which the main thread's gc() does not collect) only moves the peaks. The slope of the
 * samples is printed too.
 *
 * Unless `--system-malloc` is given, the script runs itself again with glibc's malloc made
 * predictable (MALLOC_ARENA_MAX=1, MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 128 KiB):
 * with the defaults, memory that llama.cpp frees stays in per-thread arenas and the mmap threshold
 * rises after large frees, so RSS creeps up over the first hundred loads for reasons that are not
 * leaks. (The variables mean nothing to other allocators, which then measure as they are.)

 * Exit status: 0 when neither phase grew RSS by more than `--max-growth-pct` percent of the RSS
 * measured after its warm-up; 1 otherwise. Built files are used: run `npx tsc -p tsconfig.json` first.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist', 'lib');
const FIXTURE_IMAGES = path.join(ROOT, 'test', 'fixtures', 'images');

function parseArgs(argv) {
  const args = { loads: 100, asks: 1000, warmupLoads: 30, warmupAsks: 100, maxGrowthPct: 5, model: 'fast', threads: 1, json: false, systemMalloc: false };
  const numeric = { '--loads': 'loads', '--asks': 'asks', '--warmup-loads': 'warmupLoads', '--warmup-asks': 'warmupAsks', '--max-growth-pct': 'maxGrowthPct', '--threads': 'threads' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a in numeric) {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a} needs a number`);
      args[numeric[a]] = v;
    } else if (a === '--model') args.model = argv[++i];
    else if (a === '--json') args.json = true;
    else if (a === '--system-malloc') args.systemMalloc = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: node scripts/soak.mjs [--loads N] [--asks N] [--warmup-loads N] [--warmup-asks N] [--max-growth-pct P] [--model fast|336] [--threads N] [--json] [--system-malloc]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (args.model !== 'fast' && args.model !== '336') throw new Error('--model must be fast or 336');
  return args;
}

// A full collection on demand, without needing node --expose-gc.
setFlagsFromString('--expose-gc');
const gc = globalThis.gc ?? runInNewContext('gc');

/** RSS in MiB after full collections, once the finalizers of freed objects have run. */
async function settledRss() {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return process.memoryUsage().rss / 2 ** 20;
}

/** The least-squares slope of `ys` over their index. */
function slope(ys) {
  const n = ys.length;
  if (n < 2) return 0;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  });
  return num / den;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { ChainOfSpot } = require(path.join(DIST, 'index.js'));
  const { ensureTinyLlava, TINY_LLAVA, TINY_LLAVA_FAST } = require(path.join(DIST, 'models/tiny-model.js'));
  const sharp = require('sharp');
  const pair = await ensureTinyLlava(path.join(ROOT, '.cache', 'models'), args.model === 'fast' ? TINY_LLAVA_FAST : TINY_LLAVA);
  const options = { model: pair.model, mmproj: pair.mmproj, threads: args.threads };
  const log = (line) => {
    if (!args.json) console.log(line);
  };

  const cat = path.join(FIXTURE_IMAGES, 'chelsea.png');
  const coffee = path.join(FIXTURE_IMAGES, 'coffee.png');
  const rocketBytes = await readFile(path.join(FIXTURE_IMAGES, 'rocket.jpg'));
  const raw = await sharp(path.join(FIXTURE_IMAGES, 'astronaut.png')).resize(200, 150).raw().toBuffer({ resolveWithObject: true });
  const rawImage = { data: raw.data, width: raw.info.width, height: raw.info.height, channels: raw.info.channels };
  const images = [cat, coffee, rocketBytes, rawImage];
  const broken = Buffer.from('not an image at all');

  const phases = [];
  const measure = async (name, total, warmup, step) => {
    const every = Math.max(1, Math.floor(total / 40));
    const samples = [];
    const started = performance.now();
    for (let i = 0; i < warmup + total; i++) {
      await step(i);
      if (i >= warmup - 1 && (i - warmup + 1) % every === 0) samples.push(await settledRss());
    }
    samples.push(await settledRss());
    const quarter = Math.max(1, Math.floor(samples.length / 4));
    const baseline = Math.min(...samples.slice(0, quarter));
    const end = Math.min(...samples.slice(-quarter));
    const growth = end - baseline;
    const phase = {
      name,
      iterations: total,
      warmup,
      baselineMB: round(baseline),
      endMB: round(end),
      peakMB: round(Math.max(...samples)),
      growthMB: round(growth),
      growthPct: round((growth / baseline) * 100),
      slopeKBPerIteration: round((slope(samples) * 1024) / every),
      seconds: round((performance.now() - started) / 1000),
    };
    phases.push(phase);
    log(
      `${name}: ${total} after ${warmup} warm-up; RSS floor ${phase.baselineMB} MB -> ${phase.endMB} MB ` +
        `(${phase.growthMB >= 0 ? '+' : ''}${phase.growthMB} MB, ${phase.growthPct}%), peak ${phase.peakMB} MB, ` +
        `slope ${phase.slopeKBPerIteration} KB per iteration, ${phase.seconds} s`,
    );
  };

  // Phase 1: load, ask once, dispose.
  await measure('load/ask/dispose', args.loads, args.warmupLoads, async (i) => {
    const cos = await ChainOfSpot.load(options);
    try {
      await cos.ask(images[i % images.length], `Load ${i}: what is it?`, { maxTokens: 8 });
    } finally {
      await cos.dispose();
    }
  });

  // Phase 2: many questions on one instance, with aborts and bad images among them.
  const cos = await ChainOfSpot.load(options);
  const outcomes = { answered: 0, aborted: 0, rejectedImage: 0 };
  await measure('ask', args.asks, args.warmupAsks, async (i) => {
    if (i % 25 === 24) {
      try {
        await cos.ask(broken, 'Broken?');
      } catch (error) {
        if (error.code !== 'ERR_IMAGE') throw error;
        outcomes.rejectedImage++;
      }
      return;
    }
    const controller = new AbortController();
    const abort = i % 10 === 9;
    try {
      await cos.ask(images[i % images.length], `Question ${i % 7}: what is in the picture?`, {
        signal: controller.signal,
        onText: abort ? (_text, turn) => turn === 2 && controller.abort() : undefined,
      });
      outcomes.answered++;
    } catch (error) {
      if (!(abort && error.code === 'ERR_ABORTED')) throw error;
      outcomes.aborted++;
    }
  });
  await cos.dispose();

  const failed = phases.filter((p) => p.growthPct > args.maxGrowthPct);
  const malloc = process.env.MALLOC_ARENA_MAX === '1' ? 'predictable glibc malloc' : 'system malloc';
  const summary = { model: args.model, malloc, maxGrowthPct: args.maxGrowthPct, phases, outcomes, passed: failed.length === 0 };
  if (args.json) console.log(JSON.stringify(summary));
  else {
    log(`(${malloc}) asks: ${outcomes.answered} answered, ${outcomes.aborted} aborted, ${outcomes.rejectedImage} bad images rejected`);
    log(failed.length === 0 ? `OK: RSS grew by at most ${args.maxGrowthPct}% in each phase` : `FAIL: RSS grew by more than ${args.maxGrowthPct}% in ${failed.map((p) => p.name).join(', ')}`);
  }
  return failed.length === 0 ? 0 : 1;
}

function round(x) {
  return Math.round(x * 100) / 100;
}

const PREDICTABLE_MALLOC = { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '131072' };
const argv = process.argv.slice(2);
if (!argv.includes('--system-malloc') && process.env.MALLOC_ARENA_MAX === undefined) {
  const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...argv], {
    stdio: 'inherit',
    env: { ...process.env, ...PREDICTABLE_MALLOC },
  });
  process.exitCode = child.status ?? 1;
} else {
  process.exitCode = await main();
}
