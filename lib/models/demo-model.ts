/**
 * The trained Chain-of-Spot demo model: a LLaVA-1.5 pair (a `llama` text model with the tiny
 * vocabulary, and a CLIP mmproj with the `mlp` projector) whose weights come from train/ (PyTorch)
 * instead of a random generator. The layout (keys, tensor names, the legacy fc1/fc2 naming, the
 * extra stored vision layer) is tiny-model's; the vocabulary is {@link tinyVocab}, so prompts
 * tokenize exactly as they did in training.
 *
 * The weights arrive as train/export.py writes them: `weights.json` (config and, per tensor, its
 * GGUF name, file, ggml shape, type and offset) and `weights.bin` (float32 little-endian).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { GgmlType } from '../gguf/format';
import type { GgufTensor } from '../gguf/writer';
import { llavaMmprojMetadata, llavaTextMetadata, tinyVocab, writeAtomically, type TinyModelSpec } from './tiny-model';

/** The model's shape, as train/model.py's Config writes it. */
export interface DemoModelConfig {
  readonly image_size: number;
  readonly patch_size: number;
  readonly v_width: number;
  readonly v_heads: number;
  readonly v_ffn: number;
  /** Vision layers run; the file stores one more (llama.cpp runs all but the last stored). */
  readonly v_layers_run: number;
  readonly v_eps: number;
  readonly t_width: number;
  readonly t_heads: number;
  readonly t_layers: number;
  readonly t_ffn: number;
  readonly rope_base: number;
  readonly rms_eps: number;
  readonly vocab: number;
  readonly context: number;
}

interface ManifestTensor {
  readonly file: 'text' | 'mmproj';
  readonly name: string;
  readonly shape: readonly number[];
  readonly type: 'f16' | 'f32';
  readonly offset: number;
  readonly count: number;
}

interface Manifest {
  readonly config: DemoModelConfig;
  readonly tensors: readonly ManifestTensor[];
}

/** File names of the shipped pair. */
export const DEMO_MODEL_NAME = 'cos-demo-112';

/**
 * The trained pair's shape as tiny-model's spec, so both pairs are written with the same metadata.
 * The text model is stored in f16 (its 1-D tensors in f32), as the tiny pairs are.
 */
function specOf(c: DemoModelConfig, name: string): TinyModelSpec {
  const vocab = tinyVocab().tokens.length;
  if (vocab !== c.vocab) throw new RangeError(`the weights are for a vocabulary of ${c.vocab} tokens, the tiny vocabulary has ${vocab}`);
  return {
    name,
    text: { nEmbd: c.t_width, nLayer: c.t_layers, nHead: c.t_heads, nHeadKv: c.t_heads, nFf: c.t_ffn, contextLength: c.context, ropeFreqBase: c.rope_base, rmsEps: c.rms_eps },
    // One stored vision layer more than run: llama.cpp runs all but the last stored.
    vision: { imageSize: c.image_size, patchSize: c.patch_size, nEmbd: c.v_width, nLayer: c.v_layers_run + 1, nHead: c.v_heads, nFf: c.v_ffn, layerNormEps: c.v_eps },
  };
}

/** The paths of a written pair. */
export interface DemoModelFiles {
  readonly model: string;
  readonly mmproj: string;
}

/**
 * Writes the trained pair `<name>.gguf` and `<name>-mmproj.gguf` into `outDir` from the weights
 * train/export.py wrote into `weightsDir`.
 */
export async function writeDemoModel(weightsDir: string, outDir: string, name: string = DEMO_MODEL_NAME): Promise<DemoModelFiles> {
  const manifest = JSON.parse(await readFile(join(weightsDir, 'weights.json'), 'utf8')) as Manifest;
  const bin = await readFile(join(weightsDir, 'weights.bin'));
  const floats = new Float32Array(bin.buffer, bin.byteOffset, bin.byteLength / 4);
  const tensorsOf = (file: ManifestTensor['file']): GgufTensor[] =>
    manifest.tensors
      .filter((t) => t.file === file)
      .map((t) => {
        const count = t.shape.reduce((a, b) => a * b, 1);
        if (count !== t.count) throw new RangeError(`tensor ${t.name}: shape [${t.shape.join(', ')}] does not hold ${t.count} values`);
        return {
          name: t.name,
          shape: t.shape,
          type: t.type === 'f16' ? GgmlType.F16 : GgmlType.F32,
          data: () => [floats.slice(t.offset / 4, t.offset / 4 + t.count)],
        };
      });
  const spec = specOf(manifest.config, name);
  const files = { model: join(outDir, `${name}.gguf`), mmproj: join(outDir, `${name}-mmproj.gguf`) };
  await mkdir(outDir, { recursive: true });
  await writeAtomically(files.model, { metadata: llavaTextMetadata(spec, `${name} (Chain-of-Spot demo, trained)`), tensors: tensorsOf('text') });
  await writeAtomically(files.mmproj, { metadata: llavaMmprojMetadata(spec, `${name} mmproj (Chain-of-Spot demo, trained)`), tensors: tensorsOf('mmproj') });
  return files;
}

/**
 * Where the package's trained demo pair is: `assets/demo-model/` at the package root (this file runs
 * as dist/lib/models/demo-model.js). What `--demo-model` and `demo` load.
 */
export function demoModelFiles(): DemoModelFiles {
  const dir = join(__dirname, '..', '..', '..', 'assets', 'demo-model');
  return { model: join(dir, `${DEMO_MODEL_NAME}.gguf`), mmproj: join(dir, `${DEMO_MODEL_NAME}-mmproj.gguf`) };
}
