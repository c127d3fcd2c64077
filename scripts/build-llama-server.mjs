#!/usr/bin/env node
// Builds llama-server at the pinned llama.cpp commit: the one build the benchmark (bench/server.ts)
// and the remote backend's tests (test/system/connect.test.ts) share. The full tree is checked out
// once into .cache/llama.cpp-full (scripts/vendor-llama-cpp.mjs --full: the vendored copy has no
// tools/server) and built into .cache/llama-server-build/ with ccache; incremental, so a build with
// nothing to do takes a second, the first one about ten minutes on two cores.
//
// Never -march=native: on a CPU that lists AMX it compiles ggml's AMX kernels, which die with
// SIGILL on this project's Intel machines. The instruction sets are the addon's x86-64 level, set by
// the same CMake code (deps/cpu-level.cmake, through deps/cpu-level-project.cmake): `auto` (the best
// level this CPU runs) unless COS_CPU_LEVEL or --level says otherwise.
//
// Usage: node scripts/build-llama-server.mjs [--level x86-64|x86-64-v3|x86-64-v4|auto] [--jobs N]
// Progress goes to stderr; the binary's path is the one line on stdout.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SOURCE_DIR = join(root, '.cache', 'llama.cpp-full');
export const BUILD_DIR = join(root, '.cache', 'llama-server-build');
export const BINARY = join(BUILD_DIR, 'bin', 'llama-server');

/** Runs a command with its output on our stderr (stdout carries only the binary's path). */
function run(command, args, env = process.env) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', process.stderr, process.stderr], env });
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} failed (${signal ?? code})`))));
  });
}

/** Checks out (once) and builds llama-server; resolves with its path. */
export async function buildLlamaServer({ level = process.env.COS_CPU_LEVEL || 'auto', jobs = availableParallelism() } = {}) {
  const started = Date.now();
  const fresh = !existsSync(BINARY);
  console.error(`build-llama-server: llama-server (CPU level ${level}) in ${BUILD_DIR}${fresh ? ' (first build: about 10 minutes on 2 cores)' : ''}`);
  await run(process.execPath, [join(root, 'scripts', 'vendor-llama-cpp.mjs'), '--full', SOURCE_DIR]);
  // Paths relative to the repository, so another clone's build still hits ccache (as .ci/run).
  const env = { CCACHE_BASEDIR: root, CCACHE_NOHASHDIR: '1', ...process.env };
  await run('cmake', [
    '-S', SOURCE_DIR, '-B', BUILD_DIR, '-G', 'Ninja', '-DCMAKE_BUILD_TYPE=Release',
    `-DCMAKE_PROJECT_INCLUDE=${join(root, 'deps', 'cpu-level-project.cmake')}`, `-DCOS_CPU_LEVEL=${level}`,
    '-DGGML_OPENMP=OFF', '-DGGML_CCACHE=ON', '-DBUILD_SHARED_LIBS=OFF', '-DLLAMA_CURL=OFF', '-DLLAMA_OPENSSL=OFF',
    '-DLLAMA_BUILD_TESTS=OFF', '-DLLAMA_BUILD_EXAMPLES=OFF', '-DLLAMA_BUILD_SERVER=ON',
    // The web UI is neither built nor downloaded: the build stays offline.
    '-DLLAMA_BUILD_UI=OFF', '-DLLAMA_USE_PREBUILT_UI=OFF',
  ], env);
  await run('cmake', ['--build', BUILD_DIR, '--target', 'llama-server', `-j${jobs}`], env);
  if (!existsSync(BINARY)) throw new Error(`build-llama-server: no ${BINARY} after the build`);
  console.error(`build-llama-server: ready in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return BINARY;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { level: { type: 'string' }, jobs: { type: 'string' } } });
  try {
    const binary = await buildLlamaServer({
      ...(values.level ? { level: values.level } : {}),
      ...(values.jobs ? { jobs: Number(values.jobs) } : {}),
    });
    console.log(binary);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  }
}
