/**
 * A fast check of a GGUF file, run before llama.cpp sees it.
 *
 * llama.cpp's own parser (ggml's gguf.cpp) rejects most malformed headers cleanly, but the code
 * that runs after it trusts what it parsed: a tensor whose data lies past the end of the file, a
 * weight in a type no kernel computes with, a vocabulary with a repeated token, a CLIP projector
 * whose hyperparameters do not match its tensors and the like end in GGML_ASSERT, i.e. abort(), or
 * in a segfault, and take the host process down with them. {@link checkGguf} reads only the header
 * (lib/gguf/reader.ts), checks what any GGUF file needs, then the rules of the role it is loaded in
 * (lib/gguf/llava.ts), and throws a ChainOfSpotError with a stable code and a message that says
 * what is wrong and what to do.
 *
 * The generic checks, after the reader's (magic, version, counts, lengths, types, names, dimensions,
 * alignment key; see reader.ts):
 * - each tensor's offset equal to the running sum of the aligned sizes before it (what gguf.cpp
 *   requires: aligned, in order, not overlapping), and its data inside the file;
 * - every tensor in a type the compute graph can use: one-dimensional ones (norms, biases) in f32,
 *   matrices in f32, f16, bf16 or a quantized type with matrix kernels (not q8_1, q8_K, the
 *   integer types or f64).
 *
 * Each check stands for an abort() or a segfault found by loading mutated files in child processes
 * (scripts/fuzz.mjs, test/system/gguf-crash.test.ts). Only the header is read, with a cap on its
 * size, so a 4 GB model is checked in milliseconds.
 *
 * Owns: {@link checkGguf} and its summary. May import: ./format, ./reader, ./llava,
 * ../common/errors and node builtins (never llama/, procedure/, models/).
 */
import { open, stat, type FileHandle } from 'node:fs/promises';

import { ChainOfSpotError, type ErrorCode } from '../common/errors';
import { GGUF_HEADER_BYTES, GgmlType, GgufType } from './format';
import { checkRoleRules, roleOf, shapeText, type GgufRole, type RoleFacts } from './llava';
import { DEFAULT_MAX_HEADER_BYTES, GgufFormatError, REDOWNLOAD, readParsedHeader, type ParsedGgufHeader } from './reader';

export type { GgufRole } from './llava';

/** Options of {@link checkGguf}. */
export interface GgufCheckOptions {
  /**
   * The most bytes the header (metadata and tensor infos) may take; a larger one is rejected
   * without reading it. Default 64 MiB: LLaVA-1.5's header is about 1 MiB, the largest vocabularies
   * in use (250k tokens with merges) about 20 MiB.
   */
  maxHeaderBytes?: number;
  /**
   * For a projector: the embedding width of the text model it is for. When given, a projector whose
   * output width differs is rejected with ERR_PROJECTOR_MISMATCH.
   */
  textEmbeddingSize?: number;
}

/** Metadata value types, numbered as in ggml's `enum gguf_type`. */
export type GgufValueType = GgufType;

/** A metadata array, summarized: its item type and length (the items are not kept). */
export interface GgufArraySummary {
  readonly itemType: GgufValueType;
  readonly length: number;
}

/** One metadata value: scalars as they are (64-bit integers as bigint), arrays summarized. */
export type GgufMetadataValue = string | number | bigint | boolean | GgufArraySummary;

/** One tensor's entry in the header. */
export interface GgufTensorSummary {
  readonly name: string;
  /** In ggml order (`shape[0]` is the contiguous dimension). */
  readonly shape: readonly number[];
  /** The `ggml_type` id. */
  readonly type: number;
  /** Its name in ggml (`f16`, `q4_K`...). */
  readonly typeName: string;
  /** Offset of its data from {@link GgufSummary.dataOffset}. */
  readonly offset: number;
  /** Bytes of data (without alignment padding). */
  readonly bytes: number;
}

/** What {@link checkGguf} found in a file that passed. */
export interface GgufSummary {
  readonly path: string;
  /** The file size in bytes. */
  readonly fileSize: number;
  /** GGUF version (2 or 3). */
  readonly version: number;
  /** `general.architecture` (`llama`, `clip`...). */
  readonly architecture: string;
  /** `general.name`, when it has one. */
  readonly name: string | undefined;
  readonly role: GgufRole;
  readonly alignment: number;
  /** Bytes of header (up to the end of the tensor infos). */
  readonly headerBytes: number;
  /** Absolute file offset where tensor data starts. */
  readonly dataOffset: number;
  /** Bytes of tensor data, alignment padding included. */
  readonly dataBytes: number;
  /** For a projector: `clip.projector_type` (`mlp` for LLaVA-1.5). */
  readonly projectorType: string | undefined;
  /** For a LLaVA projector: the width of the embeddings it gives (the text model's embedding width). */
  readonly projectorOutputWidth: number | undefined;
  readonly metadata: ReadonlyMap<string, GgufMetadataValue>;
  readonly tensors: readonly GgufTensorSummary[];
}

const ROLE_CODE: Record<GgufRole, ErrorCode> = { 'text-model': 'ERR_MODEL_LOAD', projector: 'ERR_PROJECTOR_LOAD' };
const ROLE_NAME: Record<GgufRole, string> = { 'text-model': 'model', projector: 'projector (mmproj)' };

// --- the generic checks ----------------------------------------------------------------------------

/**
 * Where the tensor data lies: each offset the running sum of the aligned sizes before it, the data
 * inside the file. Returns the bytes of tensor data, padding included.
 */
function checkDataLayout(parsed: ParsedGgufHeader): number {
  const { alignment, dataOffset, fileSize, tensors } = parsed;
  const step = BigInt(alignment);
  let expectedOffset = 0n;
  for (const t of tensors) {
    if (t.offset !== expectedOffset) {
      throw new GgufFormatError(
        `tensor '${t.name}' has data offset ${t.offset} (byte ${t.offsetAt}); llama.cpp needs ${expectedOffset}: the tensors' data must follow ` +
          `each other in order, each aligned to ${alignment} bytes: ${REDOWNLOAD}`,
      );
    }
    expectedOffset += ((BigInt(t.bytes) + step - 1n) / step) * step;
  }
  if (tensors.length > 0 && dataOffset > fileSize) {
    throw new GgufFormatError(`the file ends at byte ${fileSize}, before its tensor data starts (byte ${dataOffset}): ${REDOWNLOAD}`);
  }
  const end = (t: (typeof tensors)[number]): number => dataOffset + Number(t.offset) + t.bytes;
  const last = tensors.at(-1);
  if (last && end(last) > fileSize) {
    // The first tensor whose data the file does not hold.
    const t = tensors.find((x) => end(x) > fileSize)!;
    throw new GgufFormatError(
      `the file ends at byte ${fileSize} but the data of tensor '${t.name}' (${t.shape.join(' x ')} ${t.typeInfo.name}) ` +
        `runs to byte ${end(t)} (${Math.floor((fileSize / end(last)) * 100)}% of the expected size is there): ${REDOWNLOAD}`,
    );
  }
  return Number(expectedOffset);
}

/**
 * Types ggml's CPU backend cannot multiply, look up or add with: a weight of one of these
 * segfaults or aborts in the first evaluation (found by experiment: q8_1 and q8_K are only
 * intermediate types of the dot products, the integer and f64 types have no matrix kernels).
 */
const NON_COMPUTE_TYPES: ReadonlySet<number> = new Set([GgmlType.Q8_1, GgmlType.Q8_K, GgmlType.I8, GgmlType.I16, GgmlType.I32, GgmlType.I64, GgmlType.F64]);

/**
 * Tensor types the compute graph can use: vectors (norm weights, biases, embeddings of one row) in
 * f32, as every converter writes them (ggml's binary ops abort on anything else), and matrices in
 * a type with matrix kernels.
 */
function checkTensorTypes(parsed: ParsedGgufHeader): void {
  for (const t of parsed.tensors) {
    const isVector = t.shape.slice(1).every((d) => d === 1);
    if (isVector && t.type !== GgmlType.F32) {
      throw new GgufFormatError(`tensor '${t.name}' ${shapeText(t.shape)} is ${t.typeInfo.name}; llama.cpp needs one-dimensional tensors in f32 (it aborts otherwise): ${REDOWNLOAD}`);
    }
    if (NON_COMPUTE_TYPES.has(t.type)) {
      throw new GgufFormatError(`tensor '${t.name}' has type ${t.typeInfo.name}, which llama.cpp cannot compute with (it crashes): ${REDOWNLOAD}`);
    }
  }
}

// --- the entry point ---------------------------------------------------------------------------

/**
 * Checks that `path` is a well-formed GGUF file of the expected role, reading only its header.
 * Resolves with a summary of the header; rejects with ChainOfSpotError `ERR_MODEL_LOAD` (for
 * `'text-model'`) or `ERR_PROJECTOR_LOAD` (for `'projector'`) whose message says what is wrong
 * and what to do, or `ERR_PROJECTOR_MISMATCH` when `options.textEmbeddingSize` is given and the
 * projector's output width differs from it.
 *
 * Reads only the header, so it takes milliseconds whatever the file size.
 */
export async function checkGguf(path: string, expect: GgufRole, options?: GgufCheckOptions): Promise<GgufSummary> {
  if (typeof path !== 'string') throw new TypeError('path must be a string');
  if (expect !== 'text-model' && expect !== 'projector') throw new TypeError("expect must be 'text-model' or 'projector'");
  const maxHeaderBytes = options?.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < GGUF_HEADER_BYTES) throw new RangeError(`maxHeaderBytes must be a whole number of at least ${GGUF_HEADER_BYTES}`);
  const textEmbeddingSize = options?.textEmbeddingSize;
  if (textEmbeddingSize !== undefined && !(Number.isSafeInteger(textEmbeddingSize) && textEmbeddingSize > 0)) throw new RangeError('textEmbeddingSize must be a positive whole number');
  const fail = (message: string, cause?: unknown): ChainOfSpotError =>
    new ChainOfSpotError(ROLE_CODE[expect], `${ROLE_NAME[expect]} file ${path}: ${message}`, cause === undefined ? undefined : { cause });

  let fh: FileHandle;
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw fail('is a directory; pass the path of the .gguf file in it');
    if (!info.isFile()) throw fail('is not a regular file; pass the path of a .gguf file');
    if (info.size === 0) throw fail('is empty (0 bytes): the download or copy did not complete; download it again');
    fh = await open(path, 'r');
  } catch (error) {
    if (error instanceof ChainOfSpotError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw fail('not found; check the path', error);
    if (code === 'EACCES' || code === 'EPERM') throw fail('cannot be read (permission denied); check its permissions', error);
    throw fail(`cannot be read: ${(error as Error).message}`, error);
  }

  let summary: GgufSummary;
  try {
    const parsed = await readParsedHeader(fh, (await fh.stat()).size, maxHeaderBytes);
    const dataBytes = checkDataLayout(parsed);
    const role = roleOf(parsed, expect);
    checkTensorTypes(parsed);
    summary = summarize(path, parsed, dataBytes, checkRoleRules(parsed, role));
  } catch (error) {
    if (error instanceof GgufFormatError) throw fail(error.message);
    throw fail(`cannot be read: ${(error as Error).message}`, error);
  } finally {
    await fh.close();
  }
  if (textEmbeddingSize !== undefined && summary.projectorOutputWidth !== undefined && summary.projectorOutputWidth !== textEmbeddingSize) {
    throw new ChainOfSpotError(
      'ERR_PROJECTOR_MISMATCH',
      `projector (mmproj) file ${path} gives ${summary.projectorOutputWidth}-wide embeddings, but the text model takes ${textEmbeddingSize}: ` +
        'use the mmproj file that was released with this model',
    );
  }
  return summary;
}

function summarize(path: string, parsed: ParsedGgufHeader, dataBytes: number, facts: RoleFacts): GgufSummary {
  const metadata = new Map<string, GgufMetadataValue>();
  for (const [key, entry] of parsed.entries) {
    metadata.set(key, entry.type === GgufType.ARRAY ? { itemType: entry.itemType, length: entry.length } : entry.value);
  }
  const name = metadata.get('general.name');
  return {
    path,
    fileSize: parsed.fileSize,
    version: parsed.version,
    architecture: facts.architecture,
    name: typeof name === 'string' ? name : undefined,
    role: facts.role,
    alignment: parsed.alignment,
    headerBytes: parsed.headerBytes,
    dataOffset: parsed.dataOffset,
    dataBytes,
    projectorType: facts.projectorType,
    projectorOutputWidth: facts.projectorOutputWidth,
    metadata,
    tensors: parsed.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, typeName: t.typeInfo.name, offset: Number(t.offset), bytes: t.bytes })),
  };
}
