import assert from 'node:assert/strict';

import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { ChainOfSpotOptions } from '../../lib/procedure/types';

/** Files that do not exist: an option must be rejected before any of them is opened. */
const MISSING = { model: '/nonexistent/model.gguf', mmproj: '/nonexistent/mmproj.gguf' };

describe('the options of load and connect, checked before anything starts', () => {
  const bad: [unknown, ErrorConstructor][] = [[0, RangeError], [-1, RangeError], [1.5, RangeError], [Number.NaN, TypeError], ['1000', TypeError]];

  it('maxPixels: the same check for the local, the isolated and the remote instance', async () => {
    for (const [maxPixels, type] of bad) {
      const what = `maxPixels ${String(maxPixels)}`;
      await assert.rejects(ChainOfSpot.load({ ...MISSING, maxPixels: maxPixels as number }), type, `load, ${what}`);
      await assert.rejects(ChainOfSpot.load({ ...MISSING, rpcServers: ['127.0.0.1:1'], maxPixels: maxPixels as number }), type, `load with rpcServers, ${what}`);
      // No server listens there: a request would fail with ERR_REMOTE instead.
      await assert.rejects(ChainOfSpot.connect({ url: 'http://127.0.0.1:1', maxPixels: maxPixels as number }), type, `connect, ${what}`);
    }
  });

  it('family and the image token limits, for the local and the isolated instance', async () => {
    type Options = Omit<ChainOfSpotOptions, 'model' | 'mmproj'>;
    const loads = [(options: Options) => ChainOfSpot.load({ ...MISSING, ...options }), (options: Options) => ChainOfSpot.load({ ...MISSING, ...options, rpcServers: ['127.0.0.1:1'] })];
    for (const load of loads) {
      await assert.rejects(load({ family: 'qwen' as never }), /family must be one of llava-1\.5, qwen2\.5-vl, qwen3-vl, internvl, gemma3; got "qwen"/);
      await assert.rejects(load({ imageMinTokens: 0 }), RangeError);
      await assert.rejects(load({ imageMaxTokens: 1.5 }), RangeError);
      await assert.rejects(load({ imageMinTokens: 9, imageMaxTokens: 8 }), /must not exceed/);
    }
  });

  it('the instructions and projectorGpu: a mistake throws before the model is read', async () => {
    await assert.rejects(ChainOfSpot.load({ ...MISSING, roiInstruction: 42 as never }), TypeError);
    await assert.rejects(ChainOfSpot.load({ ...MISSING, projectorGpu: 'yes' as never }), TypeError);
  });
});
