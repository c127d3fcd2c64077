#!/usr/bin/env node
// Brings llama.cpp's source, pinned, into deps/llama.cpp (git-ignored) without copying it into
// this repository: the pin (deps/llama.cpp.json, which CMake reads too) names an npm package that
// ships llama.cpp as a git bundle (node-llama-cpp does).
// We `npm pack` that tarball (nothing of it is installed), check its sha512 against the registry's
// integrity, clone the bundle, verify the commit, apply our patches (deps/patches/*.patch, each
// saying why and when it can go; `git apply --check` first, so a patch that no longer fits stops
// the vendoring) and keep only what our CMake build needs.
// Idempotent: when deps/llama.cpp already carries the stamp for this commit it does nothing, which
// is also the case inside our own published tarball.
// `--full DEST` instead checks out the whole tree of the same commit into DEST (the benchmark builds
// llama-server from it, which the trimmed copy omits; unpatched, as upstream built it);
// deps/llama.cpp is left alone.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';


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
/** The pinned source: the one place the llama.cpp commit is written. */
export const PIN = JSON.parse(readFileSync(join(root, 'deps', 'llama.cpp.json'), 'utf8'));

function run(cmd, args, options = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...options }).trim();
}

function isUpToDate(stampPath, stamp) {
  if (!existsSync(stampPath)) return false;
  try {
    return JSON.stringify(JSON.parse(readFileSync(stampPath, 'utf8'))) === JSON.stringify(stamp);
  } catch {
    return false;
  }
}

const patchDir = join(root, 'deps', 'patches');
/** Our patches to the pinned tree, in name order, with their hashes (the stamp records them). */
const PATCHES = existsSync(patchDir)
  ? readdirSync(patchDir).filter((name) => name.endsWith('.patch')).sort()
      .map((name) => ({ name, sha256: createHash('sha256').update(readFileSync(join(patchDir, name))).digest('hex') }))
  : [];

function applyPatches(clone) {
  for (const { name } of PATCHES) {
    const file = join(patchDir, name);
    try {
      run('git', ['apply', '--check', file], { cwd: clone });
    } catch {
      throw new Error(`deps/patches/${name} does not apply to llama.cpp ${PIN.commit}: update or drop it (its header says when it can go)`);
    }
    run('git', ['apply', file], { cwd: clone });
  }
}

function sriOf(file) {
  return 'sha512-' + createHash('sha512').update(readFileSync(file)).digest('base64');
}

/** Packs the pinned package into `work`, checks its integrity and checks the bundle's commit out into `clone`. */
function checkoutPinned(work, clone) {
  const packed = JSON.parse(run('npm', ['pack', PIN.package, '--json', '--pack-destination', work], { cwd: work }));
  const tarball = join(work, packed[0].filename);
  const actual = sriOf(tarball);
  if (actual !== PIN.integrity) {
    throw new Error(`${PIN.package}: integrity mismatch\n  expected ${PIN.integrity}\n  got      ${actual}`);
  }
  run('tar', ['-xzf', tarball, '-C', work, PIN.bundle]);
  run('git', ['clone', '--quiet', '--no-checkout', join(work, PIN.bundle), clone]);
  run('git', ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', PIN.commit], { cwd: clone });
  const head = run('git', ['rev-parse', 'HEAD'], { cwd: clone });
  if (head !== PIN.commit) throw new Error(`llama.cpp bundle: expected commit ${PIN.commit}, got ${head}`);
}

function vendor(target, stampPath, stamp) {
  const work = mkdtempSync(join(tmpdir(), 'cos-vendor-'));
  try {
    const clone = join(work, 'llama.cpp');
    checkoutPinned(work, clone);
    applyPatches(clone);
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

/** The whole tree, .git included, checked out next to DEST and renamed into place once complete. */
function vendorFull(dest, stampPath, stamp) {
  mkdirSync(dirname(dest), { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'cos-vendor-'));
  // Same filesystem as DEST, so the final rename cannot fail across devices.
  const staging = mkdtempSync(`${dest}.partial-`);
  try {
    const clone = join(staging, 'llama.cpp');
    checkoutPinned(work, clone);
    writeFileSync(join(clone, 'VENDORED.json'), JSON.stringify(stamp, null, 2) + '\n');
    rmSync(dest, { recursive: true, force: true });
    renameSync(clone, dest);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(staging, { recursive: true, force: true });
  }
  if (!isUpToDate(stampPath, stamp)) throw new Error(`llama.cpp: ${dest} was not stamped`);
}

const fullAt = process.argv.indexOf('--full');
if (fullAt !== -1) {
  const arg = process.argv[fullAt + 1];
  if (arg === undefined || arg.startsWith('--')) {
    console.error('usage: node scripts/vendor-llama-cpp.mjs [--full DEST]');
    process.exit(2);
  }
  const dest = resolve(arg);
  const stampPath = join(dest, 'VENDORED.json');
  const stamp = { source: PIN.package, integrity: PIN.integrity, commit: PIN.commit, full: true };
  if (isUpToDate(stampPath, stamp)) {
    console.log(`llama.cpp ${PIN.commit.slice(0, 12)} (full tree) already in ${dest}`);
  } else {
    vendorFull(dest, stampPath, stamp);
    console.log(`llama.cpp ${PIN.commit.slice(0, 12)} (full tree) checked out into ${dest} from ${PIN.package}`);
  }
} else {
  const target = join(root, 'deps', 'llama.cpp');
  const stampPath = join(target, 'VENDORED.json');
  const stamp = { source: PIN.package, integrity: PIN.integrity, commit: PIN.commit, kept: KEEP, dropped: DROP, patches: PATCHES };
  if (isUpToDate(stampPath, stamp)) {
    console.log(`llama.cpp ${PIN.commit.slice(0, 12)} already in deps/llama.cpp`);
  } else {
    mkdirSync(dirname(target), { recursive: true });
    vendor(target, stampPath, stamp);
    const patched = PATCHES.length > 0 ? `, patched with ${PATCHES.map((p) => p.name).join(', ')}` : '';
    console.log(`llama.cpp ${PIN.commit.slice(0, 12)} vendored into deps/llama.cpp from ${PIN.package}${patched}`);
  }
}
