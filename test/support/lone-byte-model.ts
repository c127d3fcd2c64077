/**
 * A tiny pair whose text model writes a lone byte token now and then: the 112-pixel pair with the
 * output row of one byte token (<0xE6>, which opens a three-byte character) made constant, so its
 * logit is that constant times the sum of the normed hidden state, above every ordinary piece's
 * wherever that sum is large enough. Nothing the model writes can follow it as a character, so
 * its text is not valid UTF-8 there. The tiny pairs' own byte tokens all have logit 0 and are
 * never written freely.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

import { f32ToF16 } from '../../lib/gguf/writer';
import { readGgufHeader } from '../../lib/gguf/reader';
import { GgmlType } from '../../lib/gguf/format';
import { BYTE_TOKEN_BASE, TINY_LLAVA_FAST, type TinyLlavaFiles } from '../../lib/models/tiny-model';
import { MODEL_CACHE, tinyLlavaFast } from './models';

/** The byte the model writes alone: a lead byte of a three-byte UTF-8 sequence. */
export const LONE_BYTE = 0xe6;
/** Its token id. */
export const LONE_BYTE_TOKEN = BYTE_TOKEN_BASE + LONE_BYTE;
/** The value of every weight of its output row: how often it wins (tuned on the questions of connect.test). */
const ROW_VALUE = 0.5;

let pair: Promise<TinyLlavaFiles> | undefined;

/** The pair, written once per process (a copy of the 112-pixel model, patched; its mmproj as it is). */
export function tinyLlavaLoneByte(): Promise<TinyLlavaFiles> {
  pair ??= write();
  return pair;
}

async function write(): Promise<TinyLlavaFiles> {
  const base = await tinyLlavaFast();
  const model = path.join(MODEL_CACHE, `${TINY_LLAVA_FAST.name}-lone-byte.gguf`);
  const header = await readGgufHeader(base.model);
  const output = header.tensors.find((tensor) => tensor.name === 'output.weight');
  if (output?.type !== GgmlType.F16) throw new Error(`${base.model} has no F16 output.weight`);
  const width = output.shape[0]!;
  const row = Buffer.alloc(width * 2);
  for (let i = 0; i < width; i++) row.writeUInt16LE(f32ToF16(ROW_VALUE), i * 2);
  const tmp = `${model}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await copyFile(base.model, tmp);
    const file = await open(tmp, 'r+');
    try {
      // output.weight is F16, one row of `width` values per token.
      await file.write(row, 0, row.length, header.dataOffset + output.offset + LONE_BYTE_TOKEN * width * 2);
    } finally {
      await file.close();
    }
    await rename(tmp, model);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  return { model, mmproj: base.mmproj };
}
