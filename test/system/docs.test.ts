import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir, readFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../../..');

async function files(dir: string, prefix = ''): Promise<string[]> {
  const entries = await readdir(path.join(dir, prefix), { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((entry) => (entry.isDirectory() ? files(dir, path.join(prefix, entry.name)) : [path.join(prefix, entry.name)])),
  );
  return nested.flat().sort();
}

describe('the API reference (docs/api)', function () {
  this.timeout(120_000);

  it('is what TypeDoc generates from the sources now, without warnings', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'cos-docs-'));
    try {
      const typedoc = path.join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc');
      const run = spawnSync(process.execPath, [typedoc, '--out', out], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(run.status, 0, `typedoc failed (run \`npm run docs\` and fix its warnings):\n${run.stdout}${run.stderr}`);
      const committed = path.join(ROOT, 'docs', 'api');
      assert.deepEqual(await files(out), await files(committed), 'the set of pages differs: run `npm run docs` and commit docs/api');
      for (const file of await files(out)) {
        const [fresh, current] = await Promise.all([readFile(path.join(out, file), 'utf8'), readFile(path.join(committed, file), 'utf8')]);
        assert.equal(current, fresh, `docs/api/${file} is stale: run \`npm run docs\` and commit docs/api`);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
