/**
 * `chain-of-spot demo`: the whole procedure with the package's trained demo pair, on a generated
 * scene: a photo (the bundled one) with small numbered tags, one question about one tag's digit,
 * too small to read in the whole view. It writes the picture with the region drawn and the zoomed
 * region, and prints the answer beside the truth and beside the plain one-turn answer.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { ChainOfSpotError } from '../common/errors';
import { boxIou } from '../image/geometry';
import { loadImage, type RawImageInput } from '../image/image';
import { demoModelFiles } from '../models/demo-model';
import { PACKAGE_ROOT } from '../native/loader';
import { QUESTION_TEMPLATES, questionFor, renderScene } from '../scenes/index';
import type { Command } from './args';
import { askAndSave, formatAskResult, savedFiles } from './ask';
import { loadModel } from './io';

const DEMO_PHOTO = path.join(PACKAGE_ROOT, 'assets', 'chelsea.png');
/** The scene the demo shows: seed and index of `renderScene`, fixed so every run shows the same. */
const DEMO_SCENE = { seed: 2024, index: 0 } as const;
const DEMO_FILES = { annotated: 'chain-of-spot-demo.png', roi: 'chain-of-spot-demo-roi.png' };

export async function demo(command: Extract<Command, { command: 'demo' }>, signal: AbortSignal): Promise<number> {
  const files = demoModelFiles();
  for (const file of [files.model, files.mmproj]) {
    if (!(await stat(file).catch(() => undefined))?.isFile()) {
      throw new ChainOfSpotError('ERR_MODEL_LOAD', `the demo model is not in this install (${file} is missing); reinstall chain-of-spot, or run train/run.sh in a clone`);
    }
  }
  try {
    await mkdir(command.out, { recursive: true });
  } catch (error) {
    throw new ChainOfSpotError('ERR_OUTPUT', `cannot create the folder ${command.out}: ${(error as Error).message}; choose another --out`, { cause: error });
  }
  const photo = await loadImage(DEMO_PHOTO);
  const { canvas, tags } = await renderScene(DEMO_SCENE.seed, DEMO_SCENE.index, [{ name: path.basename(DEMO_PHOTO), ...photo }]);
  const tag = tags[0]!;
  const question = questionFor(tag, QUESTION_TEMPLATES[0]!);
  const image: RawImageInput = { data: canvas.data, width: canvas.width, height: canvas.height, channels: 3 };
  const truth = { left: tag.box[0], top: tag.box[1], right: tag.box[2], bottom: tag.box[3] };

  const cos = await loadModel({ ...files, gpuLayers: 'auto', threads: undefined, family: undefined }, signal);
  const saved = { annotate: path.join(command.out, DEMO_FILES.annotated), saveRoi: path.join(command.out, DEMO_FILES.roi) };
  try {
    const result = await askAndSave(cos, image, question, { ...saved, stream: false, maxTokens: 8, grammar: true }, signal);
    const plain = await cos.baseline(image, question, { maxTokens: 8, signal });
    process.stdout.write(
      `Chain-of-Spot demo: a ${image.width}x${image.height} scene with ${tags.length} small numbered tags on the bundled photo,\n` +
        `and the package's demo model (trained to read them; see train/README.md).\n` +
        `Question: ${question}\n` +
        formatAskResult(result, image, { streamed: false, saved: savedFiles(saved), family: cos.family }) +
        `Truth:   ${tag.digit} (the tag's region overlaps the model's by IoU ${boxIou(result.roi.box, truth).toFixed(2)})\n` +
        `Without the zoom (one plain LLaVA turn, same model): ${plain.answer}\n` +
        '\nFor real photos and questions, get LLaVA-1.5 GGUF weights ("Getting weights" in the README) and run:\n' +
        '  chain-of-spot ask IMAGE "QUESTION" --model MODEL.gguf --mmproj MMPROJ.gguf\n',
    );
  } finally {
    await cos.dispose();
  }
  return 0;
}
