/**
 * `chain-of-spot ask IMAGE QUESTION`: one question, printed as text or JSON, optionally streamed,
 * with the region drawn on the image and the zoomed region saved.
 */
import { drawRegion, REGION_LABEL } from '../image/annotate';
import type { RawImageInput } from '../image/image';
import { formatBox } from '../procedure/box';
import type { ChainOfSpot } from '../procedure/chain-of-spot';
import type { AskResult, FamilyName, TurnResult } from '../procedure/types';
import type { Command } from './args';
import { checkOutputFolder, loadModel, readImage, writeOutput } from './io';
import { formatDuration } from './progress';

export async function ask(command: Extract<Command, { command: 'ask' }>, signal: AbortSignal): Promise<number> {
  await Promise.all([command.annotate, command.saveRoi].map((file) => file && checkOutputFolder(file)));
  const image = await readImage(command.image);
  const cos = await loadModel(command.model, signal);
  try {
    const outputs = { annotate: command.annotate, saveRoi: command.saveRoi, stream: command.stream, maxTokens: command.model.maxTokens, grammar: command.model.grammar };
    const result = await askAndSave(cos, image, command.question, outputs, signal);
    if (command.json) {
      process.stdout.write(`${JSON.stringify(askJson(command.image, command.question, result), null, 2)}\n`);
    } else {
      process.stdout.write(formatAskResult(result, image, { streamed: command.stream, saved: savedFiles(command), family: cos.family }));
    }
  } finally {
    await cos.dispose();
  }
  return 0;
}

/** What {@link askAndSave} does besides asking. */
export interface AskOutputs {
  annotate?: string | undefined;
  saveRoi?: string | undefined;
  stream: boolean;
  maxTokens: number | undefined;
  grammar: boolean;
}

/** Asks the question, printing the turns as they come when streaming, and writes the pictures asked for. */
export async function askAndSave(cos: ChainOfSpot, image: RawImageInput, question: string, outputs: AskOutputs, signal: AbortSignal): Promise<AskResult> {
  const result = await cos.ask(image, question, {
    maxTokens: outputs.maxTokens,
    grammar: outputs.grammar,
    includeRoiImage: outputs.saveRoi !== undefined,
    onText: outputs.stream ? streamPrinter() : undefined,
    signal,
  });
  if (outputs.stream) process.stdout.write('\n');
  if (outputs.annotate !== undefined) {
    const label = result.roi.source === 'fallback' ? 'whole image (no region read)' : REGION_LABEL;
    await writeOutput(outputs.annotate, await drawRegion(image, result.roi.pixels, { label }), 'annotated image');
  }
  if (outputs.saveRoi !== undefined) await writeOutput(outputs.saveRoi, result.roiImage!, 'zoomed region');
  return result;
}

/** Prints each turn's text as it arrives, under a heading per turn. */
function streamPrinter(): (text: string, turn: 1 | 2) => void {
  let current = 0;
  return (text, turn) => {
    let piece = text;
    if (turn !== current) {
      process.stdout.write(`${current === 0 ? '' : '\n'}${turn === 1 ? 'Turn 1 (region): ' : 'Turn 2 (answer): '}`);
      current = turn;
      piece = piece.trimStart(); // the model's own space after "ASSISTANT:"
    }
    process.stdout.write(piece);
  };
}

/** A picture the command wrote, and what it shows. */
export interface SavedFile {
  file: string;
  what: string;
}

export function savedFiles(outputs: { annotate?: string | undefined; saveRoi?: string | undefined }): SavedFile[] {
  const saved: SavedFile[] = [];
  if (outputs.annotate !== undefined) saved.push({ file: outputs.annotate, what: 'the image with the region drawn on it' });
  if (outputs.saveRoi !== undefined) saved.push({ file: outputs.saveRoi, what: 'the zoomed region the model saw in turn two' });
  return saved;
}

/**
 * The human-readable report of a question: the answer (unless it was streamed), the region as the
 * model's box and in the image's pixels, the time per turn, and the pictures written.
 */
export function formatAskResult(result: AskResult, image: { width: number; height: number }, options: { streamed: boolean; saved: readonly SavedFile[]; family: FamilyName }): string {
  const { box, pixels, source } = result.roi;
  const lines: string[] = [];
  if (!options.streamed) lines.push(`Answer:  ${result.answer}`);
  lines.push(
    `Region:  ${formatBox(box)} (left, top, right, bottom as fractions of the image${options.family === 'llava-1.5' ? ' padded to a square' : ''})`,
    `         pixels left ${pixels.left}, top ${pixels.top}, right ${pixels.right}, bottom ${pixels.bottom}: ` +
      `${pixels.right - pixels.left}x${pixels.bottom - pixels.top} of the ${image.width}x${image.height} image`,
  );
  if (source === 'fallback') lines.push(`         the whole image, since turn one's answer ${JSON.stringify(result.turns[0].text.trim())} holds no usable box`);
  const [one, two] = result.turns;
  lines.push(
    `Time:    ${formatDuration(result.timings.totalMs)} in all; turn 1 ${formatDuration(turnMs(one))} (${one.promptTokens} prompt + ${one.generatedTokens} generated tokens), ` +
      `turn 2 ${formatDuration(turnMs(two))} (${two.promptTokens} + ${two.generatedTokens})`,
  );
  options.saved.forEach(({ file, what }, index) => lines.push(`${index === 0 ? 'Saved:  ' : '        '} ${file} (${what})`));
  return `${lines.join('\n')}\n`;
}

function turnMs(turn: TurnResult): number {
  const { imageEncodeMs, imageDecodeMs, promptMs, generateMs } = turn.timings;
  return imageEncodeMs + imageDecodeMs + promptMs + generateMs;
}

/** The `--json` object: the result with the token ids as plain arrays, and without the PNG bytes. */
export function askJson(image: string, question: string, result: AskResult): object {
  return {
    image,
    question,
    answer: result.answer,
    roi: result.roi,
    turns: result.turns.map((turn) => ({ ...turn, tokens: Array.from(turn.tokens) })),
    prefixReused: result.prefixReused,
    timings: result.timings,
  };
}

