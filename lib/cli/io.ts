/**
 * What the commands share: reading the image, loading the model with a progress display, checking
 * and writing output files, and the package version.
 */
import { readFileSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { ChainOfSpotError } from '../common/errors';
import { loadImage, type RawImageInput } from '../image/image';
import { PACKAGE_ROOT } from '../native/loader';
import { ChainOfSpot } from '../procedure/chain-of-spot';
import type { ModelArgs } from './args';
import { Progress } from './progress';

// --- files ---------------------------------------------------------------------------------------

export function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The image, decoded once: checked before the model loads, and drawn on afterwards. */
export async function readImage(file: string): Promise<RawImageInput> {
  try {
    return { ...(await loadImage(file)), channels: 3 };
  } catch (error) {
    if (!(error instanceof ChainOfSpotError) || error.message.includes(file)) throw error;
    throw new ChainOfSpotError(error.code, `${file}: ${error.message}`, { cause: error });
  }
}

/** Loads the model with a progress display, after checking both files exist (the projector is read only after the model). */
export async function loadModel(args: Pick<ModelArgs, 'model' | 'mmproj' | 'gpuLayers' | 'threads' | 'family'> & { parallel?: number | undefined }, signal: AbortSignal): Promise<ChainOfSpot> {
  await requireFile(args.model, 'ERR_MODEL_LOAD', 'model file');
  await requireFile(args.mmproj, 'ERR_PROJECTOR_LOAD', 'projector (--mmproj) file');
  const progress = new Progress({ label: `loading model ${path.basename(args.model)}` });
  try {
    const cos = await ChainOfSpot.load({
      model: args.model,
      mmproj: args.mmproj,
      family: args.family,
      gpuLayers: args.gpuLayers,
      threads: args.threads,
      parallel: args.parallel,
      onProgress: (fraction) => progress.update(fraction),
      signal,
    });
    progress.done();
    return cos;
  } catch (error) {
    progress.fail();
    throw error;
  }
}

async function requireFile(file: string, code: 'ERR_MODEL_LOAD' | 'ERR_PROJECTOR_LOAD', what: string): Promise<void> {
  const found = await stat(file).catch(() => undefined);
  if (!found?.isFile()) throw new ChainOfSpotError(code, `${what} not found: ${file}; check the path`);
}

export async function checkOutputFolder(file: string): Promise<void> {
  const folder = path.dirname(path.resolve(file));
  const found = await stat(folder).catch(() => undefined);
  if (!found?.isDirectory()) throw new ChainOfSpotError('ERR_OUTPUT', `the folder ${folder} does not exist: create it, or write ${path.basename(file)} elsewhere`);
}

export async function writeOutput(file: string, bytes: Buffer, what: string): Promise<void> {
  try {
    await writeFile(file, bytes);
  } catch (error) {
    throw new ChainOfSpotError('ERR_OUTPUT', `cannot write the ${what} to ${file}: ${(error as Error).message}; check the folder exists and is writable`, { cause: error });
  }
}

