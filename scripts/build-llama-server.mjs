#!/usr/bin/env node
// Builds llama-server at the pinned llama.cpp commit: the one build the benchmark (bench/server.ts)
// and the remote backend's tests (test/system/connect.test.ts) share. The full tree is checked out
// once into .cache/llama.cpp-full (scripts/vendor-llama-cpp.mjs --full: the vendored copy has no
// tools/server) and built into .cache/llama-server-build/ with ccache; incremental, so a build with
// nothing to do takes a second, the first one about ten minutes on two cores.
//
// Never -march=native: on a CPU that lists AMX it compiles ggml's AMX kernels, which die with
// SIGILL on this project's Intel machines. The instruction sets are the addon's x86-64 level
// (deps/cpu-level.cmake, the same rule): `auto` (the best level this CPU runs) unless COS_CPU_LEVEL
// or --level says otherwise, so llama-server and the addon run the same kernels.
//
// Usage: node scripts/build-llama-server.mjs [--level x86-64|x86-64-v3|x86-64-v4|auto] [--jobs N]
// Progress goes to stderr; the binary's path is the one line on stdout.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SOURCE_DIR = join(root, '.cache', 'llama.cpp-full');
export const BUILD_DIR = join(root, '.cache', 'llama-server-build');
export const BINARY = join(BUILD_DIR, 'bin', 'llama-server');

const LEVELS = ['x86-64', 'x86-64-v3', 'x86-64-v4'];
// lib/native/loader.ts and deps/cpu-level.cmake: the flags each level needs.
const V3_FLAGS = ['avx', 'avx2', 'fma', 'f16c', 'bmi2'];
const V4_FLAGS = [...V3_FLAGS, 'avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl'];

/** The best level this machine's CPU runs, from /proc/cpuinfo (x86-64 where it cannot tell). */
function detectLevel() {
  if (!existsSync('/proc/cpuinfo')) return 'x86-64';
  const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
  const flags = new Set(line.replace(/^flags\s*:\s*/, '').split(/\s+/));
  if (V4_FLAGS.every((flag) => flags.has(flag))) return 'x86-64-v4';
  if (V3_FLAGS.every((flag) => flags.has(flag))) return 'x86-64-v3';
  return 'x86-64';
}

/** ggml's CMake options for one level, as cos_apply_cpu_level sets them for the addon. */
function levelOptions(level) {
  if (process.arch !== 'x64') return ['-DGGML_NATIVE=OFF'];
  const v3 = level !== 'x86-64' ? 'ON' : 'OFF';
  const v4 = level === 'x86-64-v4' ? 'ON' : 'OFF';
  return [
    '-DGGML_NATIVE=OFF', '-DGGML_SSE42=ON',
    ...['GGML_AVX', 'GGML_AVX2', 'GGML_FMA', 'GGML_F16C', 'GGML_BMI2'].map((flag) => `-D${flag}=${v3}`),
    `-DGGML_AVX512=${v4}`,
    ...['GGML_AVX_VNNI', 'GGML_AVX512_VBMI', 'GGML_AVX512_VNNI', 'GGML_AVX512_BF16', 'GGML_AMX_TILE', 'GGML_AMX_INT8', 'GGML_AMX_BF16']
      .map((flag) => `-D${flag}=OFF`),
  ];
}

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
  const resolved = level === 'auto' ? detectLevel() : level;
  if (!LEVELS.includes(resolved)) throw new Error(`level must be ${LEVELS.join(', ')} or auto; got ${level}`);
  const started = Date.now();
  const fresh = !existsSync(BINARY);
  console.error(`build-llama-server: llama-server for ${resolved} in ${BUILD_DIR}${fresh ? ' (first build: about 10 minutes on 2 cores)' : ''}`);
  await run(process.execPath, [join(root, 'scripts', 'vendor-llama-cpp.mjs'), '--full', SOURCE_DIR]);
  // Paths relative to the repository, so another clone's build still hits ccache (as .ci/run).
  const env = { CCACHE_BASEDIR: root, CCACHE_NOHASHDIR: '1', ...process.env };
  await run('cmake', [
    '-S', SOURCE_DIR, '-B', BUILD_DIR, '-G', 'Ninja', '-DCMAKE_BUILD_TYPE=Release', ...levelOptions(resolved),
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
