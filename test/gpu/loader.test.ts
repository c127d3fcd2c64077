/**
 * The loader with a real GPU binary: what backend() reports, and the cases where it must pass
 * the binary over (no device named, a broken .node) and say why.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { backend, smokeTestInChild } from '../../lib/native/loader';
import { assertExited, resultOf, runScript } from '../support/child';
import { CPU_BINARY, gpuDevice } from '../support/gpu';

const LOADER = path.resolve(__dirname, '../../lib/native/loader.js');

/** The variable that lists the devices a backend may use (empty: none). */
const VISIBLE = { vulkan: 'GGML_VK_VISIBLE_DEVICES', cuda: 'CUDA_VISIBLE_DEVICES' } as const;

/** Runs `body` with `name` set to `value` (undefined: unset) for the children it starts. */
function withEnv<T>(name: string, value: string | undefined, body: () => T): T {
  const saved = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return body();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

describe('the loader with a GPU binary', function () {
  this.timeout(300_000);

  it('backend() names the backend, the device with its memory, and why', () => {
    const device = gpuDevice();
    const choice = backend();
    assert.equal(choice.gpuOffload, true);
    assert.ok(device.name.length > 0 && device.description.length > 0, JSON.stringify(device));
    assert.ok(device.memoryTotal > 0 && device.memoryFree <= device.memoryTotal, JSON.stringify(device));
    if (choice.backend === 'vulkan') assert.match(device.name, /^Vulkan\d+$/);
    assert.match(choice.reason, /^backend preference /);
  });

  it('a fresh process on auto takes the GPU binary when its device is visible', async () => {
    const env: Record<string, string> = { CHAIN_OF_SPOT_BINARY: '' };
    const child = await runScript(`const b = require(${JSON.stringify(LOADER)}).backend(); console.log('RESULT ' + JSON.stringify(b));`, [], { env });
    assertExited(child);
    const chosen = resultOf<ReturnType<typeof backend>>(child);
    assert.equal(chosen.backend, backend().backend, `${chosen.reason}; passed over: ${chosen.passedOver.join('; ')}`);
    assert.equal(chosen.devices[0]?.description, gpuDevice().description);
  });

  it('a GPU binary whose device list names nothing is passed over, with the reason', () => {
    const { backend: kind, path: binary } = backend();
    assert.ok(kind !== 'cpu');
    const reason = withEnv(VISIBLE[kind], '', () => smokeTestInChild(binary, kind));
    assert.match(reason ?? 'passed', kind === 'vulkan' ? /sees no usable Vulkan device .*GGML_VK_VISIBLE_DEVICES/ : /sees no CUDA GPU/);
    // A CPU-type Vulkan device (lavapipe) is never taken unless named.
    if (/llvmpipe/.test(gpuDevice().description)) {
      assert.match(withEnv(VISIBLE.vulkan, undefined, () => smokeTestInChild(binary, kind)) ?? 'passed', /sees no usable Vulkan device/);
    }
    assert.equal(smokeTestInChild(binary, kind), undefined, 'with the device visible it passes');
  });

  it('a truncated GPU binary fails its smoke test and the CPU binary is used instead', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cos-truncated-'));
    try {
      const truncated = path.join(dir, 'chain_of_spot.node');
      const whole = readFileSync(backend().path);
      await writeFile(truncated, whole.subarray(0, whole.length >> 1));
      const script = `const { chooseBinary, smokeTestInChild } = require(${JSON.stringify(LOADER)});
        const { existsSync } = require('node:fs');
        const choice = chooseBinary({
          candidates: [{ path: ${JSON.stringify(truncated)}, backend: ${JSON.stringify(backend().backend)} }, { path: ${JSON.stringify(CPU_BINARY)}, backend: 'cpu' }],
          preference: 'auto', exists: existsSync, smokeTest: smokeTestInChild,
          load: (p) => { try { require(p); return undefined; } catch (e) { return e.message; } },
        });
        console.log('RESULT ' + JSON.stringify(choice));`;
      const child = await runScript(script);
      assertExited(child);
      const choice = resultOf<ReturnType<typeof backend>>(child);
      assert.equal(choice.path, CPU_BINARY);
      assert.equal(choice.passedOver.length, 1);
      assert.match(choice.passedOver[0]!, new RegExp(`^${truncated.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: failed its smoke test`));
      assert.match(choice.reason, /no working (CUDA|Vulkan) binary/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
