/**
 * Short runs of scripts/fuzz.mjs (the long runs are the script's job): mutated GGUF files and
 * images through the public API, in child processes, must each succeed or reject with a coded
 * error; none may kill its process.
 */
import assert from 'node:assert/strict';
import path from 'node:path';

import { describeChild, runNode } from '../support/child';
import { REPO_ROOT } from '../support/paths';

interface FuzzSummary {
  kind: string;
  seed: number;
  cases: number;
  ok: number;
  rejected: number;
  crashes: number;
  hangs: number;
  badErrors: number;
  codes: Record<string, number>;
  /** Outcomes by the file a case mutated. */
  bases: Record<string, { ok: number; rejected: number; failed: number }>;
  childProcesses: number;
  seconds: number;
  failures: { index: number; outcome: string; signal?: string | null; what: string; message?: string; replay: string }[];
}

const FUZZ = path.join(REPO_ROOT, 'scripts', 'fuzz.mjs');

async function fuzz(args: string[], timeoutMs: number): Promise<{ summary: FuzzSummary; code: number | null }> {
  const outcome = await runNode([FUZZ, '--json', ...args], { timeoutMs });
  assert.ok(!outcome.timedOut && outcome.signal === null, describeChild(outcome));
  const line = outcome.stdout.trim().split('\n').at(-1) ?? '';
  let summary: FuzzSummary;
  try {
    summary = JSON.parse(line) as FuzzSummary;
  } catch {
    assert.fail(`the fuzzer printed no summary: ${describeChild(outcome)}`);
  }
  return { summary, code: outcome.code };
}

function report(summary: FuzzSummary): string {
  return summary.failures.map((f) => `${f.outcome} ${f.signal ?? ''} case ${summary.seed}:${f.index} (${f.what}): ${f.message ?? ''}\n  ${f.replay}`).join('\n');
}

describe('Fuzzing (short runs of scripts/fuzz.mjs)', () => {
  it('500 mutated GGUF files of the LLaVA pair: each loads or is rejected with ERR_MODEL_LOAD / ERR_PROJECTOR_LOAD; no crash', async function () {
    this.timeout(170_000);
    const { summary, code } = await fuzz(['--kind', 'gguf', '--seed', '1', '--cases', '500', '--bases', 'model,mmproj,legacy,surgery'], 160_000);
    assert.equal(summary.crashes + summary.hangs + summary.badErrors, 0, report(summary));
    assert.equal(code, 0);
    assert.equal(summary.ok + summary.rejected, 500);
    // The mutations reach both roles and both outcomes.
    assert.ok(summary.codes.ERR_MODEL_LOAD! > 30 && summary.codes.ERR_PROJECTOR_LOAD! > 30, JSON.stringify(summary.codes));
    assert.ok(summary.ok > 30, `${summary.ok} cases loaded and ran`);
    // Our writer's pair and the mmproj as other writers lay it out (test/unit/gguf-cases.ts) are all mutated.
    for (const base of ['model', 'mmproj', 'legacy', 'surgery']) {
      const tally = summary.bases[base];
      assert.ok(tally && tally.ok > 5 && tally.rejected > 10, `${base}: ${JSON.stringify(tally)}`);
    }
    console.log(`      gguf: ${summary.ok} ok, ${summary.rejected} rejected, ${summary.crashes} crashes in ${summary.seconds} s`);
  });

  it("300 mutations of the mmproj in other writers' layouts (the legacy converter's, LLaVA-1.6 surgery's): no crash", async function () {
    this.timeout(170_000);
    const { summary, code } = await fuzz(['--kind', 'gguf', '--seed', '2', '--cases', '300', '--bases', 'legacy,surgery'], 160_000);
    assert.equal(summary.crashes + summary.hangs + summary.badErrors, 0, report(summary));
    assert.equal(code, 0);
    assert.deepEqual(Object.keys(summary.codes), ['ERR_PROJECTOR_LOAD']);
    assert.ok(summary.ok > 20 && summary.rejected > 100, `${summary.ok} ok, ${summary.rejected} rejected`);
    console.log(`      other layouts: ${summary.ok} ok, ${summary.rejected} rejected, ${summary.crashes} crashes in ${summary.seconds} s`);
  });

  it("400 mutations of the other families' tiny pairs (Qwen2.5-VL, Qwen3-VL, InternVL, Gemma 3): no crash", async function () {
    this.timeout(170_000);
    const bases = ['qwen25', 'qwen3', 'internvl', 'gemma3'].flatMap((family) => [`${family}-model`, `${family}-mmproj`]);
    const { summary, code } = await fuzz(['--kind', 'gguf', '--seed', '3', '--cases', '400', '--bases', bases.join(',')], 160_000);
    assert.equal(summary.crashes + summary.hangs + summary.badErrors, 0, report(summary));
    assert.equal(code, 0);
    for (const base of bases) {
      const tally = summary.bases[base];
      assert.ok(tally && tally.ok > 3 && tally.rejected > 10, `${base}: ${JSON.stringify(tally)}`);
    }
    console.log(`      families: ${summary.ok} ok, ${summary.rejected} rejected, ${summary.crashes} crashes in ${summary.seconds} s`);
  });

  it('100 mutated images: each is answered or rejected with ERR_IMAGE; no crash', async function () {
    this.timeout(170_000);
    const { summary, code } = await fuzz(['--kind', 'image', '--seed', '1', '--cases', '100'], 160_000);
    assert.equal(summary.crashes + summary.hangs + summary.badErrors, 0, report(summary));
    assert.equal(code, 0);
    assert.deepEqual(Object.keys(summary.codes), ['ERR_IMAGE']);
    assert.ok(summary.ok > 10 && summary.rejected > 10, `${summary.ok} ok, ${summary.rejected} rejected`);
    console.log(`      image: ${summary.ok} ok, ${summary.rejected} rejected, ${summary.crashes} crashes in ${summary.seconds} s`);
  });

  it('the harness records a crashing case with its seed and index, starts a new child and goes on', async function () {
    this.timeout(60_000);
    const { summary, code } = await fuzz(['--kind', 'gguf', '--seed', '7', '--cases', '6', '--crash-at', '2', '--precheck'], 50_000);
    assert.equal(code, 1, 'a crash makes the run fail');
    assert.equal(summary.crashes, 1);
    assert.equal(summary.failures[0]!.index, 2);
    assert.equal(summary.failures[0]!.signal, 'SIGABRT');
    assert.match(summary.failures[0]!.replay, /--replay 7:2$/);
    assert.equal(summary.childProcesses, 2, 'a second child took over');
    assert.equal(summary.ok + summary.rejected, 5, 'the cases after the crash ran');
  });
});
