/**
 * Finds and loads the native addon, and chooses its backend.
 *
 * Order: an explicit path (setBinaryPath() or CHAIN_OF_SPOT_BINARY) alone; otherwise the GPU
 * binaries the backend preference allows, CUDA (prebuilds/<platform>-<arch>-cuda/, then a local
 * build-cuda/) before Vulkan (prebuilds/<platform>-<arch>-vulkan/, then build-vulkan/), each only
 * when a smoke test in a child process loads it and finds a device (a broken driver cannot take
 * this process down); then the CPU binaries: prebuilds/<platform>-<arch>/ at the best x86-64 level
 * this CPU runs, then a local build/. ggml's Vulkan backend leaves CPU-type Vulkan devices (Mesa's
 * llvmpipe) out unless GGML_VK_VISIBLE_DEVICES names them, so a software renderer is never taken
 * for a GPU. When nothing loads, one ERR_BINARY error lists every path tried and why.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { ChainOfSpotError } from '../common/errors';
import type { NativeBinding, NativeDevice } from './addon';

const BINARY = 'chain_of_spot';

/** The package's root folder (this file is dist/lib/native/loader.js). */
export const PACKAGE_ROOT = resolve(__dirname, '..', '..', '..');

/** x86-64 micro-architecture levels we ship prebuilt CPU binaries for, best first. */
export const CPU_LEVELS = ['x86-64-v4', 'x86-64-v3', 'x86-64'] as const;
export type CpuLevel = (typeof CPU_LEVELS)[number];

/** The compute backends a binary can have. */
export type Backend = 'cpu' | 'cuda' | 'vulkan';
/** Which backend to load: `auto` takes CUDA, else Vulkan, when a working binary of it is there, else CPU. */
export type BackendPreference = 'auto' | Backend;
/** The backends that need a device, and so a smoke test. */
export type GpuBackend = Exclude<Backend, 'cpu'>;
const PREFERENCES: readonly BackendPreference[] = ['auto', 'cpu', 'cuda', 'vulkan'];

const LEVEL_FLAGS: Record<CpuLevel, string[]> = {
  'x86-64-v4': ['avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl', 'avx2', 'fma', 'f16c', 'bmi2'],
  'x86-64-v3': ['avx2', 'fma', 'f16c', 'bmi2', 'avx'],
  'x86-64': [],
};

/** The CPU levels a processor with these feature flags runs, best first. */
export function supportedCpuLevels(flags: ReadonlySet<string>): CpuLevel[] {
  return CPU_LEVELS.filter((level) => LEVEL_FLAGS[level].every((flag) => flags.has(flag)));
}

/** One binary the loader may try. */
export interface Candidate {
  path: string;
  backend: Backend;
  /** For prebuilt CPU binaries: the x86-64 level it was built for. */
  cpuLevel?: CpuLevel;
}

export interface CandidateInput {
  root: string;
  platform: string;
  arch: string;
  cpuFlags: ReadonlySet<string>;
}

/** Every binary the loader knows of, CUDA ones first, then Vulkan; pure, so the order can be tested. */
export function binaryCandidates(input: CandidateInput): Candidate[] {
  const target = `${input.platform}-${input.arch}`;
  const prebuilt = join(input.root, 'prebuilds', target);
  const candidates: Candidate[] = [
    { path: join(input.root, 'prebuilds', `${target}-cuda`, `${BINARY}.node`), backend: 'cuda' },
    { path: join(input.root, 'build-cuda', 'Release', `${BINARY}.node`), backend: 'cuda' },
    { path: join(input.root, 'prebuilds', `${target}-vulkan`, `${BINARY}.node`), backend: 'vulkan' },
    { path: join(input.root, 'build-vulkan', 'Release', `${BINARY}.node`), backend: 'vulkan' },
  ];
  if (input.arch === 'x64') {
    for (const cpuLevel of supportedCpuLevels(input.cpuFlags)) {
      candidates.push({ path: join(prebuilt, `${BINARY}.${cpuLevel}.node`), backend: 'cpu', cpuLevel });
    }
  }
  candidates.push({ path: join(prebuilt, `${BINARY}.node`), backend: 'cpu' });
  candidates.push({ path: join(input.root, 'build', 'Release', `${BINARY}.node`), backend: 'cpu' });
  // Electron: native files cannot be loaded from inside an asar archive, only from its unpacked twin.
  return candidates.map((candidate) => ({ ...candidate, path: candidate.path.replace(/\.asar([\\/])/, '.asar.unpacked$1') }));
}

/** What the loader chose, and why. */
export interface BackendChoice {
  backend: Backend;
  path: string;
  cpuLevel?: CpuLevel;
  /** Why this binary: the preference, and what happened to the ones before it. */
  reason: string;
  /** Each candidate tried before this one, with why it was passed over (`path: why`). */
  passedOver: string[];
}

export interface ChooseInput {
  candidates: Candidate[];
  preference: BackendPreference;
  exists: (path: string) => boolean;
  /** Loads a GPU binary in a child process; undefined when it works and finds a device, else why not. */
  smokeTest: (path: string, backend: GpuBackend) => string | undefined;
  /** Loads a binary in this process; undefined when it loaded, else why not. */
  load: (path: string) => string | undefined;
}

/** Picks the binary to use (see the file comment); pure but for the injected functions. */
export function chooseBinary(input: ChooseInput): BackendChoice {
  const notes: string[] = [];
  const order = input.candidates.filter((c) => input.preference === 'auto' || c.backend === input.preference);
  for (const [index, candidate] of order.entries()) {
    if (!input.exists(candidate.path)) {
      notes.push(`${candidate.path}: not found`);
      continue;
    }
    const failure = (candidate.backend !== 'cpu' ? input.smokeTest(candidate.path, candidate.backend) : undefined) ?? input.load(candidate.path);
    if (failure !== undefined) {
      notes.push(`${candidate.path}: ${failure}`);
      continue;
    }
    // The GPU backends tried before this one's and passed over (not its own other binaries).
    const gpusBefore = [...new Set(order.slice(0, index).filter((c) => c.backend !== 'cpu' && c.backend !== candidate.backend).map((c) => BACKEND_NAMES[c.backend]))];
    const skipped = gpusBefore.length > 0 ? ` (no working ${gpusBefore.join(' or ')} binary)` : '';
    return {
      backend: candidate.backend,
      path: candidate.path,
      ...(candidate.cpuLevel ? { cpuLevel: candidate.cpuLevel } : {}),
      reason: `backend preference ${input.preference}${skipped}`,
      passedOver: notes,
    };
  }
  const hint =
    input.preference === 'cuda'
      ? 'Build the CUDA variant with `CHAIN_OF_SPOT_CUDA=1 npm rebuild chain-of-spot` (needs the CUDA toolkit with cuBLAS), or use the CPU backend.'
      : input.preference === 'vulkan'
        ? 'Build the Vulkan variant with `CHAIN_OF_SPOT_VULKAN=1 npm rebuild chain-of-spot` (needs glslc and the Vulkan headers), check that `vulkaninfo --summary` lists a GPU, or use the CPU backend.'
        : 'Build it from source with `CHAIN_OF_SPOT_BUILD_FROM_SOURCE=1 npm rebuild chain-of-spot` (needs cmake and a C++ compiler), or point CHAIN_OF_SPOT_BINARY at a built chain_of_spot.node.';
  throw new ChainOfSpotError('ERR_BINARY', `no usable chain-of-spot native addon (${input.preference} backend). Tried:\n  ${notes.join('\n  ')}\n${hint}`);
}

function cpuFlags(): Set<string> {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    return new Set(line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

const BACKEND_NAMES: Record<Backend, string> = { cpu: 'CPU', cuda: 'CUDA', vulkan: 'Vulkan' };
const NO_DEVICE: Record<GpuBackend, string> = {
  cuda: 'loads, but sees no CUDA GPU',
  vulkan:
    'loads, but sees no usable Vulkan device (a CPU-type one, such as Mesa\'s llvmpipe, is used only when GGML_VK_VISIBLE_DEVICES names its index)',
};

/** A device the model's layers can go to: what ggml calls a GPU or an integrated GPU. */
const isGpuDevice = (device: NativeDevice): device is NativeDevice & { type: 'gpu' | 'igpu' } => device.type === 'gpu' || device.type === 'igpu';

/** Loads a GPU binary in a child process and checks it finds a device of its backend. */
export function smokeTestInChild(path: string, backend: GpuBackend): string | undefined {
  // The device test is isGpuDevice's.
  const script = `const info = require(${JSON.stringify(path)}).systemInfo(); process.exit(info.devices.some((d) => d.type === 'gpu' || d.type === 'igpu') ? 0 : 3);`;
  const child = spawnSync(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000, env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
  if (child.status === 0) return undefined;
  if (child.status === 3) return NO_DEVICE[backend];
  const detail = child.stderr?.toString().trim().split('\n').pop() ?? '';
  return `failed its smoke test (${child.signal ? `signal ${child.signal}` : `exit ${child.status}`}${detail ? `: ${detail}` : ''})`;
}

let preferenceOverride: BackendPreference | undefined;
let binaryPathOverride: string | undefined;
let loaded: { binding: NativeBinding; choice: BackendChoice } | undefined;

function assertNotLoaded(): void {
  if (loaded) throw new Error(`the native addon is already loaded from ${loaded.choice.path}`);
}

/**
 * Loads the addon from this path instead of searching (Electron apps and bundlers that move it).
 * Must be called before the first model is loaded.
 */
export function setBinaryPath(path: string): void {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
  assertNotLoaded();
  binaryPathOverride = path;
}

/**
 * Chooses the backend (default `auto`, or the CHAIN_OF_SPOT_BACKEND environment variable). Must be
 * called before the first model is loaded.
 */
export function setBackend(preference: BackendPreference): void {
  if (!PREFERENCES.includes(preference)) throw new RangeError("backend must be 'auto', 'cpu', 'cuda' or 'vulkan'");
  assertNotLoaded();
  preferenceOverride = preference;
}

function envPreference(): BackendPreference {
  const value = (process.env.CHAIN_OF_SPOT_BACKEND ?? 'auto').toLowerCase() as BackendPreference;
  if (PREFERENCES.includes(value)) return value;
  throw new ChainOfSpotError('ERR_BINARY', `CHAIN_OF_SPOT_BACKEND must be auto, cpu, cuda or vulkan, not ${JSON.stringify(value)}`);
}

function requireBinding(path: string): NativeBinding {
  return require(path) as NativeBinding;
}

function loadBinding(): { binding: NativeBinding; choice: BackendChoice } {
  if (loaded) return loaded;
  let binding: NativeBinding | undefined;
  const load = (path: string): string | undefined => {
    try {
      binding = requireBinding(path);
      return undefined;
    } catch (error) {
      return (error as Error).message.split('\n')[0];
    }
  };
  const override = binaryPathOverride ?? process.env.CHAIN_OF_SPOT_BINARY;
  const choice = override
    ? chooseBinary({ candidates: [{ path: resolve(override), backend: 'cpu' }], preference: 'auto', exists: existsSync, smokeTest: () => undefined, load })
    : chooseBinary({
        candidates: binaryCandidates({ root: PACKAGE_ROOT, platform: process.platform, arch: process.arch, cpuFlags: cpuFlags() }),
        preference: preferenceOverride ?? envPreference(),
        exists: existsSync,
        smokeTest: smokeTestInChild,
        load,
      });
  const nativeBinding = binding as NativeBinding;
  // An explicit binary says itself which backend it has.
  if (override) choice.backend = nativeBinding.systemInfo().backend;
  loaded = { binding: nativeBinding, choice };
  return loaded;
}

/** The loaded addon (loading it on first use). */
export function binding(): NativeBinding {
  return loadBinding().binding;
}

/**
 * Which binary and backend are in use (loading the addon if it is not yet), and the devices the
 * model's layers can go to, read now (none on the CPU backend): ggml's name (`Vulkan0`, `CUDA0`),
 * the driver's description (`llvmpipe (LLVM 15.0.6, 256 bits)` for Mesa's lavapipe), ggml's type
 * (`gpu`, or `igpu` for an integrated one; lavapipe counts as `gpu`) and the memory in bytes (a
 * driver without a memory budget, as lavapipe, reports all of it free).
 */
export function backend(): BackendChoice & {
  gpuOffload: boolean;
  llamaCppCommit: string;
  devices: { name: string; description: string; type: 'gpu' | 'igpu'; memoryFree: number; memoryTotal: number }[];
} {
  const { binding: native, choice } = loadBinding();
  const info = native.systemInfo();
  return { ...choice, gpuOffload: info.gpuOffload, llamaCppCommit: info.llamaCppCommit, devices: info.devices.filter(isGpuDevice) };
}
