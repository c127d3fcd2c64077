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
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { GgmlType, GgufType, type GgufValue } from '../gguf/format';
import { gguf, writeGguf, type GgufContent, type GgufTensor } from '../gguf/writer';
import { BOS_ID, CLIP_IMAGE_MEAN, CLIP_IMAGE_STD, EOS_ID, UNK_ID, tinyVocab } from './tiny-model';

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

/** `general.file_type` 1: mostly F16. */
const FILE_TYPE_MOSTLY_F16 = 1;

function textMetadata(c: DemoModelConfig, name: string): [string, GgufValue][] {
  const vocab = tinyVocab();
  if (vocab.tokens.length !== c.vocab) throw new RangeError(`the weights are for a vocabulary of ${c.vocab} tokens, the tiny vocabulary has ${vocab.tokens.length}`);
  return [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(`${name} (Chain-of-Spot demo, trained)`)],
    ['general.file_type', gguf.u32(FILE_TYPE_MOSTLY_F16)],
    ['llama.context_length', gguf.u32(c.context)],
    ['llama.embedding_length', gguf.u32(c.t_width)],
    ['llama.block_count', gguf.u32(c.t_layers)],
    ['llama.feed_forward_length', gguf.u32(c.t_ffn)],
    ['llama.rope.dimension_count', gguf.u32(c.t_width / c.t_heads)],
    ['llama.attention.head_count', gguf.u32(c.t_heads)],
    ['llama.attention.head_count_kv', gguf.u32(c.t_heads)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(c.rms_eps)],
    ['llama.rope.freq_base', gguf.f32(c.rope_base)],
    ['llama.vocab_size', gguf.u32(c.vocab)],
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.tokens', gguf.array(GgufType.STRING, vocab.tokens)],
    ['tokenizer.ggml.scores', gguf.array(GgufType.FLOAT32, vocab.scores)],
    ['tokenizer.ggml.token_type', gguf.array(GgufType.INT32, vocab.types)],
    ['tokenizer.ggml.bos_token_id', gguf.u32(BOS_ID)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(EOS_ID)],
    ['tokenizer.ggml.unknown_token_id', gguf.u32(UNK_ID)],
    ['tokenizer.ggml.padding_token_id', gguf.u32(UNK_ID)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(true)],
    ['tokenizer.ggml.add_eos_token', gguf.bool(false)],
    ['tokenizer.ggml.add_space_prefix', gguf.bool(true)],
  ];
}

function mmprojMetadata(c: DemoModelConfig, name: string): [string, GgufValue][] {
  return [
    ['general.architecture', gguf.str('clip')],
    ['clip.has_text_encoder', gguf.bool(false)],
    ['clip.has_vision_encoder', gguf.bool(true)],
    ['clip.has_llava_projector', gguf.bool(true)],
    ['general.file_type', gguf.u32(FILE_TYPE_MOSTLY_F16)],
    ['general.name', gguf.str(`${name} mmproj (Chain-of-Spot demo, trained)`)],
    ['general.description', gguf.str('image encoder for LLaVA')],
    ['clip.projector_type', gguf.str('mlp')],
    ['clip.vision.image_size', gguf.u32(c.image_size)],
    ['clip.vision.patch_size', gguf.u32(c.patch_size)],
    ['clip.vision.embedding_length', gguf.u32(c.v_width)],
    ['clip.vision.feed_forward_length', gguf.u32(c.v_ffn)],
    ['clip.vision.projection_dim', gguf.u32(c.v_width)],
    ['clip.vision.attention.head_count', gguf.u32(c.v_heads)],
    ['clip.vision.attention.layer_norm_epsilon', gguf.f32(c.v_eps)],
    ['clip.vision.block_count', gguf.u32(c.v_layers_run + 1)],
    ['clip.vision.image_mean', gguf.array(GgufType.FLOAT32, CLIP_IMAGE_MEAN)],
    ['clip.vision.image_std', gguf.array(GgufType.FLOAT32, CLIP_IMAGE_STD)],
    // false selects quick-GELU, CLIP's activation (train/model.py uses it).
    ['clip.use_gelu', gguf.bool(false)],
  ];
}

/** The paths of a written pair. */
export interface DemoModelFiles {
  readonly model: string;
  readonly mmproj: string;
}

async function writeAtomically(path: string, content: GgufContent): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeGguf(tmp, content);
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
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
  const files = { model: join(outDir, `${name}.gguf`), mmproj: join(outDir, `${name}-mmproj.gguf`) };
  await mkdir(outDir, { recursive: true });
  await writeAtomically(files.model, { metadata: textMetadata(manifest.config, name), tensors: tensorsOf('text') });
  await writeAtomically(files.mmproj, { metadata: mmprojMetadata(manifest.config, name), tensors: tensorsOf('mmproj') });
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
