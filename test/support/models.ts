/** The tiny LLaVA-1.5 pairs the tests run on, generated once into .cache/models (git-ignored). */
import path from 'node:path';

import { ensureTinyLlava, TINY_LLAVA, TINY_LLAVA_FAST, type TinyLlavaFiles, type TinyModelSpec } from '../../lib/models/tiny-model';

/** The repository's .cache/models folder (this file runs from dist/test/support/). */
export const MODEL_CACHE = path.resolve(__dirname, '../../../.cache/models');

const pairs = new Map<string, Promise<TinyLlavaFiles>>();

/** The files of a tiny pair, written on first use. */
export function tinyPair(spec: TinyModelSpec = TINY_LLAVA): Promise<TinyLlavaFiles> {
  let files = pairs.get(spec.name);
  if (!files) {
    files = ensureTinyLlava(MODEL_CACHE, spec);
    pairs.set(spec.name, files);
  }
  return files;
}

/** LLaVA-1.5's geometry: 336-pixel images, 576 tokens each. */
export const tinyLlava = (): Promise<TinyLlavaFiles> => tinyPair(TINY_LLAVA);
/** 112-pixel images, 64 tokens each: for tests that need many images. */
export const tinyLlavaFast = (): Promise<TinyLlavaFiles> => tinyPair(TINY_LLAVA_FAST);
