#!/usr/bin/env node
// Builds the portable CPU binaries shipped in prebuilds/<platform>-<arch>/: one per x86-64 level
// (baseline SSE4.2, v3 = AVX2/FMA/F16C, v4 = AVX-512), none with -march=native. The loader picks
// the best level the user's CPU runs. `npm run prebuild [-- LEVEL...]`; not committed to git,
// shipped by `npm pack`.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const LEVELS = ['x86-64', 'x86-64-v3', 'x86-64-v4'];

if (process.arch !== 'x64') {
  console.error(`prebuild: only x64 has CPU levels; on ${process.arch} use \`npm run build:native\``);
  process.exit(1);
}
const levels = process.argv.slice(2).length > 0 ? process.argv.slice(2) : LEVELS;
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
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(target, { recursive: true });
for (const level of levels) {
  // One folder deep, as build/: ccache (CCACHE_BASEDIR) then shares objects between them.
  const out = `build-prebuild-${level}`;
  const started = Date.now();
  run([cmakeJs, 'compile', '--out', out, `--CDCOS_CPU_LEVEL=${level}`]);
  copyFileSync(join(root, out, 'Release', 'chain_of_spot.node'), join(target, `chain_of_spot.${level}.node`));
  console.log(`prebuild: ${level} built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
