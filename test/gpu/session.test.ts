/**
 * The KV cache on the device: copying and truncating sequences there, the memory given back over
 * many loads and disposes, and a context the device cannot hold (ERR_GPU_MEMORY, the process lives on).
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { Model } from '../../lib/llama/model';
import { TINY_LLAVA_FAST, type TinyModelSpec } from '../../lib/models/tiny-model';
import { backend } from '../../lib/native/loader';
import { GPU_TOLERANCE, gpuDevice } from '../support/gpu';
import { patterned } from '../support/images';
import { maxRelativeDifference } from '../support/logits';
import { tinyPair } from '../support/models';

const MiB = 1 << 20;

describe('the KV cache on the GPU', function () {
  this.timeout(900_000);
  before(() => gpuDevice());

  it('a sequence copied on the device, and one truncated and evaluated again, give the logits of the original', async () => {
    const pair = await tinyPair(TINY_LLAVA_FAST);
    const model = await Model.load(pair.model, { gpuLayers: 'max' });
    try {
      const projector = await model.loadProjector(pair.mmproj, { gpu: true });
      const session = await model.createSession({ contextSize: 1024, sequences: 2 });
      await session.evaluate('A chat. USER: ', { addBos: true });
      await session.evaluateImage(projector, patterned(112, 112));
      const tail = model.tokenize('\nWhat colour is the tag? ASSISTANT:');
      await session.evaluate(tail);
      const original = (await session.logits(0))!;
      const end = session.position(0);
      const last = [tail[tail.length - 1]!];

      await session.copySequence(0, 1);
      await session.truncate(end - 1, 1);
      await session.evaluate(last, { sequence: 1 });
      const copied = (await session.logits(1))!;
      assert.ok(maxRelativeDifference(copied, original) <= GPU_TOLERANCE, `copy: ${maxRelativeDifference(copied, original)}`);

      // More tokens on sequence 0, then back to the prompt's end minus one, and its last token again.
      await session.evaluate(model.tokenize(' It is red, and the box is at the top.'));
      await session.truncate(end - 1, 0);
      await session.evaluate(last);
      const truncated = (await session.logits(0))!;
      assert.equal(session.position(0), end);
      assert.ok(maxRelativeDifference(truncated, original) <= GPU_TOLERANCE, `truncate: ${maxRelativeDifference(truncated, original)}`);
      // The two comparisons can fail: the logits one token earlier are far from these.
      await session.truncate(end - 1, 0);
      await session.truncate(end - 2, 1);
      await session.evaluate([tail[tail.length - 2]!], { sequence: 1 });
      assert.ok(maxRelativeDifference((await session.logits(1))!, original) > GPU_TOLERANCE);
    } finally {
      await model.dispose();
    }
  });

  it('gives its memory back: many loads and disposes with a large cache leave the memory where it was', async () => {
    // ggml reads a device's free memory from VK_EXT_memory_budget (or CUDA's own count); lavapipe
    // has no budget and reports its whole heap free, but its device memory is this process's own,
    // so there the resident set is what shows a leak. Each round holds a 128 MiB cache.
    const pair = await tinyPair(TINY_LLAVA_FAST);
    const used = (): number => {
      const device = backend().devices[0]!;
      return device.memoryTotal - device.memoryFree;
    };
    const round = async (): Promise<{ deviceUsed: number; rss: number }> => {
      const model = await Model.load(pair.model, { gpuLayers: 'max' });
      try {
        const projector = await model.loadProjector(pair.mmproj, { gpu: true });
        const session = await model.createSession({ contextSize: 65_536 });
        await session.evaluate('A chat. USER: ', { addBos: true });
        await session.evaluateImage(projector, patterned(112, 112));
        return { deviceUsed: used(), rss: process.memoryUsage().rss };
      } finally {
        await model.dispose();
      }
    };
    const start = { deviceUsed: used(), rss: process.memoryUsage().rss };
    const first = await round();
    const afterFirst = { deviceUsed: used(), rss: process.memoryUsage().rss };
    for (let i = 0; i < 7; i++) await round();
    const end = { deviceUsed: used(), rss: process.memoryUsage().rss };
    if (first.deviceUsed > start.deviceUsed) {
      // The device counts its memory: a loaded model uses some, and all of it comes back.
      assert.ok(end.deviceUsed <= start.deviceUsed + 16 * MiB, `device memory used: ${start.deviceUsed / MiB} MiB before, ${end.deviceUsed / MiB} MiB after 8 rounds`);
    } else {
      assert.ok(first.rss - start.rss > 100 * MiB, `a round's cache did not show in the resident set (${(first.rss - start.rss) / MiB} MiB)`);
      assert.ok(end.rss - afterFirst.rss < 64 * MiB, `resident set grew ${(end.rss - afterFirst.rss) / MiB} MiB over 7 more rounds`);
    }
  });

  it('a context larger than the device can hold is ERR_GPU_MEMORY, and the process goes on', async () => {
    // 2048 wide, 1M tokens: each layer's K cache is 4 GiB, beyond lavapipe's 2 GiB allocations (and
    // its 2 GiB heap), so nothing is allocated before the refusal; on a larger device, more layers.
    const perLayer = 2 * 2048 * 2 * (1 << 20);
    const nLayer = Math.max(1, Math.ceil((1.5 * gpuDevice().memoryTotal) / perLayer));
    const wide: TinyModelSpec = {
      ...TINY_LLAVA_FAST,
      name: `tiny-llava-112-wide-${nLayer}`,
      text: { ...TINY_LLAVA_FAST.text, nEmbd: 2048, nHead: 16, nHeadKv: 16, nFf: 2048, nLayer, contextLength: 1 << 20 },
    };
    const model = await Model.load((await tinyPair(wide)).model, { gpuLayers: 'max' });
    try {
      await assert.rejects(model.createSession({ contextSize: 1 << 20 }), (error: unknown) => {
        assert.ok(error instanceof ChainOfSpotError, String(error));
        assert.equal(error.code, 'ERR_GPU_MEMORY', error.message);
        return true;
      });
      const session = await model.createSession({ contextSize: 256 });
      await session.evaluate('Still here.', { addBos: true });
      assert.ok((await session.logits())!.length > 0);
    } finally {
      await model.dispose();
    }
  });
});
