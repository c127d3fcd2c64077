/**
 * Decodes that make ggml's Vulkan backend regrow a scratch buffer mid-session, and the Chain-of-Spot
 * question on the random tiny pair that does so, in a child process that must live. After a
 * one-token decode, a longer one needs a larger flash-attention split-k buffer: ggml waits for the
 * device, destroys the old one and makes a new one. Descriptor sets ggml reuses may still name the
 * old buffer at bindings their next pipeline does not use, which Vulkan allows; Debian 12's
 * lavapipe (Mesa 22.3.6) binds those too and frees the buffer's memory twice (SIGSEGV in
 * libvulkan_lvp.so), unless GGML_VK_DISABLE_FUSION=1, with which consecutive small decodes reuse
 * each set for the same operation. On a GPU driver the test holds without it.
 */
import assert from 'node:assert/strict';

import { TINY_LLAVA_FAST } from '../../lib/models/tiny-model';
import { backend } from '../../lib/native/loader';
import { describeChild, resultOf, runScript } from '../support/child';
import { gpuDevice } from '../support/gpu';
import { tinyPair } from '../support/models';

const CHILD = `
const { ChainOfSpot } = require(process.env.COS_DIST + '/index.js');
(async () => {
  const [model, mmproj] = process.argv.slice(1);
  const cos = await ChainOfSpot.load({ model, mmproj, gpuLayers: 'max' });
  const positions = [];
  let token = 10;
  for (const length of [1, 2, 5]) {
    const evaluated = await cos.session.evaluate(Array.from({ length }, () => token++));
    positions.push(evaluated.position);
  }
  const image = { data: Buffer.alloc(64 * 48 * 3, 90), width: 64, height: 48, channels: 3 };
  const result = await cos.ask(image, 'What is this?', { maxTokens: 4 });
  console.log('RESULT ' + JSON.stringify({ positions, generated: result.turns.map((turn) => turn.generatedTokens), box: result.roi.box }));
  await cos.dispose();
})().catch((error) => { console.error(error); process.exit(1); });
`;

interface ChildOutcome {
  positions: number[];
  generated: number[];
  box: { left: number; top: number; right: number; bottom: number };
}

describe('scratch buffers ggml regrows on the GPU', function () {
  this.timeout(900_000);
  before(() => gpuDevice());

  it('a one-token decode, then longer ones, then a question on the tiny pair: the process lives and each step lands', async () => {
    const pair = await tinyPair(TINY_LLAVA_FAST);
    const child = await runScript(CHILD, [pair.model, pair.mmproj], { env: { CHAIN_OF_SPOT_BINARY: backend().path }, timeoutMs: 600_000 });
    const hint = gpuDevice().description.includes('llvmpipe') && process.env.GGML_VK_DISABLE_FUSION === undefined
      ? ' (on lavapipe, run with GGML_VK_DISABLE_FUSION=1: README, GPUs)'
      : '';
    assert.ok(!child.timedOut && child.signal === null && child.code === 0, `${describeChild(child)}${hint}`);
    const outcome = resultOf<ChildOutcome>(child);
    assert.deepEqual(outcome.positions, [1, 3, 8]);
    // Turn one writes a box under the grammar (a zoom inside the image), turn two its four tokens.
    assert.equal(Object.keys(outcome.box).length, 4);
    for (const side of Object.values(outcome.box)) assert.ok(side >= 0 && side <= 1, JSON.stringify(outcome.box));
    assert.equal(outcome.generated[1], 4);
  });
});
