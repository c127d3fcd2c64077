/**
 * Finds and loads the native addon. Order: an explicit path (setBinaryPath() or the
 * CHAIN_OF_SPOT_BINARY environment variable), then the prebuilt binaries shipped in the package
 * (prebuilds/<platform>-<arch>/, the best CPU level this processor runs), then a local build
 * (build/Release/). When nothing loads, one ERR_BINARY error lists every path tried and why.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { ChainOfSpotError } from './errors';
import type { NativeBinding } from './native';

const BINARY_NAME = 'chain_of_spot';

/** The package's root folder (this file is dist/lib/binding.js). */
export const PACKAGE_ROOT = resolve(__dirname, '..', '..');

/** x86-64 micro-architecture levels we ship prebuilt CPU binaries for, best first. */
export const CPU_LEVELS = ['x86-64-v4', 'x86-64-v3', 'x86-64'] as const;
export type CpuLevel = (typeof CPU_LEVELS)[number];

const LEVEL_FLAGS: Record<CpuLevel, string[]> = {
  'x86-64-v4': ['avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl', 'avx2', 'fma', 'f16c', 'bmi2'],
  'x86-64-v3': ['avx2', 'fma', 'f16c', 'bmi2', 'avx'],
  'x86-64': [],
};

/** The CPU levels this processor can run, best first, from its feature flags. */
export function supportedCpuLevels(flags: ReadonlySet<string>): CpuLevel[] {
  return CPU_LEVELS.filter((level) => LEVEL_FLAGS[level].every((flag) => flags.has(flag)));
}

function cpuFlags(): Set<string> {
  try {
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    const line = cpuinfo.split('\n').find((l) => l.startsWith('flags'));
    return new Set(line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

export interface CandidateInput {
  root: string;
  platform: string;
  arch: string;
  cpuFlags: ReadonlySet<string>;
  override?: string | undefined;
}

/** The paths the loader tries, in order. Pure, so the order can be tested. */
export function binaryCandidates(input: CandidateInput): string[] {
  if (input.override) return [resolve(input.override)];
  const target = `${input.platform}-${input.arch}`;
  const prebuilt = join(input.root, 'prebuilds', target);
  const candidates: string[] = [];
  if (input.arch === 'x64') {
    for (const level of supportedCpuLevels(input.cpuFlags)) candidates.push(join(prebuilt, `${BINARY_NAME}.${level}.node`));
  }
  candidates.push(join(prebuilt, `${BINARY_NAME}.node`));
  candidates.push(join(input.root, 'build', 'Release', `${BINARY_NAME}.node`));
  // Electron: native files cannot be loaded from inside an asar archive, only from its unpacked twin.
  return candidates.map((path) => path.replace(/\.asar([\\/])/, '.asar.unpacked$1'));
}

let binaryPathOverride: string | undefined;
let loaded: { binding: NativeBinding; path: string } | undefined;

/**
 * Loads the addon from this path instead of searching (Electron apps and bundlers that move it).
 * Must be called before the first model is loaded.
 */
export function setBinaryPath(path: string): void {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
  if (loaded) throw new Error(`the native addon is already loaded from ${loaded.path}`);
  binaryPathOverride = path;
}

/** The loaded addon (loading it on first use). */
export function binding(): NativeBinding {
  return loadBinding().binding;
}

/** The path the addon was loaded from. */
export function binaryPath(): string {
  return loadBinding().path;
}

function loadBinding(): { binding: NativeBinding; path: string } {
  if (loaded) return loaded;
  const candidates = binaryCandidates({
    root: PACKAGE_ROOT,
    platform: process.platform,
    arch: process.arch,
    cpuFlags: cpuFlags(),
    override: binaryPathOverride ?? process.env.CHAIN_OF_SPOT_BINARY,
  });
  const failures: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      failures.push(`  ${path}: not found`);
      continue;
    }
    try {
      loaded = { binding: require(path) as NativeBinding, path };
      return loaded;
    } catch (error) {
      failures.push(`  ${path}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new ChainOfSpotError(
    'ERR_BINARY',
    `no usable chain-of-spot native addon for ${process.platform}-${process.arch}. Tried:\n${failures.join('\n')}\n` +
      'Build it from source with `npx cmake-js compile` in the package folder (needs cmake and a C++ compiler), ' +
      'or point CHAIN_OF_SPOT_BINARY at a built chain_of_spot.node.',
  );
}
