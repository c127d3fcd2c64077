/**
 * A small GGUF v3 writer, enough to produce llama.cpp-loadable model files (the layout is
 * lib/gguf/format.ts's). Tensor data is streamed chunk by chunk, floats encoded into f16 or q8_0 on
 * the way, so that multi-GB files never sit in memory.
 *
 * Owns: writing GGUF files, the value constructors (`gguf.u32(...)`), f16 and q8_0 encoding.
 * May import: ./format and node builtins only.
 */

import { endianness } from 'node:os';
import { open, rm, type FileHandle } from 'node:fs/promises';

import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGML_TYPE_TABLE,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgmlType,
  GgufType,
  alignUp,
  ggmlDataBytes,
  type GgmlTypeInfo,
  type GgufArray,
  type GgufBigIntType,
  type GgufNumberType,
  type GgufScalar,
  type GgufValue,
} from './format';

function arrayValue(itemType: GgufNumberType, value: readonly number[]): GgufArray;
function arrayValue(itemType: GgufBigIntType, value: readonly bigint[]): GgufArray;
function arrayValue(itemType: GgufType.BOOL, value: readonly boolean[]): GgufArray;
function arrayValue(itemType: GgufType.STRING, value: readonly string[]): GgufArray;
function arrayValue(itemType: GgufScalar['type'], value: readonly (number | bigint | boolean | string)[]): GgufArray {
  return { type: GgufType.ARRAY, itemType, value } as GgufArray;
}

/** Constructors for tagged metadata values, e.g. `gguf.u32(4096)`, `gguf.array(GgufType.FLOAT32, [0.5])`. */
export const gguf = {
  u8: (value: number): GgufScalar => ({ type: GgufType.UINT8, value }),
  i8: (value: number): GgufScalar => ({ type: GgufType.INT8, value }),
  u16: (value: number): GgufScalar => ({ type: GgufType.UINT16, value }),
  i16: (value: number): GgufScalar => ({ type: GgufType.INT16, value }),
  u32: (value: number): GgufScalar => ({ type: GgufType.UINT32, value }),
  i32: (value: number): GgufScalar => ({ type: GgufType.INT32, value }),
  u64: (value: bigint): GgufScalar => ({ type: GgufType.UINT64, value }),
  i64: (value: bigint): GgufScalar => ({ type: GgufType.INT64, value }),
  f32: (value: number): GgufScalar => ({ type: GgufType.FLOAT32, value }),
  f64: (value: number): GgufScalar => ({ type: GgufType.FLOAT64, value }),
  bool: (value: boolean): GgufScalar => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufScalar => ({ type: GgufType.STRING, value }),
  array: arrayValue,
} as const;

/** The tensor types this writer writes: floats it encodes, and K-quants as ready-made blocks. */
export type WritableGgmlType = GgmlType.F32 | GgmlType.F16 | GgmlType.Q8_0 | GgmlType.Q4_K | GgmlType.Q6_K;

/** How the writer lays out a tensor type: format.ts's block layout, and an encoder where it has one. */
export interface GgmlTypeTraits extends GgmlTypeInfo {
  /**
   * Encodes `src` (a whole number of blocks) into `dst` (exactly the matching byte count). A type
   * without an encoder only accepts pre-encoded bytes.
   */
  readonly encode?: (src: Float32Array, dst: Uint8Array) => void;
}

function writable(type: WritableGgmlType, encode?: GgmlTypeTraits['encode']): GgmlTypeTraits {
  const info = GGML_TYPE_TABLE.get(type)!;
  return encode ? { ...info, encode } : { ...info };
}

/** Traits of the tensor types this writer writes. */
export const GGML_TYPES: Readonly<Record<WritableGgmlType, GgmlTypeTraits>> = {
  [GgmlType.F32]: writable(GgmlType.F32, (src, dst) => dst.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength))),
  [GgmlType.F16]: writable(GgmlType.F16, (src, dst) => encodeF16(src, new Uint16Array(dst.buffer, dst.byteOffset, src.length))),
  [GgmlType.Q8_0]: writable(GgmlType.Q8_0, (src, dst) => encodeQ8_0(src, dst)),
  // K-quants are written as ready-made blocks (no encoder): enough for models of a real shape.
  [GgmlType.Q4_K]: writable(GgmlType.Q4_K),
  [GgmlType.Q6_K]: writable(GgmlType.Q6_K),
};

/** The traits of `type`; throws a RangeError for a type this writer does not write. */
export function ggmlTypeTraits(type: GgmlType): GgmlTypeTraits {
  const traits = (GGML_TYPES as Partial<Record<number, GgmlTypeTraits>>)[type];
  if (traits === undefined) throw new RangeError(`unsupported ggml type ${type}`);
  return traits;
}

/** The byte size of a tensor's data (before alignment padding). */
export function tensorByteSize(type: GgmlType, shape: readonly number[]): number {
  return Number(ggmlDataBytes(ggmlTypeTraits(type), shape.reduce((a, b) => a * BigInt(b), 1n)));
}

// --- float -> half -------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Converts the bits of an IEEE-754 binary32 to binary16 bits, rounding to nearest, ties to even. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Inf stays Inf; NaN stays a (quiet) NaN with its top payload bits.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15; // re-biased exponent
  if (e >= 0x1f) return sign | 0x7c00; // too large: overflows to Inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the full 24-bit significand into the 10-bit field.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    const halfway = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rest > halfway || (rest === halfway && (h & 1) !== 0)) h++; // may carry into the smallest normal: correct
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++; // a carry into the exponent is correct, up to Inf
  return sign | h;
}

/**
 * Converts a number to IEEE-754 half-precision bits (round to nearest, ties to even). The number is
 * first rounded to float32, exactly as it is when it comes from a Float32Array.
 */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToF16Bits(u32Scratch[0]!);
}

/** Converts IEEE-754 half-precision bits to a number (exact). */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** Converts every element of `src` to half-precision bits in `dst` (same length). */
export function encodeF16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToF16Bits(bits[i]!);
}

/** ggml's `quantize_row_q8_0_ref`: per 32 values, an f16 scale `d = amax/127` and 32 int8 `round(x/d)`. */
function encodeQ8_0(src: Float32Array, dst: Uint8Array): void {
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < src.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(src[b * 32 + j]!));
    // Math.fround at each step mirrors the float arithmetic of ggml's reference quantizer, byte for byte.
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(src[b * 32 + j]! * id);
      view.setInt8(b * 34 + 2 + j, Math.sign(v) * Math.floor(Math.abs(v) + 0.5)); // C roundf: half away from zero
    }
  }
}

// --- writer --------------------------------------------------------------------------------------

/** One tensor to write. */
export interface GgufTensor {
  /** Unique name, shorter than 64 bytes in UTF-8. */
  readonly name: string;
  /** 1 to 4 dimensions in ggml order: `shape[0]` is the contiguous one (PyTorch's last). */
  readonly shape: readonly number[];
  readonly type: GgmlType;
  /**
   * Produces the contents in order, called once while the file is written so that large tensors
   * never have to sit in memory whole. Each chunk is either floats, which the writer encodes into
   * `type` (a whole number of blocks per chunk), or bytes already in `type`'s layout.
   */
  readonly data: () => Iterable<Float32Array | Uint8Array> | AsyncIterable<Float32Array | Uint8Array>;
}

/** What {@link writeGguf} writes: metadata (in order) and tensors (in order). */
export interface GgufContent {
  /** Key/value pairs, e.g. a Map or an array of entries. Keys must be unique. */
  readonly metadata: Iterable<readonly [string, GgufValue]>;
  readonly tensors: readonly GgufTensor[];
}

/** Grows as needed; for the header only (metadata and tensor infos). */
class ByteBuilder {
  private buf = Buffer.alloc(4096);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  // Each writer reserves first: `reserve` may replace `this.buf`, so it must run before `this.buf` is read.
  u8(v: number): void { const at = this.reserve(1); this.buf.writeUInt8(v, at); }
  u32(v: number): void { const at = this.reserve(4); this.buf.writeUInt32LE(v, at); }
  int(v: number, width: number, signed: boolean): void {
    const at = this.reserve(width);
    if (signed) this.buf.writeIntLE(v, at, width);
    else this.buf.writeUIntLE(v, at, width);
  }
  u64(v: bigint): void { const at = this.reserve(8); this.buf.writeBigUInt64LE(v, at); }
  i64(v: bigint): void { const at = this.reserve(8); this.buf.writeBigInt64LE(v, at); }
  f32(v: number): void { const at = this.reserve(4); this.buf.writeFloatLE(v, at); }
  f64(v: number): void { const at = this.reserve(8); this.buf.writeDoubleLE(v, at); }
  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(BigInt(bytes.length));
    const at = this.reserve(bytes.length);
    bytes.copy(this.buf, at);
  }
  zeros(n: number): void { const at = this.reserve(n); this.buf.fill(0, at, at + n); }
  bytes(): Buffer { return this.buf.subarray(0, this.length); }
}

/** Integer types written through Buffer's generic `write[U]IntLE`: [min, max, byte width]. */
const INT_LAYOUTS: Partial<Record<GgufType, readonly [number, number, number]>> = {
  [GgufType.UINT8]: [0, 0xff, 1],
  [GgufType.INT8]: [-0x80, 0x7f, 1],
  [GgufType.UINT16]: [0, 0xffff, 2],
  [GgufType.INT16]: [-0x8000, 0x7fff, 2],
  [GgufType.UINT32]: [0, 0xffffffff, 4],
  [GgufType.INT32]: [-0x80000000, 0x7fffffff, 4],
};

function writeScalar(out: ByteBuilder, type: GgufType, value: unknown, key: string): void {
  const invalid = (): RangeError =>
    new RangeError(`metadata ${key}: ${String(value)} is not a valid ${GgufType[type] ?? type} value`);
  if (type === GgufType.BOOL) {
    if (typeof value !== 'boolean') throw invalid();
    out.u8(value ? 1 : 0);
  } else if (type === GgufType.STRING) {
    if (typeof value !== 'string') throw invalid();
    out.str(value);
  } else if (type === GgufType.FLOAT32 || type === GgufType.FLOAT64) {
    if (typeof value !== 'number') throw invalid();
    if (type === GgufType.FLOAT32) out.f32(value);
    else out.f64(value);
  } else if (type === GgufType.UINT64 || type === GgufType.INT64) {
    const unsigned = type === GgufType.UINT64;
    if (typeof value !== 'bigint' || (unsigned ? BigInt.asUintN(64, value) : BigInt.asIntN(64, value)) !== value) {
      throw invalid();
    }
    if (unsigned) out.u64(value);
    else out.i64(value);
  } else {
    const layout = INT_LAYOUTS[type];
    if (layout === undefined) throw new RangeError(`metadata ${key}: unsupported value type ${GgufType[type] ?? type}`);
    const [min, max, width] = layout;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw invalid();
    out.int(value, width, min < 0);
  }
}

function writeValue(out: ByteBuilder, key: string, v: GgufValue): void {
  out.u32(v.type);
  if (v.type !== GgufType.ARRAY) return writeScalar(out, v.type, v.value, key);
  out.u32(v.itemType);
  out.u64(BigInt(v.value.length));
  for (const item of v.value) writeScalar(out, v.itemType, item, key);
}

function checkTensor(t: GgufTensor, seen: Set<string>): void {
  if (Buffer.byteLength(t.name, 'utf8') >= GGML_MAX_NAME) throw new RangeError(`tensor name too long: ${t.name}`);
  if (seen.has(t.name)) throw new RangeError(`duplicate tensor name: ${t.name}`);
  seen.add(t.name);
  if (t.shape.length < 1 || t.shape.length > GGML_MAX_DIMS || !t.shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new RangeError(`tensor ${t.name}: shape must be 1 to ${GGML_MAX_DIMS} positive integers, got [${t.shape.join(', ')}]`);
  }
  const { blockSize, name } = ggmlTypeTraits(t.type);
  if (t.shape[0]! % blockSize !== 0) {
    throw new RangeError(`tensor ${t.name}: shape[0] = ${t.shape[0]} is not a multiple of the ${name} block size ${blockSize}`);
  }
}

/** Buffers small writes into large ones; one positional write per MiB keeps multi-GB files fast. */
class FileSink {
  private readonly buf = Buffer.alloc(1 << 20);
  private used = 0;
  position = 0;

  constructor(private readonly fh: FileHandle) {}

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, this.buf.length - this.used);
      this.buf.set(bytes.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
      if (this.used === this.buf.length) await this.flush();
    }
  }

  async zeros(n: number): Promise<void> {
    if (n > 0) await this.write(new Uint8Array(n));
  }

  async flush(): Promise<void> {
    let done = 0;
    while (done < this.used) {
      const { bytesWritten } = await this.fh.write(this.buf, done, this.used - done);
      done += bytesWritten;
    }
    this.position += this.used;
    this.used = 0;
  }
}

async function writeTensorData(sink: FileSink, t: GgufTensor, expectedBytes: number): Promise<void> {
  const traits = ggmlTypeTraits(t.type);
  let written = 0;
  for await (const chunk of t.data()) {
    let bytes: Uint8Array;
    if (chunk instanceof Float32Array) {
      if (traits.encode === undefined) throw new TypeError(`tensor ${t.name}: ${traits.name} data must be given as encoded bytes`);
      if (chunk.length % traits.blockSize !== 0) {
        throw new RangeError(`tensor ${t.name}: float chunks must hold whole ${traits.name} blocks of ${traits.blockSize}`);
      }
      bytes = new Uint8Array((chunk.length / traits.blockSize) * traits.typeSize);
      traits.encode(chunk, bytes);
    } else {
      bytes = chunk;
    }
    written += bytes.length;
    if (written > expectedBytes) throw new RangeError(`tensor ${t.name}: data is longer than ${expectedBytes} bytes`);
    await sink.write(bytes);
  }
  if (written !== expectedBytes) {
    throw new RangeError(`tensor ${t.name}: data produced ${written} bytes, expected ${expectedBytes}`);
  }
}

/**
 * Writes a GGUF v3 file. The alignment is `general.alignment` when the metadata has it (a UINT32
 * power of two), else 32. Tensor data is streamed chunk by chunk; on any failure the partial file
 * is removed and the error rethrown.
 *
 * @returns the file size in bytes.
 */
export async function writeGguf(path: string, content: GgufContent): Promise<number> {
  if (endianness() !== 'LE') throw new Error('writeGguf copies typed arrays verbatim and needs a little-endian host');

  const header = new ByteBuilder();
  const entries = [...content.metadata];
  const keys = new Set<string>();
  for (const [key] of entries) {
    if (keys.has(key)) throw new RangeError(`duplicate metadata key: ${key}`);
    keys.add(key);
  }
  const alignmentEntry = entries.find(([key]) => key === GGUF_KEY_ALIGNMENT)?.[1];
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignmentEntry !== undefined) {
    if (alignmentEntry.type !== GgufType.UINT32 || alignmentEntry.value <= 0 || (alignmentEntry.value & (alignmentEntry.value - 1)) !== 0) {
      throw new RangeError(`${GGUF_KEY_ALIGNMENT} must be a UINT32 power of two`);
    }
    alignment = alignmentEntry.value;
  }

  const names = new Set<string>();
  content.tensors.forEach((t) => checkTensor(t, names));

  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.i64(BigInt(content.tensors.length));
  header.i64(BigInt(entries.length));
  for (const [key, value] of entries) {
    header.str(key);
    writeValue(header, key, value);
  }
  const sizes = content.tensors.map((t) => tensorByteSize(t.type, t.shape));
  let offset = 0;
  content.tensors.forEach((t, i) => {
    header.str(t.name);
    header.u32(t.shape.length);
    for (const d of t.shape) header.i64(BigInt(d));
    header.u32(t.type);
    header.u64(BigInt(offset));
    offset += alignUp(sizes[i]!, alignment);
  });
  header.zeros(alignUp(header.length, alignment) - header.length);

  const fh = await open(path, 'w');
  try {
    const sink = new FileSink(fh);
    await sink.write(header.bytes());
    for (const [i, t] of content.tensors.entries()) {
      await writeTensorData(sink, t, sizes[i]!);
      await sink.zeros(alignUp(sizes[i]!, alignment) - sizes[i]!);
    }
    await sink.flush();
    await fh.close();
    return sink.position;
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(path, { force: true });
    throw err;
  }
}
