#!/usr/bin/env node
// npm's install hook. Uses a prebuilt binary from prebuilds/ when one loads on this machine;
// otherwise vendors llama.cpp (a no-op inside the published package, which ships it) and builds
// the addon from source with cmake-js. Set CHAIN_OF_SPOT_BUILD_FROM_SOURCE=1 to always build,
// CHAIN_OF_SPOT_CUDA=1 to build the CUDA variant (needs the CUDA toolkit with cuBLAS) into build-cuda/,
// CHAIN_OF_SPOT_VULKAN=1 the Vulkan variant (needs glslc and the Vulkan and SPIR-V headers) into
// build-vulkan/. A GPU variant is built beside the CPU prebuilds, which stay the loader's fallback.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const truthy = (name) => ['1', 'true', 'yes', 'on'].includes(String(process.env[name] ?? '').toLowerCase());

function loads(path) {
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path)}).systemInfo()`], { stdio: 'ignore' });
  return probe.status === 0;
}

function prebuiltThatLoads() {
  const folder = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!existsSync(folder)) return undefined;
  return readdirSync(folder)
    .filter((name) => name.endsWith('.node'))
    .map((name) => join(folder, name))
    .find(loads);
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

// One GPU variant per install: CUDA when both are asked for.
const variant = truthy('CHAIN_OF_SPOT_CUDA') ? 'cuda' : truthy('CHAIN_OF_SPOT_VULKAN') ? 'vulkan' : undefined;
if (!variant && !truthy('CHAIN_OF_SPOT_BUILD_FROM_SOURCE')) {
  const prebuilt = prebuiltThatLoads();
  if (prebuilt) {
    console.log(`chain-of-spot: using the prebuilt binary ${prebuilt}`);
    process.exit(0);
  }
}
console.log(`chain-of-spot: building the ${{ cuda: 'CUDA', vulkan: 'Vulkan' }[variant] ?? 'CPU'} addon from source (cmake-js; a few minutes)`);
run(process.execPath, [join(root, 'scripts', 'vendor-llama-cpp.mjs')]);
const cmakeJs = join(dirname(fileURLToPath(import.meta.resolve('cmake-js/package.json'))), 'bin', 'cmake-js');
run(process.execPath, [cmakeJs, 'compile', '--out', variant ? `build-${variant}` : 'build', ...(variant ? [`--CDCOS_${variant.toUpperCase()}=ON`] : [])]);
