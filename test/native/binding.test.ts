import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { backend, binaryCandidates, chooseBinary, smokeTestInChild, supportedCpuLevels, type Candidate } from '../../lib/native/loader';
import { ChainOfSpotError } from '../../lib/common/errors';
import { REPO_ROOT } from '../support/paths';

const AVX512 = new Set(['avx', 'avx2', 'fma', 'f16c', 'bmi2', 'avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl']);
const AVX2 = new Set(['avx', 'avx2', 'fma', 'f16c', 'bmi2']);

describe('binary loader', () => {
  it('knows which x86-64 levels a CPU runs, best first', () => {
    assert.deepEqual(supportedCpuLevels(AVX512), ['x86-64-v4', 'x86-64-v3', 'x86-64']);
    assert.deepEqual(supportedCpuLevels(AVX2), ['x86-64-v3', 'x86-64']);
    assert.deepEqual(supportedCpuLevels(new Set(['sse4_2'])), ['x86-64']);
  });

  it('lists CUDA binaries first, then Vulkan ones, then prebuilt CPU levels, then the local build', () => {
    const candidates = binaryCandidates({ root: '/pkg', platform: 'linux', arch: 'x64', cpuFlags: AVX2 });
    assert.deepEqual(
      candidates.map((c) => [c.backend, c.path, c.cpuLevel]),
      [
        ['cuda', '/pkg/prebuilds/linux-x64-cuda/chain_of_spot.node', undefined],
        ['cuda', '/pkg/build-cuda/Release/chain_of_spot.node', undefined],
        ['vulkan', '/pkg/prebuilds/linux-x64-vulkan/chain_of_spot.node', undefined],
        ['vulkan', '/pkg/build-vulkan/Release/chain_of_spot.node', undefined],
        ['cpu', '/pkg/prebuilds/linux-x64/chain_of_spot.x86-64-v3.node', 'x86-64-v3'],
        ['cpu', '/pkg/prebuilds/linux-x64/chain_of_spot.x86-64.node', 'x86-64'],
        ['cpu', '/pkg/prebuilds/linux-x64/chain_of_spot.node', undefined],
        ['cpu', '/pkg/build/Release/chain_of_spot.node', undefined],
      ],
    );
  });

  it('loads binaries from the unpacked twin of an Electron asar archive', () => {
    const [first] = binaryCandidates({ root: '/app/resources/app.asar/node_modules/chain-of-spot', platform: 'linux', arch: 'x64', cpuFlags: AVX2 });
    assert.equal(first!.path, '/app/resources/app.asar.unpacked/node_modules/chain-of-spot/prebuilds/linux-x64-cuda/chain_of_spot.node');
  });

  describe('choosing the backend', () => {
    const candidates: Candidate[] = [
      { path: '/cuda.node', backend: 'cuda' },
      { path: '/vulkan.node', backend: 'vulkan' },
      { path: '/v4.node', backend: 'cpu', cpuLevel: 'x86-64-v4' },
      { path: '/local.node', backend: 'cpu' },
    ];
    const everything = (): boolean => true;
    const loadsFine = (): undefined => undefined;

    it('auto takes CUDA when its smoke test passes', () => {
      const choice = chooseBinary({ candidates, preference: 'auto', exists: everything, smokeTest: () => undefined, load: loadsFine });
      assert.equal(choice.backend, 'cuda');
      assert.equal(choice.path, '/cuda.node');
    });

    it('auto takes Vulkan when CUDA fails its smoke test, smoke-testing each as its backend, and says why', () => {
      const tested: string[] = [];
      const smokeTest = (p: string, b: string): string | undefined => (tested.push(`${b} ${p}`), p === '/cuda.node' ? 'sees no CUDA GPU' : undefined);
      const choice = chooseBinary({ candidates, preference: 'auto', exists: everything, smokeTest, load: loadsFine });
      assert.deepEqual([choice.backend, choice.path], ['vulkan', '/vulkan.node']);
      assert.deepEqual(tested, ['cuda /cuda.node', 'vulkan /vulkan.node']);
      assert.equal(choice.reason, 'backend preference auto (no working CUDA binary)');
      assert.deepEqual(choice.passedOver, ['/cuda.node: sees no CUDA GPU']);
    });

    it('auto falls back to the best CPU binary when no GPU binary passes, and lists why each was passed over', () => {
      const choice = chooseBinary({ candidates, preference: 'auto', exists: (p) => p !== '/cuda.node', smokeTest: () => 'sees no device', load: loadsFine });
      assert.deepEqual([choice.backend, choice.path, choice.cpuLevel], ['cpu', '/v4.node', 'x86-64-v4']);
      assert.equal(choice.reason, 'backend preference auto (no working CUDA or Vulkan binary)');
      assert.deepEqual(choice.passedOver, ['/cuda.node: not found', '/vulkan.node: sees no device']);
    });

    it('vulkan takes only the Vulkan binary, and without one is ERR_BINARY with how to build one', () => {
      const choice = chooseBinary({ candidates, preference: 'vulkan', exists: everything, smokeTest: loadsFine, load: loadsFine });
      assert.deepEqual([choice.backend, choice.path, choice.passedOver], ['vulkan', '/vulkan.node', []]);
      // A second Vulkan binary after a missing one: no 'no working Vulkan binary' in the reason.
      const second = chooseBinary({ candidates: [{ path: '/gone.node', backend: 'vulkan' }, ...candidates], preference: 'auto', exists: (p) => p !== '/gone.node', smokeTest: (p) => (p === '/cuda.node' ? 'sees no CUDA GPU' : undefined), load: loadsFine });
      assert.deepEqual([second.path, second.reason], ['/vulkan.node', 'backend preference auto (no working CUDA binary)']);
      assert.throws(
        () => chooseBinary({ candidates, preference: 'vulkan', exists: everything, smokeTest: () => 'sees no device', load: loadsFine }),
        (error: ChainOfSpotError) =>
          error.code === 'ERR_BINARY' && /CHAIN_OF_SPOT_VULKAN=1/.test(error.message) && /\/vulkan\.node: sees no device/.test(error.message) && !error.message.includes('/v4.node'),
      );
    });

    it('cpu never smoke-tests or loads a CUDA binary', () => {
      const tried: string[] = [];
      const choice = chooseBinary({
        candidates,
        preference: 'cpu',
        exists: everything,
        smokeTest: (p) => assert.fail(`smoke-tested ${p}`),
        load: (p) => void tried.push(p),
      });
      assert.equal(choice.backend, 'cpu');
      assert.deepEqual(tried, ['/v4.node']);
    });

    it('a CPU binary that fails to load gives way to the next', () => {
      const choice = chooseBinary({ candidates, preference: 'cpu', exists: everything, smokeTest: loadsFine, load: (p) => (p === '/v4.node' ? 'illegal instruction' : undefined) });
      assert.equal(choice.path, '/local.node');
    });

    it('cuda without a working CUDA binary is ERR_BINARY with how to build one', () => {
      assert.throws(
        () => chooseBinary({ candidates, preference: 'cuda', exists: (p) => p !== '/cuda.node', smokeTest: loadsFine, load: loadsFine }),
        (error: ChainOfSpotError) => error.code === 'ERR_BINARY' && /CHAIN_OF_SPOT_CUDA=1/.test(error.message) && /\/cuda\.node: not found/.test(error.message),
      );
    });

    it('nothing at all is ERR_BINARY listing every path tried', () => {
      assert.throws(
        () => chooseBinary({ candidates, preference: 'auto', exists: () => false, smokeTest: loadsFine, load: loadsFine }),
        (error: ChainOfSpotError) => error.code === 'ERR_BINARY' && candidates.every((c) => error.message.includes(c.path)),
      );
    });
  });

  it('a broken CUDA binary fails its smoke test in a child process, not in this one', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cos-binding-'));
    try {
      const broken = path.join(dir, 'chain_of_spot.node');
      await writeFile(broken, 'not a shared object');
      assert.match(smokeTestInChild(broken, 'cuda') ?? '', /smoke test/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('on this CPU-only machine the choice is the CPU backend, reported without noise', () => {
    const choice = backend();
    assert.equal(choice.backend, 'cpu');
    assert.equal(choice.gpuOffload, false);
    assert.deepEqual(choice.devices, []);
    // The binary was built from the pinned commit (deps/llama.cpp.json, which CMake reads).
    const pin = JSON.parse(readFileSync(path.join(REPO_ROOT, 'deps', 'llama.cpp.json'), 'utf8')) as { commit: string };
    assert.equal(choice.llamaCppCommit, pin.commit);
  });

  it('CHAIN_OF_SPOT_BACKEND=cuda without a CUDA binary fails with ERR_BINARY in a fresh process', () => {
    const script = `try { require(${JSON.stringify(path.resolve(__dirname, '../../lib/native/loader.js'))}).backend(); process.exit(0) } catch (e) { console.log(e.code); process.exit(e.code === 'ERR_BINARY' ? 7 : 1) }`;
    // The backend preference only applies when no explicit binary is named (CI names one).
    const env: NodeJS.ProcessEnv = { ...process.env, CHAIN_OF_SPOT_BACKEND: 'cuda' };
    delete env.CHAIN_OF_SPOT_BINARY;
    const child = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
    assert.equal(child.status, 7, child.stdout + child.stderr);
  });
});
