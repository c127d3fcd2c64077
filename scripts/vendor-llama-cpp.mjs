#!/usr/bin/env node
// Brings llama.cpp's source, pinned, into native/llama.cpp (git-ignored) without copying it into
// this repository: node-llama-cpp@3.21.1 on the npm registry ships llama.cpp as a git bundle.
// We `npm pack` that tarball (nothing of it is installed), check its sha512 against the registry's
// integrity, clone the bundle, verify the commit and keep only what our CMake build needs.
// Idempotent: when native/llama.cpp already carries the stamp for this commit it does nothing, which
// is also the case inside our own published tarball.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PIN = {
  package: 'node-llama-cpp@3.21.1',
  integrity: 'sha512-E3N0Ev2Va0wzydvXYFwM9Hvyo07PoWjt8T/9GMc43Cvt8YkV/NU/tYUgEMC1grTPv2o9PRjQi0G3Wb5P/awiMg==',
  bundle: 'package/llama/gitRelease.bundle',
  commit: '80fb11ac73e66d89eae2c6a91d8a77428fa733ed',
};

// What the build of ggml + llama + mtmd reads; nothing else (no server, tools, tests, models, docs).
const KEEP = [
  'CMakeLists.txt', 'LICENSE', 'licenses', 'cmake', 'include', 'src', 'ggml',
  'tools/mtmd',
  'vendor/CMakeLists.txt', 'vendor/hash', 'vendor/miniaudio', 'vendor/nlohmann', 'vendor/sheredom', 'vendor/stb',
];
// Inside the kept folders: sample media and test scripts the library does not need.
const DROP = [
  'tools/mtmd/test-1.jpeg', 'tools/mtmd/test-2.mp3', 'tools/mtmd/test-3.mp4', 'tools/mtmd/tests',
  'tools/mtmd/tests.sh', 'tools/mtmd/legacy-models',
];

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, 'native', 'llama.cpp');
const stampPath = join(target, 'VENDORED.json');
const stamp = { source: PIN.package, integrity: PIN.integrity, commit: PIN.commit, kept: KEEP, dropped: DROP };

function run(cmd, args, options = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...options }).trim();
}

function isUpToDate() {
  if (!existsSync(stampPath)) return false;
  try {
    return JSON.stringify(JSON.parse(readFileSync(stampPath, 'utf8'))) === JSON.stringify(stamp);
  } catch {
    return false;
  }
}

function sriOf(file) {
  return 'sha512-' + createHash('sha512').update(readFileSync(file)).digest('base64');
}

function vendor() {
  const work = mkdtempSync(join(tmpdir(), 'cos-vendor-'));
  try {
    const packed = JSON.parse(run('npm', ['pack', PIN.package, '--json', '--pack-destination', work], { cwd: work }));
    const tarball = join(work, packed[0].filename);
    const actual = sriOf(tarball);
    if (actual !== PIN.integrity) {
      throw new Error(`${PIN.package}: integrity mismatch\n  expected ${PIN.integrity}\n  got      ${actual}`);
    }
    run('tar', ['-xzf', tarball, '-C', work, PIN.bundle]);
    const clone = join(work, 'llama.cpp');
    run('git', ['clone', '--quiet', '--no-checkout', join(work, PIN.bundle), clone]);
    run('git', ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', PIN.commit], { cwd: clone });
    const head = run('git', ['rev-parse', 'HEAD'], { cwd: clone });
    if (head !== PIN.commit) throw new Error(`llama.cpp bundle: expected commit ${PIN.commit}, got ${head}`);

    rmSync(target, { recursive: true, force: true });
    for (const path of KEEP) {
      cpSync(join(clone, path), join(target, path), { recursive: true });
    }
    for (const path of DROP) rmSync(join(target, path), { recursive: true, force: true });
    writeFileSync(stampPath, JSON.stringify(stamp, null, 2) + '\n');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (isUpToDate()) {
  console.log(`llama.cpp ${PIN.commit.slice(0, 12)} already in native/llama.cpp`);
} else {
  mkdirSync(dirname(target), { recursive: true });
  vendor();
  console.log(`llama.cpp ${PIN.commit.slice(0, 12)} vendored into native/llama.cpp from ${PIN.package}`);
}
