/**
 * The files that killed the process (test/unit/gguf-cases.ts's CRASHING), loaded through llama.cpp
 * in child processes: through the public API each must give its coded error and leave the child
 * alive; a few are also loaded with the header check skipped, to show the crash it stands for.
 * Needs the native addon and the tiny models.
 */
import assert from 'node:assert/strict';
import path from 'node:path';

import type { GgufRole } from '../../lib/gguf/check';
import { assertExited, describeChild, resultOf, runScript } from '../support/child';
import { tinyLlavaFast } from '../support/models';
import { base, caseFolder, CRASHING, FOREIGN_LAYOUTS, writeForeignMmproj, type Base, type BaseName } from '../unit/gguf-cases';

/**
 * Child script: loads each case through Model.load / Model.loadProjector and uses what loads
 * (a session, an evaluation, a generated token; an encoded image), printing MARK lines so that a
 * crash can be pinned on its case. With COS_SKIP_CHECK=1 it replaces checkGguf by a no-op first,
 * as a build without the check would be.
 */
const LOAD_AND_USE = `
const check = require(process.env.COS_DIST + '/gguf/check.js');
// Skipped: a summary with nothing in it, as the loaders read it (no metadata, so no deepstack).
if (process.env.COS_SKIP_CHECK === '1') check.checkGguf = async () => ({ metadata: new Map() });
const { Model } = require(process.env.COS_DIST + '/index.js');
const [goodModel, casesJson] = process.argv.slice(1).filter((a) => a !== '--');
const cases = JSON.parse(casesJson);
(async () => {
  const good = await Model.load(goodModel);
  const results = [];
  for (const [i, c] of cases.entries()) {
    console.log('MARK case-' + i);
    try {
      if (c.role === 'text-model') {
        const model = await Model.load(c.file);
        const session = await model.createSession({ contextSize: 64, threads: 1 });
        await session.evaluate('Hello world', { addBos: true });
        await session.generate({ maxTokens: 2 });
        await model.dispose();
      } else {
        const projector = await good.loadProjector(c.file, { threads: 1 });
        const size = projector.info.imageSize;
        const session = await good.createSession({ contextSize: 512, threads: 1 });
        await session.evaluateImage(projector, { data: new Uint8Array(size * size * 3).fill(99), width: size, height: size });
        await session.dispose();
        await projector.dispose();
      }
      results.push({ what: c.what, code: null, message: 'loaded and ran' });
    } catch (error) {
      results.push({ what: c.what, code: error.code ?? null, message: String(error.message).slice(0, 300) });
    }
  }
  await good.dispose();
  console.log('RESULT ' + JSON.stringify(results));
})();
`;

interface Outcome {
  what: string;
  code: string | null;
  message: string;
}

describe('GGUF files that crashed llama.cpp, loaded in child processes', () => {
  const { path: folder, write } = caseFolder('cos-gguf-crash-');
  let model: string;
  const bases = new Map<BaseName, Base>();

  before(async () => {
    const pair = await tinyLlavaFast();
    model = pair.model;
    bases.set('model', await base(pair.model)).set('mmproj', await base(pair.mmproj));
    for (const layout of FOREIGN_LAYOUTS) {
      const file = path.join(folder(), `${layout}-mmproj.gguf`);
      await writeForeignMmproj(pair.mmproj, file, layout);
      bases.set(layout, await base(file));
    }
  });

  it("the mmproj in other writers' layouts loads and encodes an image", async function () {
    this.timeout(120_000);
    const cases = FOREIGN_LAYOUTS.map((layout) => ({ file: bases.get(layout)!.path, role: 'projector', what: layout }));
    const outcome = await runScript(LOAD_AND_USE, [model, JSON.stringify(cases)], { timeoutMs: 110_000 });
    assertExited(outcome);
    for (const r of resultOf<Outcome[]>(outcome)) assert.equal(r.code, null, `${r.what}: ${r.message}`);
  });

  it('each crashing case through the public API gives the coded error, in a child process that survives', async function () {
    this.timeout(180_000);
    const cases: { file: string; role: GgufRole; what: string }[] = [];
    for (const c of CRASHING) cases.push({ file: await write(c.edit(bases.get(c.base)!)), role: c.role, what: c.what });
    const outcome = await runScript(LOAD_AND_USE, [model, JSON.stringify(cases)], { timeoutMs: 170_000 });
    const last = [...outcome.stdout.matchAll(/^MARK case-(\d+)$/gm)].at(-1)?.[1];
    assertExited(outcome);
    const results = resultOf<Outcome[]>(outcome);
    assert.equal(results.length, cases.length, `${describeChild(outcome)} (last case started: ${last})`);
    for (const [i, r] of results.entries()) {
      assert.equal(r.code, cases[i]!.role === 'projector' ? 'ERR_PROJECTOR_LOAD' : 'ERR_MODEL_LOAD', `${r.what}: ${r.code} ${r.message}`);
    }
  });

  // Issue 11 §3, reproduced: without the check, each of these kills its process.
  for (const c of CRASHING.filter((x) => x.reproduce)) {
    it(`with the check skipped, llama.cpp kills the process: ${c.what}`, async function () {
      this.timeout(60_000);
      const file = await write(c.edit(bases.get(c.base)!));
      const outcome = await runScript(LOAD_AND_USE, [model, JSON.stringify([{ file, role: c.role, what: c.what }])], {
        timeoutMs: 50_000,
        env: { COS_SKIP_CHECK: '1' },
      });
      assert.ok(!outcome.timedOut, describeChild(outcome));
      assert.ok(outcome.signal !== null, `expected the child to die of a signal: ${describeChild(outcome)}`);
      assert.ok(outcome.marks.has('case-0'), 'it died on the case, not before');
    });
  }
});
