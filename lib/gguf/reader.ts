/**
 * The one GGUF header parser: metadata and tensor infos, never the tensor data, from bytes that may
 * be hostile (a damaged download, a fuzzer's mutation, a file that is something else).
 *
 * Every read is bounded by the bytes at hand and by the file size, every count and length is
 * checked against what the file can hold before anything is allocated for it, and a header longer
 * than a cap is refused without being read. Files are read incrementally: the parser asks for more
 * bytes ({@link NeedMoreBytes}) when the first read ends inside the header, so a 4 GB model costs a
 * read of its header alone. Array items are not decoded while parsing (a 150,000-token vocabulary
 * is skipped, not turned into strings); {@link arrayValue} decodes one on demand.
 *
 * What it rejects is what makes a header unreadable, or what ggml's gguf.cpp itself refuses while
 * reading: a bad magic or version, counts or lengths the file cannot hold, unknown value or tensor
 * types, empty, repeated or over-long keys and tensor names, more than 4 dimensions, dimensions
 * under 1 or overflowing, rows that are not whole blocks, a `general.alignment` that is not a u32
 * power of two. Where the tensor data lies is the check's business (lib/gguf/check.ts).
 *
 * Owns: GGUF parsing, {@link readGgufHeader}, {@link ggufFields}, {@link GgufFormatError}.
 * May import: ./format and node builtins only.
 */
import { open, type FileHandle } from 'node:fs/promises';

import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGML_TYPE_TABLE,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_HEADER_BYTES,
  GGUF_KEY_ALIGNMENT,
  GGUF_LAST_TYPE,
  GGUF_MAGIC,
  GGUF_MAX_ARRAY_ELEMENTS,
  GGUF_MAX_STRING_LENGTH,
  GGUF_READ_VERSIONS,
  GGUF_VALUE_SIZES,
  GgufType,
  alignUp,
  ggmlDataBytes,
  valueTypeLabel,
  type GgmlTypeInfo,
  type GgufArray,
  type GgufScalar,
  type GgufValue,
} from './format';

/** The advice that ends most messages about a damaged file. */
export const REDOWNLOAD = 'the file is damaged, cut short or badly converted: download or convert it again';

/** Longer keys are no mistake one could make by hand: a corrupted length. */
const MAX_KEY_LENGTH = 65536;
/** Smallest possible key/value pair: key length, a 1-byte key, type, a 1-byte value. */
const MIN_KV_BYTES = 8 + 1 + 4 + 1;
/** Smallest possible tensor info: name length, a 1-byte name, dims count, type, offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8;
/** Far above any real model (hundreds of keys, a few thousand tensors), low enough to bound memory. */
const MAX_KEYS = 1 << 16;
const MAX_TENSORS = 1 << 18;
/**
 * The default cap on a header's size: LLaVA-1.5's header is about 1 MiB, the largest vocabularies
 * in use (250k tokens with merges) about 20 MiB.
 */
export const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
const FIRST_READ = 1 << 20;

/** What is wrong with a GGUF file, in words for its user (the callers add the file's name). */
export class GgufFormatError extends Error {
  override readonly name = 'GgufFormatError';
  constructor(
    message: string,
    /** Whether the file does not start with the GGUF magic at all. */
    readonly badMagic = false,
  ) {
    super(message);
  }
}

/** The parser ran off the bytes it was given; read more and parse again. */
export class NeedMoreBytes extends Error {}

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

/** One metadata entry as parsed: a scalar with its value, or an array with where its items start. */
export type GgufEntry =
  | { readonly type: Exclude<GgufType, GgufType.ARRAY>; readonly value: number | bigint | boolean | string }
  | { readonly type: GgufType.ARRAY; readonly itemType: Exclude<GgufType, GgufType.ARRAY>; readonly length: number; readonly start: number };

/** One tensor info as parsed. */
export interface ParsedTensor {
  readonly name: string;
  /** In ggml order (`shape[0]` is the contiguous dimension). */
  readonly shape: readonly number[];
  readonly type: number;
  readonly typeInfo: GgmlTypeInfo;
  /** Offset of its data from the data section, as stored (not yet checked). */
  readonly offset: bigint;
  /** Where that offset is written in the file. */
  readonly offsetAt: number;
  /** Bytes of data (without alignment padding). */
  readonly bytes: number;
}

/** A parsed header. */
export interface ParsedGgufHeader {
  /** The bytes parsed (at least the whole header), for decoding array items. */
  readonly buf: Buffer;
  readonly fileSize: number;
  readonly version: number;
  readonly entries: ReadonlyMap<string, GgufEntry>;
  readonly tensors: readonly ParsedTensor[];
  readonly alignment: number;
  /** Bytes of header (up to the end of the tensor infos). */
  readonly headerBytes: number;
  /** Absolute file offset where tensor data starts (the header, padded to the alignment). */
  readonly dataOffset: number;
}

/** Options of {@link parseGgufHeader}. */
export interface ParseOptions {
  /** The size of the whole file `buf` starts. */
  readonly fileSize: number;
  /** Whether no more bytes can be read (else running off `buf` throws NeedMoreBytes). */
  readonly complete: boolean;
  /** The most bytes the header may take. */
  readonly maxHeaderBytes: number;
  /** Called with the position of each field, in file order. */
  readonly onField?: (field: GgufField) => void;
}

class Cursor {
  pos = 0;
  private readonly view: DataView;

  constructor(
    readonly buf: Buffer,
    private readonly options: ParseOptions,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** Bytes of the file after the current position. */
  get remaining(): number {
    return this.options.fileSize - this.pos;
  }

  /** Claims `n` bytes and returns where they start. */
  take(n: number, what: string): number {
    if (this.pos + n > this.buf.length) {
      const { fileSize, maxHeaderBytes } = this.options;
      if (this.pos + n > fileSize) {
        throw new GgufFormatError(`the file ends at byte ${fileSize}, inside the header (reading ${what} at byte ${this.pos}): ${REDOWNLOAD}`);
      }
      if (this.pos + n > maxHeaderBytes) {
        throw new GgufFormatError(
          `its header is larger than ${maxHeaderBytes} bytes (reading ${what} at byte ${this.pos}): a corrupted length, or a ` +
            'model whose metadata is far larger than any this package expects (raise maxHeaderBytes if it is genuine)',
        );
      }
      if (this.options.complete) throw new GgufFormatError(`the header runs past the bytes read (${what})`);
      throw new NeedMoreBytes();
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  field(kind: string, offset: number, width: number, owner?: string, valueType?: number): void {
    if (this.options.onField) {
      const field: { kind: string; offset: number; width: number; owner?: string; valueType?: number } = { kind, offset, width };
      if (owner !== undefined) field.owner = owner;
      if (valueType !== undefined) field.valueType = valueType;
      this.options.onField(field);
    }
  }

  get tracing(): boolean {
    return this.options.onField !== undefined;
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

  /** A length-prefixed string, decoded as UTF-8 or byte for byte (latin1). */
  str(what: string, maxLength: number, lengthKind: string, owner?: string, utf8 = true): string {
    const lengthAt = this.pos;
    const length = this.u64(`the length of ${what}`);
    if (lengthKind) this.field(lengthKind, lengthAt, 8, owner);
    if (length > BigInt(this.remaining)) {
      throw new GgufFormatError(`${what} at byte ${lengthAt} claims ${length} bytes, more than the ${this.remaining} left in the file: ${REDOWNLOAD}`);
    }
    if (length > BigInt(maxLength)) {
      throw new GgufFormatError(`${what} at byte ${lengthAt} claims ${length} bytes, more than the ${maxLength} allowed: ${REDOWNLOAD}`);
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
      throw new GgufFormatError(`${what} at byte ${lengthAt} claims ${claimed} bytes, more than the ${this.remaining} left in the file: ${REDOWNLOAD}`);
    }
    this.take(length, what);
    return length;
  }

  scalar(type: number, what: string): number | bigint | boolean {
    if (type === GgufType.STRING || type === GgufType.ARRAY || type > GGUF_LAST_TYPE) throw new GgufFormatError(`${what} has an unknown type ${type}`);
    return readFixed(this.view, this.take(GGUF_VALUE_SIZES[type]!, what), type);
  }
}

/** A fixed-size value of `type` at `at` (the caller has checked that its bytes are there). */
function readFixed(view: DataView, at: number, type: GgufType): number | bigint | boolean {
  switch (type) {
    case GgufType.UINT8: return view.getUint8(at);
    case GgufType.INT8: return view.getInt8(at);
    case GgufType.UINT16: return view.getUint16(at, true);
    case GgufType.INT16: return view.getInt16(at, true);
    case GgufType.UINT32: return view.getUint32(at, true);
    case GgufType.INT32: return view.getInt32(at, true);
    case GgufType.FLOAT32: return view.getFloat32(at, true);
    case GgufType.BOOL: return view.getInt8(at) !== 0;
    case GgufType.UINT64: return view.getBigUint64(at, true);
    case GgufType.INT64: return view.getBigInt64(at, true);
    case GgufType.FLOAT64: return view.getFloat64(at, true);
    default: throw new GgufFormatError(`no fixed-size value of type ${type}`);
  }
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
 * Parses the header in `buf` (the first bytes of a file of `options.fileSize` bytes). Throws
 * GgufFormatError for a header that cannot be read, NeedMoreBytes when `buf` ends before the header
 * does and more can be read.
 */
export function parseGgufHeader(buf: Buffer, options: ParseOptions): ParsedGgufHeader {
  const { fileSize } = options;
  const r = new Cursor(buf, options);
  if (fileSize < 4) throw new GgufFormatError(`it has only ${fileSize} bytes, too few for a GGUF file: ${REDOWNLOAD}`);
  if (buf.length < 4 && !options.complete) throw new NeedMoreBytes();
  if (buf.readUInt32LE(0) !== GGUF_MAGIC) throw new GgufFormatError(`it is not a GGUF file: ${describeMagic(buf, fileSize)}`, true);
  r.pos = 4;
  const version = r.u32('the GGUF version', 'version');
  if ((version & 0xffff) === 0) {
    throw new GgufFormatError(`its GGUF version reads as ${version}: a big-endian file? Convert it again for a little-endian machine`);
  }
  if (version === 1) throw new GgufFormatError('it is a GGUF version 1 file, which llama.cpp no longer reads: convert the model again');
  if (!GGUF_READ_VERSIONS.includes(version)) {
    throw new GgufFormatError(`it has GGUF version ${version}; this build reads versions ${GGUF_READ_VERSIONS.join(' and ')}: update chain-of-spot, or convert the model again`);
  }

  const tensorCount = r.i64('the tensor count', 'n_tensors');
  const kvCount = r.i64('the metadata key count', 'n_kv');
  const room = BigInt(fileSize - GGUF_HEADER_BYTES);
  if (tensorCount < 0n || kvCount < 0n || tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) + kvCount * BigInt(MIN_KV_BYTES) > room) {
    throw new GgufFormatError(`its header claims ${tensorCount} tensors and ${kvCount} metadata keys, more than a ${fileSize}-byte file can hold: ${REDOWNLOAD}`);
  }
  if (tensorCount > BigInt(MAX_TENSORS) || kvCount > BigInt(MAX_KEYS)) {
    throw new GgufFormatError(`its header claims ${tensorCount} tensors and ${kvCount} metadata keys; no model has more than ${MAX_TENSORS} and ${MAX_KEYS}: ${REDOWNLOAD}`);
  }
  const entries = parseMetadata(r, Number(kvCount));
  const alignment = alignmentOf(entries);
  const tensors = parseTensorInfos(r, Number(tensorCount));
  const headerBytes = r.pos;
  return { buf, fileSize, version, entries, tensors, alignment, headerBytes, dataOffset: alignUp(headerBytes, alignment) };
}

function parseMetadata(r: Cursor, nKv: number): Map<string, GgufEntry> {
  const entries = new Map<string, GgufEntry>();
  const keyBytesSeen = new Set<string>();
  for (let i = 0; i < nKv; i++) {
    const keyAt = r.pos;
    const key = r.str(`the name of metadata key ${i}`, MAX_KEY_LENGTH, '');
    r.field('key_length', keyAt, 8, key);
    if (key.length === 0) throw new GgufFormatError(`metadata key ${i} has an empty name: ${REDOWNLOAD}`);
    // gguf.cpp compares keys byte for byte; two invalid UTF-8 keys may decode alike.
    const keyBytes = r.buf.toString('latin1', keyAt + 8, r.pos);
    if (keyBytesSeen.has(keyBytes)) throw new GgufFormatError(`metadata key '${key}' appears twice: ${REDOWNLOAD}`);
    keyBytesSeen.add(keyBytes);
    const typeAt = r.pos;
    const type = r.u32(`the type of '${key}'`, 'value_type', key);
    if (type === GgufType.ARRAY) {
      const itemTypeAt = r.pos;
      const itemType = r.u32(`the item type of '${key}'`, 'array_type', key);
      const lengthAt = r.pos;
      const length = r.u64(`the length of '${key}'`, 'array_length', key);
      if (itemType > GGUF_LAST_TYPE || itemType === GgufType.ARRAY) {
        throw new GgufFormatError(`metadata '${key}' is an array of ${itemType === GgufType.ARRAY ? 'arrays' : `unknown type ${itemType}`} (byte ${itemTypeAt}): ${REDOWNLOAD}`);
      }
      const itemSize = GGUF_VALUE_SIZES[itemType]!;
      if (length > BigInt(GGUF_MAX_ARRAY_ELEMENTS) || length * BigInt(itemSize) > BigInt(r.remaining)) {
        throw new GgufFormatError(`metadata '${key}' claims ${length} items (byte ${lengthAt}), more than the file holds: ${REDOWNLOAD}`);
      }
      const n = Number(length);
      const start = r.pos;
      if (itemType === GgufType.STRING) {
        for (let j = 0; j < n; j++) {
          const at = r.pos;
          r.skipStr(`item ${j} of '${key}'`);
          if (r.tracing) r.field('array_item', at, r.pos - at, key, GgufType.STRING);
        }
      } else {
        r.take(n * itemSize, `the items of '${key}'`);
        if (r.tracing) for (let j = 0; j < n; j++) r.field('array_item', start + j * itemSize, itemSize, key, itemType);
      }
      entries.set(key, { type: GgufType.ARRAY, itemType, length: n, start });
    } else if (type === GgufType.STRING) {
      const at = r.pos + 8;
      const value = r.str(`the value of '${key}'`, GGUF_MAX_STRING_LENGTH, 'string_length', key);
      r.field('value', at, r.pos - at, key, GgufType.STRING);
      entries.set(key, { type, value });
    } else if (type <= GGUF_LAST_TYPE) {
      const at = r.pos;
      const value = r.scalar(type, `the value of '${key}'`);
      r.field('value', at, r.pos - at, key, type);
      entries.set(key, { type, value });
    } else {
      throw new GgufFormatError(`metadata '${key}' has unknown type ${type} (byte ${typeAt}): ${REDOWNLOAD}`);
    }
  }
  return entries;
}

function alignmentOf(entries: ReadonlyMap<string, GgufEntry>): number {
  const entry = entries.get(GGUF_KEY_ALIGNMENT);
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (entry.type !== GgufType.UINT32) {
    throw new GgufFormatError(`'${GGUF_KEY_ALIGNMENT}' must be a u32, not ${valueTypeLabel(entry.type)}: ${REDOWNLOAD}`);
  }
  const alignment = entry.value as number;
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
    throw new GgufFormatError(`'${GGUF_KEY_ALIGNMENT}' is ${alignment}, not a power of two: ${REDOWNLOAD}`);
  }
  return alignment;
}

function parseTensorInfos(r: Cursor, nTensors: number): ParsedTensor[] {
  const tensors: ParsedTensor[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const nameAt = r.pos;
    const name = r.str(`the name of tensor ${i}`, MAX_KEY_LENGTH, '', undefined, false);
    r.field('tensor_name_length', nameAt, 8, name);
    if (name.length === 0) throw new GgufFormatError(`tensor ${i} has an empty name: ${REDOWNLOAD}`);
    if (name.length >= GGML_MAX_NAME) throw new GgufFormatError(`tensor ${i} has a ${name.length}-byte name; ggml allows at most ${GGML_MAX_NAME - 1}: ${REDOWNLOAD}`);
    if (names.has(name)) throw new GgufFormatError(`tensor '${name}' appears twice: ${REDOWNLOAD}`);
    names.add(name);
    const nDims = r.u32(`the dimension count of '${name}'`, 'n_dims', name);
    if (nDims > GGML_MAX_DIMS) throw new GgufFormatError(`tensor '${name}' has ${nDims} dimensions; ggml allows at most ${GGML_MAX_DIMS}: ${REDOWNLOAD}`);
    const shape: number[] = [];
    let elements = 1n;
    for (let d = 0; d < nDims; d++) {
      const dim = r.i64(`dimension ${d} of '${name}'`, 'dim', name);
      if (dim < 1n) throw new GgufFormatError(`tensor '${name}' has dimension ${d} of ${dim}; each must be at least 1: ${REDOWNLOAD}`);
      elements *= dim;
      if (elements >= 1n << 62n) throw new GgufFormatError(`tensor '${name}' has more elements than ggml can count: ${REDOWNLOAD}`);
      shape.push(Number(dim));
    }
    const typeAt = r.pos;
    const type = r.u32(`the type of '${name}'`, 'tensor_type', name);
    const typeInfo = GGML_TYPE_TABLE.get(type);
    if (!typeInfo) {
      throw new GgufFormatError(
        `tensor '${name}' has ggml type ${type} (byte ${typeAt}), which this build of llama.cpp does not know` +
          (type < 64 ? ' (a type that was removed, or one newer than this build): convert or quantize the model again, or update chain-of-spot' : `: ${REDOWNLOAD}`),
      );
    }
    const rowLength = BigInt(shape[0] ?? 1);
    if (rowLength % BigInt(typeInfo.blockSize) !== 0n) {
      throw new GgufFormatError(`tensor '${name}' of type ${typeInfo.name} has rows of ${rowLength} values, not a multiple of its block size ${typeInfo.blockSize}: ${REDOWNLOAD}`);
    }
    const offsetAt = r.pos;
    const offset = r.u64(`the data offset of '${name}'`, 'tensor_offset', name);
    tensors.push({ name, shape, type, typeInfo, offset, offsetAt, bytes: Number(ggmlDataBytes(typeInfo, elements)) });
  }
  return tensors;
}

/**
 * Reads and parses the header of an open file, reading more only when the parse runs off the
 * bytes read so far. Throws GgufFormatError.
 */
export async function readParsedHeader(fh: FileHandle, fileSize: number, maxHeaderBytes: number): Promise<ParsedGgufHeader> {
  const limit = Math.min(fileSize, maxHeaderBytes);
  for (let want = Math.min(limit, FIRST_READ); ; want = Math.min(limit, want * 4)) {
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    try {
      return parseGgufHeader(buf.subarray(0, got), { fileSize, complete: got === fileSize || want === limit, maxHeaderBytes });
    } catch (error) {
      if (!(error instanceof NeedMoreBytes) || want === limit) throw error;
    }
  }
}

/** The items of an array entry, decoded. */
export function arrayItems(header: ParsedGgufHeader, entry: GgufEntry & { type: GgufType.ARRAY }): (number | bigint | boolean | string)[] {
  const { buf } = header;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const items: (number | bigint | boolean | string)[] = new Array(entry.length);
  let at = entry.start;
  for (let i = 0; i < entry.length; i++) {
    if (entry.itemType === GgufType.STRING) {
      const length = view.getUint32(at, true); // the parse checked the high half and the bounds
      items[i] = buf.toString('utf8', at + 8, at + 8 + length);
      at += 8 + length;
    } else {
      items[i] = readFixed(view, at, entry.itemType);
      at += GGUF_VALUE_SIZES[entry.itemType]!;
    }
  }
  return items;
}

/** An entry as a tagged {@link GgufValue}, array items decoded. */
export function entryValue(header: ParsedGgufHeader, entry: GgufEntry): GgufValue {
  if (entry.type !== GgufType.ARRAY) return { type: entry.type, value: entry.value } as GgufScalar;
  return { type: GgufType.ARRAY, itemType: entry.itemType, value: arrayItems(header, entry) } as GgufArray;
}

/**
 * The positions of the header's fields, for tools that mutate GGUF files (scripts/fuzz.mjs).
 * `buf` must hold the whole header. @internal
 */
export function ggufFields(buf: Buffer, fileSize = buf.length): GgufField[] {
  const fields: GgufField[] = [];
  parseGgufHeader(buf, { fileSize, complete: true, maxHeaderBytes: Math.max(buf.length, fileSize), onField: (field) => fields.push(field) });
  return fields;
}

// --- whole headers, for tools and tests ----------------------------------------------------------

/** One tensor's entry in the header. */
export interface GgufTensorInfo {
  readonly name: string;
  /** In ggml order, as written. */
  readonly shape: readonly number[];
  /** The `ggml_type` id. */
  readonly type: number;
  /** Offset of the data from {@link GgufHeader.dataOffset}. */
  readonly offset: number;
}

/** The parsed header of a GGUF file, every value decoded. */
export interface GgufHeader {
  readonly version: number;
  readonly tensorCount: number;
  readonly kv: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly alignment: number;
  /** Absolute file offset where tensor data starts. */
  readonly dataOffset: number;
}

/**
 * Reads and parses the header of a GGUF file (metadata and tensor infos, not the data), decoding
 * every value. A reader for tests and tools, not a validator (that is lib/gguf/check.ts's
 * `checkGguf`); it rejects with a RangeError a header that cannot be parsed.
 */
export async function readGgufHeader(path: string, maxHeaderBytes = DEFAULT_MAX_HEADER_BYTES): Promise<GgufHeader> {
  const fh = await open(path, 'r');
  let header: ParsedGgufHeader;
  try {
    header = await readParsedHeader(fh, (await fh.stat()).size, maxHeaderBytes);
  } catch (error) {
    if (!(error instanceof GgufFormatError)) throw error;
    throw new RangeError(`${path} is ${error.badMagic ? 'not a GGUF file (bad magic)' : 'not a readable GGUF file'}: ${error.message}`, { cause: error });
  } finally {
    await fh.close();
  }
  const kv = new Map<string, GgufValue>();
  for (const [key, entry] of header.entries) kv.set(key, entryValue(header, entry));
  return {
    version: header.version,
    tensorCount: header.tensors.length,
    kv,
    tensors: header.tensors.map(({ name, shape, type, offset }) => ({ name, shape, type, offset: Number(offset) })),
    alignment: header.alignment,
    dataOffset: header.dataOffset,
  };
}
