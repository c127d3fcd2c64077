/**
 * The side-by-side benchmark's harness (bench/), as `npm run bench -- --shape tiny` runs it: two
 * rounds on the tiny pair, every variant this machine can run completing and the table printed,
 * and the C++ floor replaying A's exact work in every round. No timing is asserted: speed is the
 * benchmark's to report, not the tests'.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import { buildFloor, checkReplay, FloorProcess } from '../../bench/floor';
import type { Measured, PlanStep } from '../../bench/protocol';
import { assertExited, runNode } from '../support/child';
import { REPO_ROOT } from '../support/paths';

const ROUNDS = 2;
/** The tiny pair's images are LLaVA-1.5's 336 pixels: (336 / 14)² = 576 tokens each. */
const IMAGE_TOKENS = 576;

/** What the bench writes to its --out file (the parts these tests read). */
interface BenchJson {
  models: { model: string; mmproj: string; contextSize: number; batchSize: number };
  measured: Record<string, Measured[]>;
  plan: PlanStep[];
}

/** The sequence's length at the end of each turn, worked out from what the plan adds and cuts. */
function expectedTurnEnds(plan: PlanStep[]): number[] {
  let position = 0;
  const ends: number[] = [];
  for (const step of plan) {
    if (step.op === 'clear') position = 0;
    else if (step.op === 'truncate') position = Math.min(position, step.position);
    else if (step.op === 'tokens') position += step.ids.length;
    else if (step.op === 'image') position += IMAGE_TOKENS;
    else {
      position += step.n;
      ends.push(position);
    }
  }
  return ends;
}

function turnEnds(run: Measured): (number | undefined)[] {
  return run.steps.filter((step) => step.op === 'generate').map((step) => step.position);
}

/** Whether `npm run prebuild` left a CPU binary for this platform beside a local build (the bench's F). */
function prebuiltExpected(): boolean {
  const dir = path.join(REPO_ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  return existsSync(path.join(REPO_ROOT, 'build', 'Release', 'chain_of_spot.node')) && existsSync(dir) && readdirSync(dir).some((name) => name.endsWith('.node'));
}

describe('npm run bench -- --shape tiny (the harness, not its speed)', function () {
  this.timeout(10 * 60_000);
  let cpu = true;
  let floorBinary = '';
  let outDir = '';
  let bench: BenchJson | undefined;

  before(async function () {
    // The builds the bench would start itself, here so that a first one (many minutes) is not the smoke run's.
    this.timeout(50 * 60_000);
    cpu = ChainOfSpot.backend().backend === 'cpu';
    floorBinary = await buildFloor(ChainOfSpot.backend().path);
    if (cpu) assertExited(await runNode([path.join(REPO_ROOT, 'scripts', 'build-llama-server.mjs')], { timeoutMs: 50 * 60_000 }));
    outDir = await mkdtemp(path.join(tmpdir(), 'cos-bench-'));
  });

  after(async () => {
    if (outDir) await rm(outDir, { recursive: true, force: true });
  });

  it(`runs ${ROUNDS} rounds of every variant here to the end and prints the table; the floor's turns end where A's did`, async () => {
    const out = path.join(outDir, 'bench.json');
    const run = await runNode([path.join(REPO_ROOT, 'dist', 'bench', 'run.js'), '--shape', 'tiny', '--reps', String(ROUNDS), '--threads', '1', '--out', out], {
      timeoutMs: 9 * 60_000,
    });
    assertExited(run);
    bench = JSON.parse(await readFile(out, 'utf8')) as BenchJson;

    // F and G run on the CPU backend only; F also needs `npm run prebuild`'s binary beside a local build.
    const prebuilt = cpu && prebuiltExpected();
    const expected: [string, string, number][] = [
      ['ask', 'A ask', ROUNDS],
      ['recompute', 'B reference', ROUNDS],
      ['plain', 'C one plain', ROUNDS],
      ['floor', 'D llama.cpp floor', ROUNDS],
      ['further', 'E 2nd/3rd question', 2 * ROUNDS], // two further questions a round
      ['prebuilt', 'F A on the prebuilt', prebuilt ? ROUNDS : 0],
      ['server', 'G llama-server', cpu ? ROUNDS : 0],
    ];
    for (const [variant, label, count] of expected) {
      assert.equal(bench.measured[variant]?.length, count, `${variant}: ${count} runs expected\n${run.stderr.slice(-2000)}`);
      const row = run.stdout.split('\n').find((line) => line.startsWith(label));
      if (count === 0) assert.equal(row, undefined, `${variant} did not run, yet the table has its row`);
      else assert.match(row ?? '', /\d(\.\d+)? (ms|s)\s+\d+\.\d\d GB$/, `${label}: a row ending in a total and a peak RSS`);
    }
    for (const target of ['ask ÷ C++ floor', 'reference recompute ÷ ask', 'further question ÷ first', 'peak RSS, ask worker']) {
      const row = run.stdout.split('\n').find((line) => line.startsWith(target));
      assert.match(row?.slice(target.length) ?? '', /^\s+\d+\.\d+/, `the target "${target}" with its value`);
    }

    // The plan starts on a cleared cache and keeps where A's turns ended; the floor ends there in every round.
    assert.equal(bench.plan[0]?.op, 'clear');
    const ends = expectedTurnEnds(bench.plan);
    assert.equal(ends.length, 2, 'two turns');
    assert.deepEqual(turnEnds(bench.measured.ask![0]!), ends);
    for (const replay of bench.measured.floor!) assert.deepEqual(turnEnds(replay), ends);
  });

  it("the floor replays a plan from an empty cache whatever it holds, and a replay that is not A's work is refused", async () => {
    assert.ok(bench, "this test replays the smoke run's plan, and that run failed");
    const { floor } = await FloorProcess.start(floorBinary, {
      model: bench.models.model,
      mmproj: bench.models.mmproj,
      nCtx: bench.models.contextSize,
      nBatch: bench.models.batchSize,
      threads: 1,
      gpuLayers: cpu ? 0 : -1,
      projectorGpu: true,
    });
    try {
      // Without A's clear and truncate(0): each replay still starts from nothing (two questions would not fit the context).
      const plan = bench.plan.filter((step) => step.op !== 'clear' && step.op !== 'truncate');
      for (let round = 1; round <= 2; round++) checkReplay(plan, await floor.run(plan), round);

      // One answer token fewer, A's positions kept: the floor's work is no longer A's.
      const turnTwo = plan.findLast((step) => step.op === 'generate')!;
      const other = plan.map((step) => (step === turnTwo ? { ...turnTwo, n: turnTwo.n - 1 } : step));
      const replay = await floor.run(other);
      assert.throws(() => checkReplay(other, replay, 3), /the C\+\+ floor did not replay A's work in round 3: .* held \d+, \d+ tokens where A's held \d+, \d+; no floor is reported/);
    } finally {
      floor.close();
    }
  });
});
