/**
 * `chain-of-spot demo`: the whole procedure on a bundled photo and model, with the pictures written.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import { ChainOfSpotError } from '../common/errors';
import { ensureTinyLlava, TINY_LLAVA } from '../models/tiny-model';
import { PACKAGE_ROOT } from '../native/loader';
import type { Command } from './args';
import { askAndSave, formatAskResult, savedFiles } from './ask';
import { cacheDir, loadModel, readImage } from './io';
import { Progress } from './progress';

const DEMO_PHOTO = path.join(PACKAGE_ROOT, 'assets', 'chelsea.png');
const DEMO_QUESTION = 'What is the cat looking at?';
const DEMO_FILES = { annotated: 'chain-of-spot-demo.png', roi: 'chain-of-spot-demo-roi.png' };

export async function demo(command: Extract<Command, { command: 'demo' }>, signal: AbortSignal): Promise<number> {
  const cache = cacheDir(process.env);
  const preparing = new Progress({ label: `preparing the tiny demo model in ${cache}` });
  let files;
  try {
    files = await ensureTinyLlava(cache, TINY_LLAVA);
  } catch (error) {
    preparing.fail();
    throw new ChainOfSpotError('ERR_OUTPUT', `cannot write the demo model to ${cache}: ${(error as Error).message}; set CHAIN_OF_SPOT_CACHE to a writable folder`, { cause: error });
  }
  preparing.done();
  try {
    await mkdir(command.out, { recursive: true });
  } catch (error) {
    throw new ChainOfSpotError('ERR_OUTPUT', `cannot create the folder ${command.out}: ${(error as Error).message}; choose another --out`, { cause: error });
  }
  const image = await readImage(DEMO_PHOTO);
  const cos = await loadModel({ ...files, gpuLayers: 'auto', threads: undefined }, signal);
  const saved = { annotate: path.join(command.out, DEMO_FILES.annotated), saveRoi: path.join(command.out, DEMO_FILES.roi) };
  try {
    const result = await askAndSave(cos, image, DEMO_QUESTION, { ...saved, stream: false, maxTokens: 16, grammar: true }, signal);
    process.stdout.write(
      `Chain-of-Spot demo on the bundled photo ${path.relative(PACKAGE_ROOT, DEMO_PHOTO)} (${image.width}x${image.height})\n` +
        `Question: ${DEMO_QUESTION}\n` +
        formatAskResult(result, image, { streamed: false, saved: savedFiles(saved) }) +
        '\nThe demo model is tiny and has RANDOM WEIGHTS: its answer and its region mean nothing; the demo only\n' +
        'shows both turns running on this machine. For real answers, get LLaVA-1.5 GGUF weights ("Getting weights"\n' +
        'in the README) and run: chain-of-spot ask IMAGE "QUESTION" --model MODEL.gguf --mmproj MMPROJ.gguf\n',
    );
  } finally {
    await cos.dispose();
  }
  return 0;
}

