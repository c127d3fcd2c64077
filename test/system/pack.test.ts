/**
 * The package as users get it: `npm pack`, installed into an empty folder whose PATH has node and
 * npm but no compiler, runs on its prebuilt CPU binaries. The working tree is left as it was: when
 * the checkout has no prebuilds (a plain `npm ci`), they are built into a temporary folder and
 * added to a copy of the tarball, never into prebuilds/, which would change the binary every later
 * test loads.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import sharp from 'sharp';

import { CPU_LEVELS, supportedCpuLevels } from '../../lib/native/loader';
import { tinyLlavaFast } from '../support/models';
import { REPO_ROOT } from '../support/paths';
import { startRpcServer, stopRpcServer } from '../support/remote';

const TARGET = `${process.platform}-${process.arch}`;

function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { ...options, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(result.status, 0, `${command} ${args.join(' ')} failed:\n${result.stdout}\n${result.stderr}`);
  return result;
}

function which(name: string): string {
  return run('sh', ['-c', `command -v ${name}`], { cwd: REPO_ROOT }).stdout.trim();
}

function cpuFlags(): Set<string> {
  return new Set(run('sh', ['-c', "grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2"], { cwd: REPO_ROOT }).stdout.trim().split(/\s+/));
}

const hasPrebuilds = (folder: string): boolean => existsSync(folder) && readdirSync(folder).some((f) => f.endsWith('.node'));

describe('the npm package', function () {
  this.timeout(1_800_000);
  let work: string;
  let tarball: string;
  let files: string[];

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'cos-pack-'));
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], { cwd: REPO_ROOT }).stdout) as { filename: string; files: { path: string }[] }[];
    tarball = path.join(work, packed[0]!.filename);
    files = packed[0]!.files.map((f) => f.path);
    if (!hasPrebuilds(path.join(REPO_ROOT, 'prebuilds', TARGET))) {
      // What `npm run prebuild` would ship, built outside the checkout, then packed with the rest.
      const staged = path.join(work, 'staged');
      await mkdir(staged);
      run('tar', ['-xzf', tarball, '-C', staged], { cwd: work });
      const into = path.join(staged, 'package', 'prebuilds', TARGET);
      run(process.execPath, [path.join(REPO_ROOT, 'scripts', 'prebuild.mjs'), '--into', into, '--build-root', path.join(work, 'builds')], { cwd: REPO_ROOT });
      await rm(tarball);
      const repacked = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: path.join(staged, 'package') }).stdout) as { filename: string; files: { path: string }[] }[];
      tarball = path.join(work, repacked[0]!.filename);
      files = repacked[0]!.files.map((f) => f.path);
    }
  });
  after(async () => rm(work, { recursive: true, force: true }));

  it('holds the library, the CLI, llama.cpp pinned and patched, and a prebuild per CPU level; no tests or local builds', () => {
    for (const expected of ['dist/lib/index.js', 'dist/lib/cli/main.js', 'dist/lib/image/pixel-worker.js', 'dist/lib/procedure/isolated-child.js', 'deps/llama.cpp/VENDORED.json', 'deps/llama.cpp.json', 'deps/patches/ggml-vulkan-old-headers.patch', 'CMakeLists.txt', 'scripts/install.mjs']) {
      assert.ok(files.includes(expected), `the tarball lacks ${expected}`);
    }
    for (const level of CPU_LEVELS) assert.ok(files.includes(`prebuilds/${TARGET}/chain_of_spot.${level}.node`), `the tarball lacks the ${level} prebuild`);
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('build')), 'no tests or local builds in the tarball');
  });

  describe('installed with no compiler on PATH', () => {
    let app: string;
    let env: NodeJS.ProcessEnv;
    const installed = (): string => path.join(app, 'node_modules', 'chain-of-spot');

    before(async () => {
      app = path.join(work, 'app');
      const bin = path.join(work, 'bin');
      await mkdir(app);
      await mkdir(bin);
      for (const tool of ['node', 'npm', 'npx', 'sh']) await symlink(which(tool), path.join(bin, tool));
      await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
      env = { ...process.env, PATH: bin, CC: '/nonexistent/cc', CXX: '/nonexistent/c++' };
      delete env.CHAIN_OF_SPOT_BINARY;
      // The registry gives the dependencies (sharp's own binaries are registry packages); npm 11 does
      // not run a dependency's install script until allowed, so the next test runs ours by hand.
      run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, env });
    });

    it("its install script takes a prebuild, with no compiler and no network", () => {
      // A proxy that refuses every connection: any download the script tried would fail it.
      const offline = { ...env, HTTP_PROXY: 'http://127.0.0.1:9', HTTPS_PROXY: 'http://127.0.0.1:9', npm_config_offline: 'true' };
      const result = run('node', [path.join(installed(), 'scripts', 'install.mjs')], { cwd: installed(), env: offline });
      assert.match(result.stdout, new RegExp(`using the prebuilt binary .*prebuilds/${TARGET}/chain_of_spot\\.x86-64`));
    });

    it('loads the best prebuild this CPU runs', () => {
      const backend = run('node', ['-e', "console.log(JSON.stringify(require('chain-of-spot').ChainOfSpot.backend()))"], { cwd: app, env });
      const choice = JSON.parse(backend.stdout) as { backend: string; path: string; cpuLevel: string };
      assert.equal(choice.backend, 'cpu');
      assert.equal(choice.path, path.join(installed(), 'prebuilds', TARGET, `chain_of_spot.${supportedCpuLevels(cpuFlags())[0]}.node`));
    });

    it('answers a question on every prebuild this CPU runs, each loaded by path', async () => {
      const pair = await tinyLlavaFast();
      const script = `
        const { ChainOfSpot } = require('chain-of-spot');
        (async () => {
          const cos = await ChainOfSpot.load({ model: process.argv[1], mmproj: process.argv[2], threads: 1 });
          const image = { data: Buffer.alloc(64 * 48 * 3, 90), width: 64, height: 48, channels: 3 };
          const r = await cos.ask(image, 'What is this?', { maxTokens: 4 });
          console.log(JSON.stringify({ path: ChainOfSpot.backend().path, tokens: r.turns[1].generatedTokens }));
          await cos.dispose();
        })().catch((e) => { console.error(e); process.exit(1); });`;
      const levels = supportedCpuLevels(cpuFlags());
      assert.ok(levels.length > 0);
      for (const level of levels) {
        const binary = path.join(installed(), 'prebuilds', TARGET, `chain_of_spot.${level}.node`);
        const result = run('node', ['-e', script, pair.model, pair.mmproj], { cwd: app, env: { ...env, CHAIN_OF_SPOT_BINARY: binary } });
        const answer = JSON.parse(result.stdout.trim().split('\n').pop()!) as { path: string; tokens: number };
        assert.equal(answer.path, binary);
        assert.ok(answer.tokens > 0, `the ${level} binary generated nothing`);
      }
    });

    it('starts an rpc-server with npx, whose CPU a ChainOfSpot with rpcServers uses', async () => {
      const pair = await tinyLlavaFast();
      const server = await startRpcServer(['npx', 'chain-of-spot'], [], { cwd: app, env });
      try {
        const script = `
          const { ChainOfSpot } = require('chain-of-spot');
          ChainOfSpot.load({ model: process.argv[1], mmproj: process.argv[2], threads: 1, rpcServers: [process.argv[3]] })
            .then(async (cos) => {
              const { turns } = await cos.ask({ data: Buffer.alloc(48 * 48 * 3, 200), width: 48, height: 48, channels: 3 }, 'Why?', { maxTokens: 2 });
              await cos.dispose();
              console.log(turns[1].generatedTokens);
            }, (e) => { console.error(e); process.exit(1); });`;
        // The model process's log (CHAIN_OF_SPOT_DEBUG) says where the weights went.
        const result = run('node', ['-e', script, pair.model, pair.mmproj, server.endpoint], { cwd: app, env: { ...env, CHAIN_OF_SPOT_DEBUG: '1' } });
        assert.ok(Number(result.stdout.trim()) > 0, result.stdout);
        assert.ok(result.stderr.includes(`[${server.endpoint}] model buffer size`), result.stderr);
      } finally {
        await stopRpcServer(server);
      }
    });

    it('runs the demo with npx', async () => {
      const out = path.join(work, 'demo');
      await mkdir(out);
      const demo = run('npx', ['chain-of-spot', 'demo', '--out', out], { cwd: app, env });
      assert.match(demo.stdout, /Question:/);
      const meta = await sharp(path.join(out, 'chain-of-spot-demo.png')).metadata();
      assert.equal(meta.format, 'png');
    });
  });
});
