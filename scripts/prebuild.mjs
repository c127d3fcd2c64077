#!/usr/bin/env node
// Builds the portable binaries for prebuilds/: the CPU ones shipped in prebuilds/<platform>-<arch>/,
// one per x86-64 level (baseline SSE4.2, v3 = AVX2/FMA/F16C, v4 = AVX-512), none with
// -march=native; and, when asked for (`vulkan`), the Vulkan one (ggml's Vulkan backend, its CPU
// part at x86-64-v3) in prebuilds/<platform>-<arch>-vulkan/ (needs glslc and the Vulkan headers),
// not shipped yet (README, "GPU"). The loader picks a Vulkan one when it finds a GPU, else the best
// level the user's CPU runs. Not committed to git, shipped by `npm pack`.
//   npm run prebuild [-- [--into DIR] [--build-root DIR] [TARGET...]]
// TARGET: a level or `vulkan` (default the three levels). --into: where the CPU .node files go (default
// prebuilds/<platform>-<arch>; the Vulkan one goes to DIR-vulkan); --build-root: where the build
// folders go (default the repository). The pack test builds into a temporary folder, so that
// running the suite never changes which binary the loader picks in this checkout.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const LEVELS = ['x86-64', 'x86-64-v3', 'x86-64-v4'];
const TARGETS = [...LEVELS, 'vulkan'];

if (process.arch !== 'x64') {
  console.error(`prebuild: only x64 has CPU levels; on ${process.arch} use \`npm run build:native\``);
  process.exit(1);
}
const { values, positionals } = parseArgs({ options: { into: { type: 'string' }, 'build-root': { type: 'string' } }, allowPositionals: true });
const targets = positionals.length > 0 ? positionals : LEVELS;
for (const target of targets) {
  if (!TARGETS.includes(target)) {
    console.error(`prebuild: unknown target ${target}; choose from ${TARGETS.join(', ')}`);
    process.exit(2);
  }
}

function run(args) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

run([join(root, 'scripts', 'vendor-llama-cpp.mjs')]);
const cmakeJs = join(dirname(fileURLToPath(import.meta.resolve('cmake-js/package.json'))), 'bin', 'cmake-js');
const into = resolve(values.into ?? join(root, 'prebuilds', `${process.platform}-${process.arch}`));
const buildRoot = resolve(values['build-root'] ?? root);
for (const target of targets) {
  const vulkan = target === 'vulkan';
  const [folder, file] = vulkan ? [`${into}-vulkan`, 'chain_of_spot.node'] : [into, `chain_of_spot.${target}.node`];
  // One folder deep, as build/: ccache (CCACHE_BASEDIR) then shares objects between them.
  const out = join(buildRoot, `build-prebuild-${target}`);
  const started = Date.now();
  run([cmakeJs, 'compile', '--out', out, ...(vulkan ? ['--CDCOS_CPU_LEVEL=x86-64-v3', '--CDCOS_VULKAN=ON'] : [`--CDCOS_CPU_LEVEL=${target}`])]);
  mkdirSync(folder, { recursive: true });
  copyFileSync(join(out, 'Release', 'chain_of_spot.node'), join(folder, file));
  console.log(`prebuild: ${target} built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
