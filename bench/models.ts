/**
 * The benchmark's models: LLaVA-1.5's real shapes with random weights, written by the project's own
 * GGUF generator (speed does not depend on the weights' values). Generated once into
 * `.cache/bench-models/` (git-ignored) and kept while their fingerprint matches.
 */
import path from 'node:path';

import { ensureTinyLlava, TINY_LLAVA, type TinyLlavaFiles, type TinyModelSpec, type TinyVisionSpec } from '../lib/models/tiny-model';

export type Shape = 'tiny' | '1b' | '7b';
export const SHAPES: readonly Shape[] = ['tiny', '1b', '7b'];

/** This file runs from dist/bench/. */
const REPO_ROOT = path.resolve(__dirname, '../..');
export const BENCH_MODEL_DIR = path.join(REPO_ROOT, '.cache', 'bench-models');

/** LLaVA-1.5's vision tower: CLIP ViT-L/14 at 336 px (24 layers stored, 23 run), with the MLP projector. */
const CLIP_VIT_L_336: TinyVisionSpec = { imageSize: 336, patchSize: 14, nEmbd: 1024, nLayer: 24, nHead: 16, nFf: 4096, layerNormEps: 1e-5 };

/** A 1.1B-parameter LLaMA (TinyLlama's shape: GQA with 4 KV heads) behind LLaVA-1.5's vision tower, in f16. */
export const BENCH_1B: TinyModelSpec = {
  name: 'bench-llava-1b-f16',
  text: { nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, contextLength: 4096, ropeFreqBase: 10000, rmsEps: 1e-5 },
  vision: CLIP_VIT_L_336,
  vocabSize: 32000,
};

/** LLaVA-1.5-7B's text model (Vicuna-7B's shape) in Q4_K_M, for GPU runs. */
export const BENCH_7B: TinyModelSpec = {
  name: 'bench-llava-7b-q4_k_m',
  text: { nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 32, nFf: 11008, contextLength: 4096, ropeFreqBase: 10000, rmsEps: 1e-5 },
  vision: CLIP_VIT_L_336,
  vocabSize: 32000,
  textType: 'q4_k_m',
};

/** The model files of a shape, generated when missing (minutes for the 1b and 7b shapes, once). */
export async function benchModels(shape: Shape): Promise<TinyLlavaFiles> {
  switch (shape) {
    case 'tiny':
      return ensureTinyLlava(path.join(REPO_ROOT, '.cache', 'models'), TINY_LLAVA);
    case '1b':
      return ensureTinyLlava(BENCH_MODEL_DIR, BENCH_1B);
    case '7b':
      return ensureTinyLlava(BENCH_MODEL_DIR, BENCH_7B);
  }
}
