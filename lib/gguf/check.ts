/**
 * A fast structural check of a GGUF file, run before llama.cpp sees it.
 *
 * llama.cpp's own parser (ggml's gguf.cpp) rejects most malformed headers cleanly, but the code
 * that runs after it trusts what it parsed: a vocabulary with a repeated token, a tensor whose data
 * lies past the end of the file, a CLIP projector whose hyperparameters do not match its tensors
 * and the like end in GGML_ASSERT, i.e. abort(), and take the host process down with them. This
 * module reads only the header (metadata and tensor infos, never the tensor data), checks all that
 * gguf.cpp checks plus what the loaders behind it would crash on, and throws a ChainOfSpotError
 * with a stable code and a message that says what is wrong and what to do.
 *
 * The checks, in file order:
 * - the file exists, is a regular file, and is not empty;
 * - magic `GGUF` (with a hint for files that are something else: a PyTorch or safetensors
 *   checkpoint, an old GGML file, a Git LFS pointer, a big-endian GGUF), version 2 or 3;
 * - tensor and key counts that the file size can hold (and at most 262,144 tensors and 65,536 keys);
 * - each key: not empty, unique, at most 64 KiB; each value: a known type (no nested arrays),
 *   string and array lengths within the file and within ggml's limits;
 * - `general.alignment`, when present: a UINT32 power of two;
 * - each tensor: a name of 1 to 63 bytes, unique; 0 to 4 dimensions, each at least 1, whose
 *   product does not overflow; a ggml type this build knows, whose block size divides the first
 *   dimension; an offset equal to the running sum of the aligned sizes before it (what gguf.cpp
 *   requires: aligned, in order, not overlapping); data that ends inside the file;
 * - `general.architecture`: present, a string, and the one the role needs (`clip` is a projector,
 *   anything else a text model; a file with `clip.*` keys is a projector whatever it says);
 * - every tensor in a type the compute graph can use: one-dimensional ones (norms, biases) in f32,
 *   matrices in f32, f16, bf16 or a quantized type with matrix kernels (not q8_1, q8_K, the
 *   integer types or f64);
 * - for a text model: `<arch>.block_count` from 1 to 512, normalization epsilons finite and at
 *   least 0, and a vocabulary (`tokenizer.ggml.tokens`) of strings with no two alike;
 * - for a projector: every `clip.*` key clip.cpp reads stored in the type it reads it as; a vision
 *   encoder; width, heads, layers, image and patch sizes positive and consistent; and, for
 *   LLaVA's `mlp` / `mlp_norm` projectors, every tensor the graph uses present with the shape the
 *   hyperparameters give (clip.cpp loads most of them as optional and trusts their shapes).
 *
 * Each of the semantic checks stands for an abort() or a segfault found by loading mutated files
 * in child processes (scripts/fuzz.mjs, test/gguf-check.test.ts).
 *
 * Only the header is read, with a cap on its size, so a 4 GB model is checked in milliseconds.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';

import { ChainOfSpotError, type ErrorCode } from '../common/errors';

/** What a file is expected to be: the LLaVA text model, or its CLIP projector (mmproj). */
export type GgufRole = 'text-model' | 'projector';

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

/** Metadata value types, numbered as in ggml's `enum gguf_type`. */
export type GgufValueType = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12;

const T_UINT8 = 0;
const T_INT8 = 1;
const T_UINT16 = 2;
const T_INT16 = 3;
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_BOOL = 7;
const T_STRING = 8;
const T_ARRAY = 9;
const T_UINT64 = 10;
const T_INT64 = 11;
const T_FLOAT64 = 12;
const VALUE_TYPE_NAMES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'str', 'arr', 'u64', 'i64', 'f64'];
/** Bytes of one value of each fixed-size type; strings take at least their 8-byte length. */
const VALUE_SIZES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 0, 8, 8, 8];

/**
 * ggml's type table for the vendored llama.cpp (ggml.h `enum ggml_type`): name, block size (elements)
 * and type size (bytes per block). Removed types (4, 5, 31-33, 36-38) are absent: gguf.cpp rejects
 * them (block size 0). @internal
 */
export const GGML_TYPES: ReadonlyMap<number, readonly [name: string, blockSize: number, typeSize: number]> = new Map([
  [0, ['f32', 1, 4]], [1, ['f16', 1, 2]], [2, ['q4_0', 32, 18]], [3, ['q4_1', 32, 20]],
  [6, ['q5_0', 32, 22]], [7, ['q5_1', 32, 24]], [8, ['q8_0', 32, 34]], [9, ['q8_1', 32, 36]],
  [10, ['q2_K', 256, 84]], [11, ['q3_K', 256, 110]], [12, ['q4_K', 256, 144]], [13, ['q5_K', 256, 176]],
  [14, ['q6_K', 256, 210]], [15, ['q8_K', 256, 292]], [16, ['iq2_xxs', 256, 66]], [17, ['iq2_xs', 256, 74]],
  [18, ['iq3_xxs', 256, 98]], [19, ['iq1_s', 256, 50]], [20, ['iq4_nl', 32, 18]], [21, ['iq3_s', 256, 110]],
  [22, ['iq2_s', 256, 82]], [23, ['iq4_xs', 256, 136]], [24, ['i8', 1, 1]], [25, ['i16', 1, 2]],
  [26, ['i32', 1, 4]], [27, ['i64', 1, 8]], [28, ['f64', 1, 8]], [29, ['iq1_m', 256, 56]],
  [30, ['bf16', 1, 2]], [34, ['tq1_0', 256, 54]], [35, ['tq2_0', 256, 66]], [39, ['mxfp4', 32, 17]],
  [40, ['nvfp4', 64, 36]], [41, ['q1_0', 128, 18]], [42, ['q2_0', 64, 18]],
] as const);

const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT = 32;
const GGML_MAX_NAME = 64;
const GGML_MAX_DIMS = 4;
/** gguf.cpp's limits. */
const GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024;
const GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;
/** Longer keys are no mistake one could make by hand: a corrupted length. */
const MAX_KEY_LENGTH = 65536;
/** Smallest possible key/value pair: key length, a 1-byte key, type, a 1-byte value. */
const MIN_KV_BYTES = 8 + 1 + 4 + 1;
/** Smallest possible tensor info: name length, a 1-byte name, dims count, type, offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8;
const HEADER_BYTES = 4 + 4 + 8 + 8;
/** Far above any real model (hundreds of keys, a few thousand tensors), low enough to bound memory. */
const MAX_KEYS = 1 << 16;
const MAX_TENSORS = 1 << 18;
const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
const FIRST_READ = 1 << 20;

// --- errors ---------------------------------------------------------------------------------------

/** A problem found; checkGguf turns it into a ChainOfSpotError with the role's code and wording. */
class Problem extends Error {}

/** The parser ran off the bytes read so far; read more and parse again. */
class NeedMoreBytes extends Error {}

const ROLE_CODE: Record<GgufRole, ErrorCode> = { 'text-model': 'ERR_MODEL_LOAD', projector: 'ERR_PROJECTOR_LOAD' };
const ROLE_NAME: Record<GgufRole, string> = { 'text-model': 'model', projector: 'projector (mmproj)' };
const REDOWNLOAD = 'the file is damaged, cut short or badly converted: download or convert it again';

// --- the parser ------------------------------------------------------------------------------------

/** Where a field sits in the file, for tools that mutate headers (the fuzzer). @internal */
export interface GgufField {
  /**
   * What it is: `version`, `n_tensors`, `n_kv`, `key_length`, `value_type`, `array_type`,
   * `array_length`, `array_item` (a string item: its length prefix and bytes), `string_length`,
   * `value`, `tensor_name_length`, `n_dims`, `dim`, `tensor_type`, `tensor_offset`.
   */
  readonly kind: string;
  readonly offset: number;
  /** Bytes (4 or 8 for integers, the string's length for `value` strings). */
  readonly width: number;
  /** The key or tensor the field belongs to. */
  readonly owner?: string;
  /** For `value` fields: the GGUF type. */
  readonly valueType?: number;
}

/** An array value: its item type, length and where its items start in the buffer. */
interface RawArray {
  readonly itemType: number;
  readonly length: number;
  readonly start: number;
}

interface RawTensor {
  readonly name: string;
  readonly shape: number[];
  readonly type: number;
  readonly offset: number;
  readonly bytes: number;
}

interface ParsedHeader {
  /** The bytes parsed (at least the whole header), for the checks that read array items. */
  readonly buf: Buffer;
  readonly version: number;
  readonly metadata: Map<string, GgufMetadataValue>;
  /** The GGUF type of each key (T_ARRAY for arrays). */
  readonly types: Map<string, number>;
  readonly arrays: Map<string, RawArray>;
  readonly tensors: RawTensor[];
  readonly alignment: number;
  readonly headerBytes: number;
  readonly dataOffset: number;
  readonly dataBytes: number;
}

class Reader {
  pos = 0;
  private readonly view: DataView;

  constructor(
    readonly buf: Buffer,
    /** Whether no more bytes can be read (else running off `buf` means: read more and parse again). */
    private readonly complete: boolean,
    readonly fileSize: number,
    private readonly maxHeaderBytes: number,
    private readonly onField: ((field: GgufField) => void) | undefined,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** Bytes of the file after the current position. */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Claims `n` bytes and returns where they start. */
  take(n: number, what: string): number {
    if (this.pos + n > this.buf.length) {
      if (this.pos + n > this.fileSize) {
        throw new Problem(`the file ends at byte ${this.fileSize}, inside the header (reading ${what} at byte ${this.pos}): ${REDOWNLOAD}`);
      }
      if (this.pos + n > this.maxHeaderBytes) {
        throw new Problem(
          `its header is larger than ${this.maxHeaderBytes} bytes (reading ${what} at byte ${this.pos}): a corrupted length, or a ` +
            'model whose metadata is far larger than any this package expects (raise maxHeaderBytes if it is genuine)',
        );
      }
      if (this.complete) throw new Problem(`the header runs past the bytes read (${what})`);
      throw new NeedMoreBytes();
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  field(kind: string, offset: number, width: number, owner?: string, valueType?: number): void {
    if (this.onField) {
      const field: { kind: string; offset: number; width: number; owner?: string; valueType?: number } = { kind, offset, width };
      if (owner !== undefined) field.owner = owner;
      if (valueType !== undefined) field.valueType = valueType;
      this.onField(field);
    }
  }

  u32(what: string, kind?: string, owner?: string): number {
    const at = this.take(4, what);
    if (kind) this.field(kind, at, 4, owner);
    return this.view.getUint32(at, true);
  }

  /** An unsigned 64-bit integer (a bigint: the caller checks its range). */
  u64(what: string, kind?: string, owner?: string): bigint {
    const at = this.take(8, what);
    if (kind) this.field(kind, at, 8, owner);
    return this.view.getBigUint64(at, true);
  }

  i64(what: string, kind?: string, owner?: string): bigint {
    const at = this.take(8, what);
    if (kind) this.field(kind, at, 8, owner);
    return this.view.getBigInt64(at, true);
  }

  /** A length-prefixed string, decoded byte for byte (latin1) or as UTF-8. */
  str(what: string, maxLength: number, lengthKind: string, owner?: string, utf8 = true): string {
    const lengthAt = this.pos;
    const length = this.u64(`the length of ${what}`);
    if (lengthKind) this.field(lengthKind, lengthAt, 8, owner);
    if (length > BigInt(this.remaining)) {
      throw new Problem(`${what} at byte ${lengthAt} claims ${length} bytes, more than the ${this.remaining} left in the file: ${REDOWNLOAD}`);
    }
    if (length > BigInt(maxLength)) {
      throw new Problem(`${what} at byte ${lengthAt} claims ${length} bytes, more than the ${maxLength} allowed: ${REDOWNLOAD}`);
    }
    const n = Number(length);
    const at = this.take(n, what);
    return this.buf.toString(utf8 ? 'utf8' : 'latin1', at, at + n);
  }

  /** Skips a string, returning its length (for array items, whose contents are read on demand). */
  skipStr(what: string): number {
    const lengthAt = this.take(8, what);
    // Two 32-bit halves: no BigInt on this path, which runs once per vocabulary token.
    const length = this.view.getUint32(lengthAt, true);
    if (this.view.getUint32(lengthAt + 4, true) !== 0 || length > this.remaining) {
      const claimed = this.view.getBigUint64(lengthAt, true);
      throw new Problem(`${what} at byte ${lengthAt} claims ${claimed} bytes, more than the ${this.remaining} left in the file: ${REDOWNLOAD}`);
    }
    this.take(length, what);
    return length;
  }

  scalar(type: number, what: string): GgufMetadataValue {
    switch (type) {
      case T_UINT8: return this.view.getUint8(this.take(1, what));
      case T_INT8: return this.view.getInt8(this.take(1, what));
      case T_UINT16: return this.view.getUint16(this.take(2, what), true);
      case T_INT16: return this.view.getInt16(this.take(2, what), true);
      case T_UINT32: return this.view.getUint32(this.take(4, what), true);
      case T_INT32: return this.view.getInt32(this.take(4, what), true);
      case T_FLOAT32: return this.view.getFloat32(this.take(4, what), true);
      case T_BOOL: return this.view.getInt8(this.take(1, what)) !== 0;
      case T_UINT64: return this.view.getBigUint64(this.take(8, what), true);
      case T_INT64: return this.view.getBigInt64(this.take(8, what), true);
      case T_FLOAT64: return this.view.getFloat64(this.take(8, what), true);
      default: throw new Problem(`${what} has an unknown type ${type}`);
    }
  }
}

function typeName(type: number): string {
  return VALUE_TYPE_NAMES[type] ?? `type ${type}`;
}

function describeMagic(buf: Buffer, fileSize: number): string {
  const head = buf.subarray(0, Math.min(buf.length, 16));
  const ascii = head.subarray(0, 4).toString('latin1');
  if (head.length >= 4 && head.readUInt32BE(0) === GGUF_MAGIC) {
    return 'it is a big-endian GGUF file; llama.cpp here reads little-endian files: convert it again without --bigendian';
  }
  if (['ggml', 'ggmf', 'ggjt', 'ggla', 'lmgg', 'fmgg', 'tjgg', 'algg'].includes(ascii)) {
    return 'it is in the old GGML format that llama.cpp no longer reads: convert the original model to GGUF';
  }
  if (ascii === 'PK\u0003\u0004') {
    return 'it is a zip archive (a PyTorch checkpoint?): convert the model to GGUF with llama.cpp\'s convert_hf_to_gguf.py';
  }
  if (head.length >= 9 && head[8] === 0x7b && fileSize > 8) {
    return 'it looks like a safetensors file: convert the model to GGUF with llama.cpp\'s convert_hf_to_gguf.py';
  }
  if (/^\s*[<{[]/.test(head.toString('latin1')) || /^[\t\n\r\x20-\x7e]*$/.test(head.toString('latin1'))) {
    return 'it holds text (an error page or a Git LFS pointer instead of the download?): download the .gguf file itself';
  }
  return 'it does not start with "GGUF": pass a GGUF model file';
}

/**
 * Parses and checks the header in `buf` (the first bytes of a file of `fileSize` bytes).
 * Throws NeedMoreBytes when `buf` ends before the header does and more can be read.
 */
function parseHeader(
  buf: Buffer,
  fileSize: number,
  complete: boolean,
  maxHeaderBytes: number,
  onField?: (field: GgufField) => void,
): ParsedHeader {
  const r = new Reader(buf, complete, fileSize, maxHeaderBytes, onField);
  if (fileSize < 4) throw new Problem(`it has only ${fileSize} bytes, too few for a GGUF file: ${REDOWNLOAD}`);
  if (buf.readUInt32LE(0) !== GGUF_MAGIC) throw new Problem(`it is not a GGUF file: ${describeMagic(buf, fileSize)}`);
  r.pos = 4;
  const version = r.u32('the GGUF version', 'version');
  if ((version & 0xffff) === 0) {
    throw new Problem(`its GGUF version reads as ${version}: a big-endian file? Convert it again for a little-endian machine`);
  }
  if (version === 1) throw new Problem('it is a GGUF version 1 file, which llama.cpp no longer reads: convert the model again');
  if (version < 2 || version > 3) throw new Problem(`it has GGUF version ${version}; this build reads versions 2 and 3: update chain-of-spot, or convert the model again`);

  const tensorCount = r.i64('the tensor count', 'n_tensors');
  const kvCount = r.i64('the metadata key count', 'n_kv');
  const room = BigInt(fileSize - HEADER_BYTES);
  if (tensorCount < 0n || kvCount < 0n || tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) + kvCount * BigInt(MIN_KV_BYTES) > room) {
    throw new Problem(`its header claims ${tensorCount} tensors and ${kvCount} metadata keys, more than a ${fileSize}-byte file can hold: ${REDOWNLOAD}`);
  }
  if (tensorCount > BigInt(MAX_TENSORS) || kvCount > BigInt(MAX_KEYS)) {
    throw new Problem(`its header claims ${tensorCount} tensors and ${kvCount} metadata keys; no model has more than ${MAX_TENSORS} and ${MAX_KEYS}: ${REDOWNLOAD}`);
  }
  const nTensors = Number(tensorCount);
  const nKv = Number(kvCount);

  // Metadata.
  const metadata = new Map<string, GgufMetadataValue>();
  const types = new Map<string, number>();
  const arrays = new Map<string, RawArray>();
  const keyBytesSeen = new Set<string>();
  for (let i = 0; i < nKv; i++) {
    const keyAt = r.pos;
    const key = r.str(`the name of metadata key ${i}`, MAX_KEY_LENGTH, '');
    r.field('key_length', keyAt, 8, key);
    if (key.length === 0) throw new Problem(`metadata key ${i} has an empty name: ${REDOWNLOAD}`);
    // gguf.cpp compares keys byte for byte; two invalid UTF-8 keys may decode alike.
    const keyBytes = buf.toString('latin1', keyAt + 8, r.pos);
    if (keyBytesSeen.has(keyBytes)) throw new Problem(`metadata key '${key}' appears twice: ${REDOWNLOAD}`);
    keyBytesSeen.add(keyBytes);
    const typeAt = r.pos;
    const type = r.u32(`the type of '${key}'`, 'value_type', key);
    types.set(key, type);
    if (type === T_ARRAY) {
      const itemTypeAt = r.pos;
      const itemType = r.u32(`the item type of '${key}'`, 'array_type', key);
      const lengthAt = r.pos;
      const length = r.u64(`the length of '${key}'`, 'array_length', key);
      if (itemType > T_FLOAT64 || itemType === T_ARRAY) {
        throw new Problem(`metadata '${key}' is an array of ${itemType === T_ARRAY ? 'arrays' : `unknown type ${itemType}`} (byte ${itemTypeAt}): ${REDOWNLOAD}`);
      }
      const itemSize = VALUE_SIZES[itemType]!;
      if (length > BigInt(GGUF_MAX_ARRAY_ELEMENTS) || length * BigInt(itemSize) > BigInt(r.remaining)) {
        throw new Problem(`metadata '${key}' claims ${length} items (byte ${lengthAt}), more than the file holds: ${REDOWNLOAD}`);
      }
      const n = Number(length);
      const start = r.pos;
      if (itemType === T_STRING) {
        for (let j = 0; j < n; j++) {
          const at = r.pos;
          r.skipStr(`item ${j} of '${key}'`);
          if (onField) r.field('array_item', at, r.pos - at, key, T_STRING);
        }
      } else {
        r.take(n * itemSize, `the items of '${key}'`);
        if (onField) for (let j = 0; j < n; j++) r.field('array_item', start + j * itemSize, itemSize, key, itemType);
      }
      metadata.set(key, { itemType: itemType as GgufValueType, length: n });
      arrays.set(key, { itemType, length: n, start });
    } else if (type === T_STRING) {
      const at = r.pos + 8;
      const value = r.str(`the value of '${key}'`, GGUF_MAX_STRING_LENGTH, 'string_length', key);
      r.field('value', at, r.pos - at, key, T_STRING);
      metadata.set(key, value);
    } else if (type <= T_FLOAT64) {
      const at = r.pos;
      const value = r.scalar(type, `the value of '${key}'`);
      r.field('value', at, r.pos - at, key, type);
      metadata.set(key, value);
    } else {
      throw new Problem(`metadata '${key}' has unknown type ${type} (byte ${typeAt}): ${REDOWNLOAD}`);
    }
  }

  let alignment = DEFAULT_ALIGNMENT;
  const alignmentValue = metadata.get('general.alignment');
  if (alignmentValue !== undefined) {
    if (typeof alignmentValue !== 'number' || types.get('general.alignment') !== T_UINT32) {
      throw new Problem(`'general.alignment' must be a u32, not ${typeName(types.get('general.alignment') ?? -1)}: ${REDOWNLOAD}`);
    }
    if (alignmentValue === 0 || (alignmentValue & (alignmentValue - 1)) !== 0) {
      throw new Problem(`'general.alignment' is ${alignmentValue}, not a power of two: ${REDOWNLOAD}`);
    }
    alignment = alignmentValue;
  }

  // Tensor infos.
  const tensors: RawTensor[] = [];
  const names = new Set<string>();
  let expectedOffset = 0n;
  for (let i = 0; i < nTensors; i++) {
    const nameAt = r.pos;
    const name = r.str(`the name of tensor ${i}`, MAX_KEY_LENGTH, '', undefined, false);
    r.field('tensor_name_length', nameAt, 8, name);
    if (name.length === 0) throw new Problem(`tensor ${i} has an empty name: ${REDOWNLOAD}`);
    if (name.length >= GGML_MAX_NAME) throw new Problem(`tensor ${i} has a ${name.length}-byte name; ggml allows at most ${GGML_MAX_NAME - 1}: ${REDOWNLOAD}`);
    if (names.has(name)) throw new Problem(`tensor '${name}' appears twice: ${REDOWNLOAD}`);
    names.add(name);
    const nDims = r.u32(`the dimension count of '${name}'`, 'n_dims', name);
    if (nDims > GGML_MAX_DIMS) throw new Problem(`tensor '${name}' has ${nDims} dimensions; ggml allows at most ${GGML_MAX_DIMS}: ${REDOWNLOAD}`);
    const shape: number[] = [];
    let elements = 1n;
    for (let d = 0; d < nDims; d++) {
      const dim = r.i64(`dimension ${d} of '${name}'`, 'dim', name);
      if (dim < 1n) throw new Problem(`tensor '${name}' has dimension ${d} of ${dim}; each must be at least 1: ${REDOWNLOAD}`);
      elements *= dim;
      if (elements >= 1n << 62n) throw new Problem(`tensor '${name}' has more elements than ggml can count: ${REDOWNLOAD}`);
      shape.push(Number(dim));
    }
    const typeAt = r.pos;
    const type = r.u32(`the type of '${name}'`, 'tensor_type', name);
    const traits = GGML_TYPES.get(type);
    if (!traits) {
      throw new Problem(
        `tensor '${name}' has ggml type ${type} (byte ${typeAt}), which this build of llama.cpp does not know` +
          (type < 64 ? ' (a type that was removed, or one newer than this build): convert or quantize the model again, or update chain-of-spot' : `: ${REDOWNLOAD}`),
      );
    }
    const [typeLabel, blockSize, typeSize] = traits;
    const rowLength = BigInt(shape[0] ?? 1);
    if (rowLength % BigInt(blockSize) !== 0n) {
      throw new Problem(`tensor '${name}' of type ${typeLabel} has rows of ${rowLength} values, not a multiple of its block size ${blockSize}: ${REDOWNLOAD}`);
    }
    const bytes = (elements / BigInt(blockSize)) * BigInt(typeSize);
    const offsetAt = r.pos;
    const offset = r.u64(`the data offset of '${name}'`, 'tensor_offset', name);
    if (offset !== expectedOffset) {
      throw new Problem(
        `tensor '${name}' has data offset ${offset} (byte ${offsetAt}); llama.cpp needs ${expectedOffset}: the tensors' data must follow ` +
          `each other in order, each aligned to ${alignment} bytes: ${REDOWNLOAD}`,
      );
    }
    expectedOffset += (bytes + BigInt(alignment) - 1n) / BigInt(alignment) * BigInt(alignment);
    tensors.push({ name, shape, type, offset: Number(offset), bytes: Number(bytes) });
  }
  const headerBytes = r.pos;
  const dataOffset = nTensors > 0 ? Math.ceil(headerBytes / alignment) * alignment : headerBytes;
  if (dataOffset > fileSize) {
    throw new Problem(`the file ends at byte ${fileSize}, before its tensor data starts (byte ${dataOffset}): ${REDOWNLOAD}`);
  }
  const last = tensors.at(-1);
  if (last && dataOffset + last.offset + last.bytes > fileSize) {
    // The first tensor whose data the file does not hold.
    const t = tensors.find((x) => dataOffset + x.offset + x.bytes > fileSize)!;
    const expected = dataOffset + last.offset + last.bytes;
    throw new Problem(
      `the file ends at byte ${fileSize} but the data of tensor '${t.name}' (${t.shape.join(' x ')} ${GGML_TYPES.get(t.type)![0]}) ` +
        `runs to byte ${dataOffset + t.offset + t.bytes} (${Math.floor((fileSize / expected) * 100)}% of the expected size is there): ${REDOWNLOAD}`,
    );
  }
  return { buf, version, metadata, types, arrays, tensors, alignment, headerBytes, dataOffset, dataBytes: Number(expectedOffset) };
}

// --- what the loaders behind the parser need ---------------------------------------------------

/** llama.cpp's LLAMA_MAX_LAYERS: a text model with more (or no) layers aborts the load. */
const LLAMA_MAX_LAYERS = 512;
/** clip.cpp's largest image side. */
const CLIP_MAX_IMAGE_SIZE = 8192;
/**
 * Types ggml's CPU backend cannot multiply, look up or add with: a weight of one of these
 * segfaults or aborts in the first evaluation (found by experiment: q8_1 and q8_K are only
 * intermediate types of the dot products, the integer and f64 types have no matrix kernels).
 */
const NON_COMPUTE_TYPES = new Set([9, 15, 24, 25, 26, 27, 28]);
const F32 = 0;
const F16 = 1;

function tensorMap(parsed: ParsedHeader): Map<string, RawTensor> {
  return new Map(parsed.tensors.map((t) => [t.name, t]));
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Whether `shape` equals `expected` (ggml order; trailing 1s do not count). */
function sameShape(shape: readonly number[], expected: readonly number[]): boolean {
  const trim = (s: readonly number[]): number[] => {
    const out = [...s];
    while (out.length > 0 && out[out.length - 1] === 1) out.pop();
    return out;
  };
  const a = trim(shape);
  const b = trim(expected);
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function isVector(t: RawTensor): boolean {
  return t.shape.slice(1).every((d) => d === 1);
}

/**
 * Tensor types the compute graph can use: vectors (norm weights, biases, embeddings of one row) in
 * f32, as every converter writes them (ggml's binary ops abort on anything else), and matrices in
 * a type with matrix kernels.
 */
function checkTensorTypes(parsed: ParsedHeader): void {
  for (const t of parsed.tensors) {
    const typeLabel = GGML_TYPES.get(t.type)![0];
    if (isVector(t) && t.type !== F32) {
      throw new Problem(`tensor '${t.name}' ${shapeText(t.shape)} is ${typeLabel}; llama.cpp needs one-dimensional tensors in f32 (it aborts otherwise): ${REDOWNLOAD}`);
    }
    if (NON_COMPUTE_TYPES.has(t.type)) {
      throw new Problem(`tensor '${t.name}' has type ${typeLabel}, which llama.cpp cannot compute with (it crashes): ${REDOWNLOAD}`);
    }
  }
}

/** A metadata number, or undefined when the key is absent or not a number. */
function numberValue(parsed: ParsedHeader, key: string): number | undefined {
  const value = parsed.metadata.get(key);
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  return undefined;
}

function checkEpsilon(parsed: ParsedHeader, key: string): void {
  const eps = numberValue(parsed, key);
  if (parsed.metadata.has(key) && eps !== undefined && !(Number.isFinite(eps) && eps >= 0)) {
    throw new Problem(`'${key}' is ${eps}; a normalization epsilon must be a finite number of at least 0 (ggml aborts otherwise): ${REDOWNLOAD}`);
  }
}

/**
 * The first two items of a string array with the same bytes, or undefined. An open-addressing
 * table of item indices keyed by an FNV-1a hash of the bytes: no strings are made, so a
 * 150,000-token vocabulary takes about a millisecond. An empty item counts as `[EMPTY_<i>]`, the
 * text llama.cpp gives it.
 */
function findDuplicateString(buf: Buffer, array: RawArray): [number, number] | undefined {
  const n = array.length;
  const starts = new Float64Array(n);
  const ends = new Float64Array(n);
  const empties = new Map<number, Buffer>();
  let size = 16;
  while (size < n * 2) size *= 2;
  const mask = size - 1;
  const table = new Int32Array(size).fill(-1);
  const hashes = new Int32Array(n);
  const bytesOf = (i: number): Buffer => empties.get(i) ?? buf.subarray(starts[i], ends[i]);
  let at = array.start;
  for (let i = 0; i < n; i++) {
    const length = buf.readUInt32LE(at); // the high half was checked while parsing
    let start = at + 8;
    let end = start + length;
    at = end;
    let bytes: Buffer = buf;
    if (length === 0) {
      bytes = Buffer.from(`[EMPTY_${i}]`, 'latin1');
      empties.set(i, bytes);
      start = 0;
      end = bytes.length;
    }
    starts[i] = start;
    ends[i] = end;
    let h = 0x811c9dc5;
    for (let j = start; j < end; j++) h = Math.imul(h ^ bytes[j]!, 0x01000193);
    hashes[i] = h;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const other = table[slot]!;
      if (other === -1) {
        table[slot] = i;
        break;
      }
      if (hashes[other] === h && ends[other]! - starts[other]! === end - start && bytesOf(other).equals(bytesOf(i))) return [other, i];
    }
  }
  return undefined;
}

function checkTextModel(parsed: ParsedHeader, architecture: string): void {
  const blocks = numberValue(parsed, `${architecture}.block_count`);
  if (blocks !== undefined && !(blocks >= 1 && blocks <= LLAMA_MAX_LAYERS)) {
    throw new Problem(`'${architecture}.block_count' is ${blocks}; llama.cpp loads 1 to ${LLAMA_MAX_LAYERS} layers (it aborts otherwise): ${REDOWNLOAD}`);
  }
  checkEpsilon(parsed, `${architecture}.attention.layer_norm_rms_epsilon`);
  checkEpsilon(parsed, `${architecture}.attention.layer_norm_epsilon`);

  const tokens = parsed.arrays.get('tokenizer.ggml.tokens');
  if (parsed.metadata.has('tokenizer.ggml.tokens') && tokens?.itemType !== T_STRING) {
    throw new Problem(`'tokenizer.ggml.tokens' must be an array of strings: ${REDOWNLOAD}`);
  }
  if (tokens) {
    // llama.cpp maps each token's text to its id and aborts when two tokens share a text.
    const duplicate = findDuplicateString(parsed.buf, tokens);
    if (duplicate) {
      const [first, second] = duplicate;
      let at = tokens.start;
      for (let i = 0; i < first; i++) at += 8 + parsed.buf.readUInt32LE(at);
      const text = parsed.buf.toString('utf8', at + 8, at + 8 + parsed.buf.readUInt32LE(at));
      throw new Problem(`tokens ${first} and ${second} of the vocabulary are both ${JSON.stringify(text)}; each token must be unique: ${REDOWNLOAD}`);
    }
  }
}

/** The GGUF type clip.cpp reads each key as; a key of another type aborts it. */
function clipKeyType(key: string): number | 'array' | undefined {
  if (!key.startsWith('clip.')) return key === 'general.name' || key === 'general.description' ? T_STRING : undefined;
  if (/^clip\.((vision|audio|gen\.audio)\.)?projector_type$/.test(key) || key === 'clip.vision.mm_patch_merge_type' || key === 'clip.gen.audio.model_variant') return T_STRING;
  if (/^clip\.(has_(vision|audio|gen_audio)_encoder|use_gelu|use_silu)$/.test(key)) return T_BOOL;
  if (/^clip\.(vision|audio|gen\.audio)\.attention\.layer_norm_epsilon$/.test(key)) return T_FLOAT32;
  if (key === 'clip.minicpmv_version') return T_INT32;
  if (/\.(image_mean|image_std|image_grid_pinpoints|feature_layer|wa_layer_indexes|wa_pattern_mode|spatial_offsets|codebook_size)$/.test(key)) return 'array';
  if (
    /^clip\.(vision|audio|gen\.audio)\.(embedding_length|feed_forward_length|block_count|projection_dim|attention\.head_count|attention\.head_count_kv|attention\.head_dim)$/.test(key) ||
    /^clip\.vision\.(image_size|image_min_pixels|image_max_pixels|preproc_min_tiles|preproc_max_tiles|preproc_image_size|patch_size|projector\.scale_factor|projector\.query_side|projector\.window_side|spatial_merge_size|n_wa_pattern|window_size|sam\.head_count|sam\.block_count|sam\.embedding_length|expert_used_count)$/.test(key) ||
    /^clip\.audio\.(num_mel_bins|projector\.stack_factor|chunk_size|conv_kernel_size|max_pos_emb|projector\.window_size|projector\.downsample_rate|projector\.head_count|rvq\.num_quantizers|window_size|local_block_count|local_group_size|subsampling_factor)$/.test(key) ||
    key === 'clip.minicpmv_query_num'
  ) {
    return T_UINT32;
  }
  return undefined;
}

interface ProjectorFacts {
  /** clip.projector_type. */
  type: string;
  /** The width of the embeddings it produces, when the projector type is one this module knows. */
  outputWidth: number | undefined;
}

function checkProjector(parsed: ParsedHeader): ProjectorFacts {
  for (const [key, type] of parsed.types) {
    const expected = clipKeyType(key);
    if (expected === undefined) continue;
    if (expected === 'array' ? type !== T_ARRAY : type !== expected) {
      throw new Problem(`'${key}' is stored as ${typeName(type)}, but llama.cpp reads it as ${expected === 'array' ? 'an array' : typeName(expected)} (and aborts): ${REDOWNLOAD}`);
    }
  }
  if (parsed.metadata.get('clip.has_vision_encoder') !== true) {
    throw new Problem("it has no vision encoder ('clip.has_vision_encoder' is not true), so it cannot read images: pass the mmproj file of a vision model");
  }
  const projectorType = parsed.metadata.get('clip.projector_type') ?? parsed.metadata.get('clip.vision.projector_type');
  const type = typeof projectorType === 'string' ? projectorType : '';

  const required = (key: string, min: number, max = 0x7fffffff): number => {
    const value = numberValue(parsed, key);
    if (value === undefined) throw new Problem(`it has no '${key}': use an mmproj converted by llama.cpp's tools`);
    if (!(value >= min && value <= max)) throw new Problem(`'${key}' is ${value}, outside ${min} to ${max}: ${REDOWNLOAD}`);
    return value;
  };
  const width = required('clip.vision.embedding_length', 1);
  const heads = required('clip.vision.attention.head_count', 1);
  const layers = required('clip.vision.block_count', 1, 4096);
  const imageSize = required('clip.vision.image_size', 1, CLIP_MAX_IMAGE_SIZE);
  const patchSize = required('clip.vision.patch_size', 1, imageSize);
  checkEpsilon(parsed, 'clip.vision.attention.layer_norm_epsilon');
  if (!parsed.metadata.has('clip.vision.attention.head_dim') && width % heads !== 0) {
    throw new Problem(`'clip.vision.embedding_length' ${width} is not a multiple of 'clip.vision.attention.head_count' ${heads} (clip.cpp aborts): ${REDOWNLOAD}`);
  }
  const featureLayers = parsed.arrays.get('clip.vision.feature_layer');
  if (featureLayers?.itemType === T_INT32) {
    for (let i = 0; i < featureLayers.length; i++) {
      const layer = parsed.buf.readInt32LE(featureLayers.start + 4 * i);
      if (layer > layers) throw new Problem(`'clip.vision.feature_layer' names layer ${layer}, but the encoder has ${layers}: ${REDOWNLOAD}`);
    }
  }
  if (type !== 'mlp' && type !== 'mlp_norm') return { type, outputWidth: undefined };
  return { type, outputWidth: checkLlavaTensors(parsed, { width, layers, imageSize, patchSize, featureLayers: featureLayers?.length ?? 0 }) };
}

/**
 * The tensors of a LLaVA projector (clip.cpp's `mlp` / `mlp_norm`): clip.cpp loads most of them as
 * optional and trusts their shapes, so a missing or misshapen one segfaults or aborts in the graph.
 * Returns the output width.
 */
function checkLlavaTensors(
  parsed: ParsedHeader,
  h: { width: number; layers: number; imageSize: number; patchSize: number; featureLayers: number },
): number {
  const tensors = tensorMap(parsed);
  const E = h.width;
  const get = (name: string, isRequired: boolean): RawTensor | undefined => {
    const t = tensors.get(name);
    if (!t && isRequired) throw new Problem(`it has no tensor '${name}', which a LLaVA projector needs: ${REDOWNLOAD}`);
    return t;
  };
  const expect = (name: string, shape: readonly number[], isRequired: boolean): RawTensor | undefined => {
    const t = get(name, isRequired);
    if (t && !sameShape(t.shape, shape)) {
      throw new Problem(`tensor '${name}' has shape ${shapeText(t.shape)}; with the projector's hyperparameters it must be ${shapeText(shape)}: ${REDOWNLOAD}`);
    }
    return t;
  };

  const patch = expect('v.patch_embd.weight', [h.patchSize, h.patchSize, 3, E], true)!;
  if (patch.type !== F32 && patch.type !== F16) {
    throw new Problem(`tensor 'v.patch_embd.weight' is ${GGML_TYPES.get(patch.type)![0]}; the patch convolution needs f32 or f16: ${REDOWNLOAD}`);
  }
  const classEmbedding = expect('v.class_embd', [E], false);
  const side = Math.floor(h.imageSize / h.patchSize);
  const positions = side * side + (classEmbedding ? 1 : 0);
  const position = get('v.position_embd.weight', true)!;
  if (position.shape[0] !== E || (position.shape[1] ?? 1) < positions || position.shape.slice(2).some((d) => d !== 1)) {
    throw new Problem(
      `tensor 'v.position_embd.weight' has shape ${shapeText(position.shape)}, but ${h.imageSize}-pixel images in ${h.patchSize}-pixel ` +
        `patches need ${shapeText([E, positions])}: ${REDOWNLOAD}`,
    );
  }
  for (const norm of ['v.pre_ln', 'v.post_ln']) {
    expect(`${norm}.weight`, [E], false);
    expect(`${norm}.bias`, [E], false);
  }
  for (let il = 0; il < h.layers; il++) {
    const p = `v.blk.${il}`;
    for (const part of ['attn_q', 'attn_k', 'attn_v', 'attn_out']) {
      expect(`${p}.${part}.weight`, [E, E], true);
      expect(`${p}.${part}.bias`, [E], false);
    }
    for (const part of ['ln1', 'ln2']) {
      expect(`${p}.${part}.weight`, [E], false);
      expect(`${p}.${part}.bias`, [E], false);
    }
    // The feed-forward pair, in either naming (old conversions swap up and down; clip.cpp swaps them back).
    const up = get(`${p}.ffn_up.weight`, true)!;
    const down = get(`${p}.ffn_down.weight`, true)!;
    const [first, second] = down.shape[0] === E ? [down, up] : [up, down];
    const hidden = first.shape[1] ?? 1;
    expect(first.name, [E, hidden], true);
    expect(second.name, [hidden, E], true);
    expect(first.name.replace(/weight$/, 'bias'), [hidden], false);
    expect(second.name.replace(/weight$/, 'bias'), [E], false);
    expect(`${p}.ffn_gate.weight`, [E, hidden], false);
    expect(`${p}.ffn_gate.bias`, [hidden], false);
  }

  const mm0 = get('mm.0.weight', true)!;
  const inputWidth = mm0.shape[0]!;
  if (inputWidth !== E && !(h.featureLayers > 0 && inputWidth % E === 0)) {
    throw new Problem(`tensor 'mm.0.weight' takes ${inputWidth} values, but the encoder gives ${E}: ${REDOWNLOAD}`);
  }
  const hidden = mm0.shape[1] ?? 1;
  expect('mm.0.weight', [inputWidth, hidden], true);
  expect('mm.0.bias', [hidden], true);
  if (tensors.has('mm.3.weight')) {
    // Yi-style: linear, layer norm, GELU, linear, layer norm.
    expect('mm.1.weight', [hidden], true);
    expect('mm.1.bias', [hidden], true);
    const mm3 = get('mm.3.weight', true)!;
    const out = mm3.shape[1] ?? 1;
    expect('mm.3.weight', [hidden, out], true);
    expect('mm.3.bias', [out], true);
    expect('mm.4.weight', [out], true);
    expect('mm.4.bias', [out], true);
    return out;
  }
  const mm2 = get('mm.2.weight', false);
  if (!mm2) return hidden;
  const out = mm2.shape[1] ?? 1;
  expect('mm.2.weight', [hidden, out], true);
  expect('mm.2.bias', [out], true);
  return out;
}

/**
 * The positions of the header's fields, for tools that mutate GGUF files (scripts/fuzz.mjs).
 * `buf` must hold the whole header. @internal
 */
export function ggufFields(buf: Buffer, fileSize = buf.length): GgufField[] {
  const fields: GgufField[] = [];
  parseHeader(buf, fileSize, true, Math.max(buf.length, fileSize), (field) => fields.push(field));
  return fields;
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
  if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < HEADER_BYTES) throw new RangeError(`maxHeaderBytes must be a whole number of at least ${HEADER_BYTES}`);
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
    const fileSize = (await fh.stat()).size;
    const limit = Math.min(fileSize, maxHeaderBytes);
    let parsed: ParsedHeader | undefined;
    for (let want = Math.min(limit, FIRST_READ); parsed === undefined; want = Math.min(limit, want * 4)) {
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      try {
        parsed = parseHeader(buf.subarray(0, got), fileSize, got === fileSize || want === limit, maxHeaderBytes);
      } catch (error) {
        if (!(error instanceof NeedMoreBytes) || want === limit) throw error;
      }
    }
    summary = summarize(path, fileSize, parsed, expect);
  } catch (error) {
    if (error instanceof Problem) throw fail(error.message);
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

function summarize(path: string, fileSize: number, parsed: ParsedHeader, expect: GgufRole): GgufSummary {
  const architecture = parsed.metadata.get('general.architecture');
  if (architecture === undefined) {
    throw new Problem("it has no 'general.architecture' key, so llama.cpp cannot tell what model it is: use a GGUF converted by llama.cpp's tools");
  }
  if (typeof architecture !== 'string' || architecture.length === 0) {
    throw new Problem(`'general.architecture' must be a non-empty string: ${REDOWNLOAD}`);
  }
  const role: GgufRole = architecture === 'clip' ? 'projector' : 'text-model';
  const clipKeys = [...parsed.metadata.keys()].some((key) => key.startsWith('clip.'));
  if (role === 'text-model' && clipKeys) {
    // clip.cpp never reads the architecture, so a damaged one is found here.
    throw new Problem(
      expect === 'projector'
        ? `its 'general.architecture' is ${JSON.stringify(architecture)} where a projector has "clip": ${REDOWNLOAD}`
        : `this is a projector (mmproj) file (with a damaged 'general.architecture' ${JSON.stringify(architecture)}), not a text model; pass the LLaVA language model GGUF as model`,
    );
  }
  if (role !== expect) {
    throw new Problem(
      role === 'projector'
        ? 'this is a projector (mmproj) file, not a text model; pass it as mmproj, and the LLaVA language model GGUF as model'
        : `this is a text model (architecture '${architecture}'), not a projector; pass it as model, and the mmproj GGUF that came with it as mmproj`,
    );
  }
  checkTensorTypes(parsed);
  let projector: ProjectorFacts | undefined;
  if (role === 'projector') projector = checkProjector(parsed);
  else checkTextModel(parsed, architecture);
  const name = parsed.metadata.get('general.name');
  return {
    path,
    fileSize,
    version: parsed.version,
    architecture,
    name: typeof name === 'string' ? name : undefined,
    role,
    alignment: parsed.alignment,
    headerBytes: parsed.headerBytes,
    dataOffset: parsed.dataOffset,
    dataBytes: parsed.dataBytes,
    projectorType: projector?.type,
    projectorOutputWidth: projector?.outputWidth,
    metadata: parsed.metadata,
    tensors: parsed.tensors.map((t) => ({ ...t, typeName: GGML_TYPES.get(t.type)![0] })),
  };
}
