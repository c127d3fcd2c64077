#!/usr/bin/env node
// Builds the portable CPU binaries shipped in prebuilds/<platform>-<arch>/: one per x86-64 level
// (baseline SSE4.2, v3 = AVX2/FMA/F16C, v4 = AVX-512), none with -march=native. The loader picks
// the best level the user's CPU runs. Not committed to git, shipped by `npm pack`.
//   npm run prebuild [-- [--into DIR] [--build-root DIR] [LEVEL...]]
// --into: where the .node files go (default prebuilds/<platform>-<arch>); --build-root: where the
// build folders go (default the repository). The pack test builds into a temporary folder, so that
// running the suite never changes which binary the loader picks in this checkout.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const LEVELS = ['x86-64', 'x86-64-v3', 'x86-64-v4'];

if (process.arch !== 'x64') {
  console.error(`prebuild: only x64 has CPU levels; on ${process.arch} use \`npm run build:native\``);
  process.exit(1);
}
const { values, positionals } = parseArgs({ options: { into: { type: 'string' }, 'build-root': { type: 'string' } }, allowPositionals: true });
const levels = positionals.length > 0 ? positionals : LEVELS;
for (const level of levels) {
  if (!LEVELS.includes(level)) {
    console.error(`prebuild: unknown level ${level}; choose from ${LEVELS.join(', ')}`);
    process.exit(2);
  }
}

function run(args) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

run([join(root, 'scripts', 'vendor-llama-cpp.mjs')]);
const cmakeJs = join(dirname(fileURLToPath(import.meta.resolve('cmake-js/package.json'))), 'bin', 'cmake-js');
const target = resolve(values.into ?? join(root, 'prebuilds', `${process.platform}-${process.arch}`));
const buildRoot = resolve(values['build-root'] ?? root);
mkdirSync(target, { recursive: true });
for (const level of levels) {
  // One folder deep, as build/: ccache (CCACHE_BASEDIR) then shares objects between them.
  const out = join(buildRoot, `build-prebuild-${level}`);
  const started = Date.now();
  run([cmakeJs, 'compile', '--out', out, `--CDCOS_CPU_LEVEL=${level}`]);
  copyFileSync(join(out, 'Release', 'chain_of_spot.node'), join(target, `chain_of_spot.${level}.node`));
  console.log(`prebuild: ${level} built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
