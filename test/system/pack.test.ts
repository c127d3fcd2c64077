/**
 * The package as users get it: `npm pack`, installed offline into an empty folder with no compiler
 * on PATH, runs the demo on the prebuilt CPU binary.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import sharp from 'sharp';

import { supportedCpuLevels } from '../../lib/native/loader';

const ROOT = path.resolve(__dirname, '../../..');
const PREBUILDS = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);

function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { ...options, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(result.status, 0, `${command} ${args.join(' ')} failed:\n${result.stdout}\n${result.stderr}`);
  return result;
}

function which(name: string): string {
  return run('sh', ['-c', `command -v ${name}`], { cwd: ROOT }).stdout.trim();
}

describe('the npm package', function () {
  this.timeout(900_000);
  let work: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'cos-pack-'));
    // The tarball ships the prebuilt binaries; make the one for this CPU when none is there yet.
    if (!existsSync(PREBUILDS) || !readdirSync(PREBUILDS).some((f) => f.endsWith('.node'))) {
      const flags = run('sh', ['-c', "grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2"], { cwd: ROOT }).stdout.trim().split(/\s+/);
      run(process.execPath, [path.join(ROOT, 'scripts', 'prebuild.mjs'), supportedCpuLevels(new Set(flags))[0]!], { cwd: ROOT });
    }
  });
  after(async () => rm(work, { recursive: true, force: true }));

  it('packs, installs offline with no compiler, and runs the demo on the prebuilt CPU binary', async () => {
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], { cwd: ROOT }).stdout) as { filename: string; files: { path: string }[] }[];
    const contents = packed[0]!.files.map((f) => f.path);
    for (const expected of ['dist/lib/index.js', 'dist/lib/cli/main.js', 'dist/lib/image/pixel-worker.js', 'deps/llama.cpp/VENDORED.json', 'deps/llama.cpp.json', 'CMakeLists.txt']) {
      assert.ok(contents.includes(expected), `the tarball lacks ${expected}`);
    }
    assert.ok(contents.some((f) => f.startsWith(`prebuilds/${process.platform}-${process.arch}/`) && f.endsWith('.node')), 'the tarball ships a prebuild');
    assert.ok(!contents.some((f) => f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('build/')), 'no tests or local builds in the tarball');

    // An empty project whose PATH has node and npm, and no compiler, cmake or make.
    const app = path.join(work, 'app');
    const bin = path.join(work, 'bin');
    await mkdir(app);
    await mkdir(bin);
    for (const tool of ['node', 'npm', 'npx', 'sh']) await symlink(which(tool), path.join(bin, tool));
    await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: bin, CC: '/nonexistent/cc', CXX: '/nonexistent/c++', CHAIN_OF_SPOT_CACHE: path.join(work, 'cache') };
    delete env.CHAIN_OF_SPOT_BINARY;
    // npm 11 runs a dependency's install script only once the user allows it; the loader finds the
    // prebuild either way, so the package must work whether or not our install script ran.
    run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(work, packed[0]!.filename)], { cwd: app, env });

    const backend = run('node', ['-e', "console.log(JSON.stringify(require('chain-of-spot').ChainOfSpot.backend()))"], { cwd: app, env });
    const choice = JSON.parse(backend.stdout) as { backend: string; path: string };
    assert.equal(choice.backend, 'cpu');
    assert.ok(choice.path.includes(path.join('node_modules', 'chain-of-spot', 'prebuilds')), choice.path);

    const out = path.join(work, 'demo');
    await mkdir(out);
    const demo = run('npx', ['chain-of-spot', 'demo', '--out', out], { cwd: app, env });
    assert.match(demo.stdout, /random weights/i);
    const meta = await sharp(path.join(out, 'chain-of-spot-demo.png')).metadata();
    assert.equal(meta.format, 'png');
  });
});
