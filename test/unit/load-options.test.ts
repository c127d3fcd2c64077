import assert from 'node:assert/strict';

import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';

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

  it('the instructions and projectorGpu: a mistake throws before the model is read', async () => {
    await assert.rejects(ChainOfSpot.load({ ...MISSING, roiInstruction: 42 as never }), TypeError);
    await assert.rejects(ChainOfSpot.load({ ...MISSING, projectorGpu: 'yes' as never }), TypeError);
  });
});
