/**
 * What the GPU tests (test/gpu, `npm run test:gpu`) share: the GPU backend this process must have
 * loaded, the CPU binary whose numbers they compare with (run in a child process, since one process
 * loads one binary), and the probe both sides run, so that the two runs do the same thing.
 */
import assert from 'node:assert/strict';
import path from 'node:path';

import { Model } from '../../lib/llama/model';
import { TINY_LLAVA_FAST, type TinyModelSpec } from '../../lib/models/tiny-model';
import { backend } from '../../lib/native/loader';
import { setLogger } from '../../lib/native/logger';
import { assertExited, resultOf, runScript } from './child';
import { patterned } from './images';
import { tinyPair } from './models';
import { REPO_ROOT } from './paths';

type Device = ReturnType<typeof backend>['devices'][number];

/** The CPU binary the GPU's numbers are compared with: CHAIN_OF_SPOT_CPU_BINARY, else build/. */
export const CPU_BINARY = process.env.CHAIN_OF_SPOT_CPU_BINARY ?? path.join(REPO_ROOT, 'build', 'Release', 'chain_of_spot.node');

/**
 * The device this process's GPU backend uses; fails (never skips) when the loaded binary has none,
 * since the GPU tests would then test the CPU.
 */
export function gpuDevice(): Device {
  const choice = backend();
  assert.notEqual(choice.backend, 'cpu', `the GPU tests need a GPU binary; the loader chose ${choice.path} (${choice.reason}; passed over: ${choice.passedOver.join('; ')}). ` +
    'Build one (npm run build:vulkan) and, on lavapipe, name the device (and turn fusion off, README): GGML_VK_VISIBLE_DEVICES=0 GGML_VK_DISABLE_FUSION=1 npm run test:gpu');
  assert.ok(choice.devices.length > 0, `${choice.path} sees no device`);
  return choice.devices[0]!;
}

/**
 * How far the GPU backend's logits may be from the CPU binary's (largest difference over the largest
 * logit, test/support/logits.ts), after a 112-pixel tiny LLaVA prompt (about 80 tokens, one image).
 * Measured on lavapipe: 8.0e-3 with every layer and the projector on the device, 2.8e-3 with one
 * layer there and the projector on the CPU (ggml's Vulkan matrix products round activations to
 * f16). The same weights with the last text layer left off differ by 6.8e-1.
 */
export const GPU_TOLERANCE = 3e-2;

/** The tiny 112-pixel pair with its last text layer left off: the same weights otherwise (each tensor is seeded by its name). */
export const ONE_LAYER_OFF: TinyModelSpec = { ...TINY_LLAVA_FAST, name: 'tiny-llava-112-one-layer-off', text: { ...TINY_LLAVA_FAST.text, nLayer: TINY_LLAVA_FAST.text.nLayer - 1 } };

export interface ProbeOptions {
  gpuLayers: number | 'max';
  projectorGpu: boolean;
}

export interface ProbeResult {
  /** The logits after a LLaVA prompt (text, an image, text). */
  logits: number[];
  /** llama.cpp's log lines (info and up) of the load and the prompt. */
  log: string[];
}

/** Loads the pair, evaluates BOS + text + an image + a question, and returns the last logits. */
export async function probe(spec: TinyModelSpec, options: ProbeOptions): Promise<ProbeResult> {
  const pair = await tinyPair(spec);
  const log: string[] = [];
  setLogger((_level, text) => log.push(text), 'info');
  const model = await Model.load(pair.model, { gpuLayers: options.gpuLayers });
  try {
    const projector = await model.loadProjector(pair.mmproj, { gpu: options.projectorGpu });
    const session = await model.createSession({ contextSize: 512 });
    await session.evaluate('A chat. USER: ', { addBos: true });
    await session.evaluateImage(projector, patterned(spec.vision.imageSize, spec.vision.imageSize));
    await session.evaluate(model.tokenize('\nWhat is in the picture? ASSISTANT:'));
    const logits = await session.logits();
    assert.ok(logits !== null);
    // Log lines reach JS through the event loop: let the last ones in.
    await new Promise((resolve) => setImmediate(resolve));
    return { logits: Array.from(logits), log };
  } finally {
    setLogger(null);
    await model.dispose();
  }
}

/** {@link probe} in a child process on the CPU binary. */
export async function probeOnCpu(spec: TinyModelSpec, options: ProbeOptions): Promise<ProbeResult> {
  const source = `require(${JSON.stringify(__filename)}).probe(JSON.parse(process.argv[1]), JSON.parse(process.argv[2]))
    .then((r) => console.log('RESULT ' + JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });`;
  const child = await runScript(source, [JSON.stringify(spec), JSON.stringify(options)], { env: { CHAIN_OF_SPOT_BINARY: CPU_BINARY }, timeoutMs: 300_000 });
  assertExited(child);
  return resultOf<ProbeResult>(child);
}
