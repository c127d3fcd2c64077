/**
 * How users import the package: `require` and `import` both work, with types, through the package's
 * "exports" map, and nothing but the entry point (and package.json) is importable.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { REPO_ROOT } from '../support/paths';

describe('the package entry point', function () {
  this.timeout(120_000);
  let app: string;

  /** Runs node in the consumer project; resolves to its exit status, stdout and stderr. */
  const node = (args: string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, args, { cwd: app, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  before(async () => {
    app = await mkdtemp(path.join(tmpdir(), 'cos-exports-'));
    await mkdir(path.join(app, 'node_modules'));
    await symlink(REPO_ROOT, path.join(app, 'node_modules', 'chain-of-spot'), 'dir');
    await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  });
  after(async () => rm(app, { recursive: true, force: true }));

  it('works with require() (CommonJS: no top-level await anywhere)', () => {
    const r = node(['-e', "const m = require('chain-of-spot'); console.log(typeof m.ChainOfSpot, typeof m.ChainOfSpotError, typeof m.parseBox)"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'function function function');
  });

  it('works with import, named exports included', () => {
    const r = node(['--input-type=module', '-e', "import { ChainOfSpot, formatBox } from 'chain-of-spot'; import cos from 'chain-of-spot'; console.log(typeof ChainOfSpot, formatBox({ left: 0, top: 0.5, right: 1, bottom: 1 }), cos.ChainOfSpot === ChainOfSpot)"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'function [0.0, 0.5, 1.0, 1.0] true');
  });

  it('keeps internal modules private', () => {
    for (const internal of ['chain-of-spot/dist/lib/llama/model.js', 'chain-of-spot/dist/lib/index.js', 'chain-of-spot/lib/index']) {
      const r = node(['-e', `try { require(${JSON.stringify(internal)}); } catch (e) { console.log(e.code); }`]);
      assert.equal(r.stdout.trim(), 'ERR_PACKAGE_PATH_NOT_EXPORTED', internal);
    }
    const r = node(['-e', "console.log(require('chain-of-spot/package.json').name)"]);
    assert.equal(r.stdout.trim(), 'chain-of-spot');
  });

  it('has types for both module systems', async () => {
    await writeFile(path.join(app, 'cjs.cts'), "import cos = require('chain-of-spot');\nconst load: typeof cos.ChainOfSpot.load = cos.ChainOfSpot.load;\nexport { load };\n");
    await writeFile(path.join(app, 'esm.mts'), "import { ChainOfSpot, type AskResult } from 'chain-of-spot';\nexport const answer = (r: AskResult): string => r.answer;\nexport const load = ChainOfSpot.load;\n");
    await writeFile(path.join(app, 'bad.mts'), "import { ChainOfSpot } from 'chain-of-spot';\nexport const n: number = ChainOfSpot.load;\n");
    const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const flags = ['--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(REPO_ROOT, 'node_modules', '@types')];
    const good = node([tsc, ...flags, 'cjs.cts', 'esm.mts']);
    assert.equal(good.status, 0, good.stdout + good.stderr);
    // The types are really read: a wrong use is an error.
    const bad = node([tsc, ...flags, 'bad.mts']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout, /bad\.mts.*not assignable to type 'number'/);
  });
});
