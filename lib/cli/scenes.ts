/**
 * `chain-of-spot scenes`: writes generated tag-reading scenes and their questions (lib/scenes), in
 * the JSONL that `eval` reads, with the true region of each question.
 */
import { ChainOfSpotError } from '../common/errors';
import { writeScenes } from '../scenes/index';
import type { Command } from './args';

export async function scenes(command: Extract<Command, { command: 'scenes' }>): Promise<number> {
  let written;
  try {
    written = await writeScenes({ count: command.count, seed: command.seed, out: command.out, ...(command.backgrounds === undefined ? {} : { backgrounds: command.backgrounds }) });
  } catch (error) {
    if (error instanceof RangeError || error instanceof TypeError) throw error;
    throw new ChainOfSpotError('ERR_OUTPUT', `cannot write the scenes to ${command.out}: ${(error as Error).message}; check the folders exist and are writable`, { cause: error });
  }
  process.stdout.write(`${written.count} questions about ${written.images} scenes in ${written.questions}\n`);
  return 0;
}
