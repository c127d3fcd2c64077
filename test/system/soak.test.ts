/**
 * A short soak (scripts/soak.mjs runs the long one): after a warm-up, loading and disposing, and
 * asking many questions, keep the process's RSS flat.
 */
import assert from 'node:assert/strict';
import path from 'node:path';

import { describeChild, runNode } from '../support/child';
import { REPO_ROOT } from '../support/paths';

interface SoakSummary {
  phases: { name: string; iterations: number; baselineMB: number; endMB: number; growthMB: number; growthPct: number; slopeKBPerIteration: number; seconds: number }[];
  outcomes: { answered: number; aborted: number; rejectedImage: number };
  passed: boolean;
}

describe('Soak (short run of scripts/soak.mjs)', () => {
  it('20 loads and 100 asks after a warm-up: RSS grows by under 5% in each phase', async function () {
    this.timeout(170_000);
    const outcome = await runNode(
      [path.join(REPO_ROOT, 'scripts', 'soak.mjs'), '--json', '--loads', '20', '--warmup-loads', '30', '--asks', '100', '--warmup-asks', '60', '--max-growth-pct', '5'],
      { timeoutMs: 160_000, nodeFlags: ['--expose-gc'] },
    );
    assert.ok(!outcome.timedOut && outcome.signal === null, describeChild(outcome));
    const summary = JSON.parse(outcome.stdout.trim().split('\n').at(-1) ?? '') as SoakSummary;
    for (const p of summary.phases) {
      console.log(`      ${p.name}: ${p.iterations} after warm-up, RSS ${p.baselineMB} -> ${p.endMB} MB (${p.growthPct}%), ${p.seconds} s`);
    }
    assert.deepEqual(summary.phases.map((p) => p.iterations), [20, 100]);
    assert.ok(summary.outcomes.aborted > 0 && summary.outcomes.rejectedImage > 0, JSON.stringify(summary.outcomes));
    for (const p of summary.phases) assert.ok(p.growthPct < 5, `${p.name}: RSS grew ${p.growthMB} MB (${p.growthPct}%)`);
    assert.equal(summary.passed, true);
    assert.equal(outcome.code, 0);
  });
});
