/**
 * The GPU backend's numbers against the CPU binary's, and what gpuLayers and projectorGpu put
 * where (llama.cpp's log names the buffers). Each probe loads a model, and on lavapipe every load
 * compiles the pipelines it uses again: the cases are few on purpose.
 */
import assert from 'node:assert/strict';

import { TINY_LLAVA_FAST } from '../../lib/models/tiny-model';
import { maxRelativeDifference } from '../support/logits';
import { GPU_TOLERANCE, gpuDevice, ONE_LAYER_OFF, probe, probeOnCpu, type ProbeResult } from '../support/gpu';

const layers = TINY_LLAVA_FAST.text.nLayer + 1; // llama.cpp counts the output layer as one
const difference = (a: ProbeResult, b: ProbeResult): number => maxRelativeDifference(Float32Array.from(a.logits), Float32Array.from(b.logits));
const logText = (r: ProbeResult): string => r.log.join('');

describe('logits on the GPU backend', function () {
  this.timeout(900_000);
  let device: string;
  let cpu: ProbeResult;

  before(async () => {
    device = gpuDevice().name;
    cpu = await probeOnCpu(TINY_LLAVA_FAST, { gpuLayers: 0, projectorGpu: false });
  });

  it('with every layer and the projector on the device, equal the CPU binary\'s within the tolerance; one layer left off is far outside it', async () => {
    const gpu = await probe(TINY_LLAVA_FAST, { gpuLayers: 'max', projectorGpu: true });
    assert.match(logText(gpu), new RegExp(`offloaded ${layers}/${layers} layers to GPU`));
    assert.match(logText(gpu), new RegExp(`${device} model buffer size`));
    assert.match(logText(gpu), new RegExp(`CLIP using ${device} backend`));
    const measured = difference(gpu, cpu);
    assert.ok(measured <= GPU_TOLERANCE, `GPU against CPU: ${measured.toExponential(2)} > ${GPU_TOLERANCE}`);
    // The tolerance can see a wrong model: the same weights with the last layer missing.
    const wrong = await probeOnCpu(ONE_LAYER_OFF, { gpuLayers: 0, projectorGpu: false });
    // Printed, so that CI's log keeps the measured margin.
    console.log(`      GPU against CPU ${measured.toExponential(2)}; one layer off ${difference(wrong, gpu).toExponential(2)} (tolerance ${GPU_TOLERANCE})`);
    assert.ok(difference(wrong, gpu) > 10 * GPU_TOLERANCE, `one layer off: ${difference(wrong, gpu).toExponential(2)}`);
  });

  it('gpuLayers 1 puts one layer on the device, and projectorGpu false keeps the image encoder on the CPU; same logits', async () => {
    const partial = await probe(TINY_LLAVA_FAST, { gpuLayers: 1, projectorGpu: false });
    assert.match(logText(partial), new RegExp(`offloaded 1/${layers} layers to GPU`));
    assert.match(logText(partial), /CLIP using CPU backend/);
    assert.doesNotMatch(logText(partial), new RegExp(`CLIP using ${device} backend`));
    const measured = difference(partial, cpu);
    console.log(`      partial offload against CPU ${measured.toExponential(2)}`);
    assert.ok(measured <= GPU_TOLERANCE, `partial offload against CPU: ${measured.toExponential(2)} > ${GPU_TOLERANCE}`);
  });
});
