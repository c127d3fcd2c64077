/**
 * The GGUF format, as the vendored llama.cpp's ggml (`gguf.h`, `gguf.cpp`, `ggml.h`) defines it: the
 * one table of constants, value types and tensor types that the reader, the writer and the checks
 * share. Nothing here reads or writes a file.
 *
 * Layout (all little-endian): magic "GGUF", u32 version, i64 tensor count, i64 key/value count, the
 * key/value pairs, the tensor infos, zero padding to the alignment, then each tensor's data, each
 * padded to the alignment. Tensor offsets are relative to the start of the data section and must be
 * exactly the running sum of the padded tensor sizes, in order: `gguf.cpp` rejects anything else.
 *
 * Owns: the numbers of the format. May import: nothing (no other module of this package, no builtin).
 */

/** The four bytes "GGUF", read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
/** The GGUF version the writer writes. */
export const GGUF_VERSION = 3;
/** The versions llama.cpp reads (version 1 is long gone). */
export const GGUF_READ_VERSIONS: readonly number[] = [2, 3];
/** Bytes before the first key: magic, version, tensor count, key count. */
export const GGUF_HEADER_BYTES = 4 + 4 + 8 + 8;
/** The alignment used when `general.alignment` is absent (ggml's `GGUF_DEFAULT_ALIGNMENT`). */
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** The metadata key that overrides the alignment; it must be a UINT32 power of two. */
export const GGUF_KEY_ALIGNMENT = 'general.alignment';
/** ggml's `GGML_MAX_NAME` (64): tensor names must be shorter, counting the terminating NUL. */
export const GGML_MAX_NAME = 64;
/** ggml's `GGML_MAX_DIMS`. */
export const GGML_MAX_DIMS = 4;
/** gguf.cpp's limits on one string and one array. */
export const GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024;
export const GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;

// --- metadata values -------------------------------------------------------------------------------

/** Metadata value types, numbered as in ggml's `enum gguf_type`. */
export enum GgufType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** The largest value type id. */
export const GGUF_LAST_TYPE = GgufType.FLOAT64;

/** Short names of the value types, for messages (`u32`, `str`...), indexed by type. */
const VALUE_TYPE_LABELS = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'str', 'arr', 'u64', 'i64', 'f64'];

/**
 * Bytes of one value of each type, indexed by type: strings take at least their 8-byte length
 * (so this is a lower bound for them), arrays 0 (they have no fixed size).
 */
export const GGUF_VALUE_SIZES: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 8, 0, 8, 8, 8];

/** The short name of a value type (`u32`), or `type N` for an unknown one. */
export function valueTypeLabel(type: number): string {
  return VALUE_TYPE_LABELS[type] ?? `type ${type}`;
}

/** The types whose values are JS numbers. */
export type GgufNumberType =
  | GgufType.UINT8 | GgufType.INT8 | GgufType.UINT16 | GgufType.INT16
  | GgufType.UINT32 | GgufType.INT32 | GgufType.FLOAT32 | GgufType.FLOAT64;
/** The 64-bit integer types, whose values are bigints so that no precision is lost. */
export type GgufBigIntType = GgufType.UINT64 | GgufType.INT64;

/** One non-array metadata value, tagged with its GGUF type. */
export type GgufScalar =
  | { readonly type: GgufNumberType; readonly value: number }
  | { readonly type: GgufBigIntType; readonly value: bigint }
  | { readonly type: GgufType.BOOL; readonly value: boolean }
  | { readonly type: GgufType.STRING; readonly value: string };

/** An array metadata value; all items share `itemType`. Nested arrays do not exist in GGUF files llama.cpp reads. */
export type GgufArray =
  | { readonly type: GgufType.ARRAY; readonly itemType: GgufNumberType; readonly value: readonly number[] }
  | { readonly type: GgufType.ARRAY; readonly itemType: GgufBigIntType; readonly value: readonly bigint[] }
  | { readonly type: GgufType.ARRAY; readonly itemType: GgufType.BOOL; readonly value: readonly boolean[] }
  | { readonly type: GgufType.ARRAY; readonly itemType: GgufType.STRING; readonly value: readonly string[] };

/** Any metadata value, as the writer takes it and the reader gives it. */
export type GgufValue = GgufScalar | GgufArray;

// --- tensor types ----------------------------------------------------------------------------------

/** Tensor element types, numbered as in ggml's `enum ggml_type` (removed ids 4, 5, 31-33, 36-38 are absent). */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
  Q2_0 = 42,
}

/** How a tensor type lays out its data: `blockSize` elements are stored in `typeSize` bytes. */
export interface GgmlTypeInfo {
  /** Its name in ggml (`f16`, `q4_K`...). */
  readonly name: string;
  readonly blockSize: number;
  readonly typeSize: number;
}

const typeRows: [GgmlType, string, number, number][] = [
  [GgmlType.F32, 'f32', 1, 4], [GgmlType.F16, 'f16', 1, 2], [GgmlType.Q4_0, 'q4_0', 32, 18], [GgmlType.Q4_1, 'q4_1', 32, 20],
  [GgmlType.Q5_0, 'q5_0', 32, 22], [GgmlType.Q5_1, 'q5_1', 32, 24], [GgmlType.Q8_0, 'q8_0', 32, 34], [GgmlType.Q8_1, 'q8_1', 32, 36],
  [GgmlType.Q2_K, 'q2_K', 256, 84], [GgmlType.Q3_K, 'q3_K', 256, 110], [GgmlType.Q4_K, 'q4_K', 256, 144], [GgmlType.Q5_K, 'q5_K', 256, 176],
  [GgmlType.Q6_K, 'q6_K', 256, 210], [GgmlType.Q8_K, 'q8_K', 256, 292], [GgmlType.IQ2_XXS, 'iq2_xxs', 256, 66], [GgmlType.IQ2_XS, 'iq2_xs', 256, 74],
  [GgmlType.IQ3_XXS, 'iq3_xxs', 256, 98], [GgmlType.IQ1_S, 'iq1_s', 256, 50], [GgmlType.IQ4_NL, 'iq4_nl', 32, 18], [GgmlType.IQ3_S, 'iq3_s', 256, 110],
  [GgmlType.IQ2_S, 'iq2_s', 256, 82], [GgmlType.IQ4_XS, 'iq4_xs', 256, 136], [GgmlType.I8, 'i8', 1, 1], [GgmlType.I16, 'i16', 1, 2],
  [GgmlType.I32, 'i32', 1, 4], [GgmlType.I64, 'i64', 1, 8], [GgmlType.F64, 'f64', 1, 8], [GgmlType.IQ1_M, 'iq1_m', 256, 56],
  [GgmlType.BF16, 'bf16', 1, 2], [GgmlType.TQ1_0, 'tq1_0', 256, 54], [GgmlType.TQ2_0, 'tq2_0', 256, 66], [GgmlType.MXFP4, 'mxfp4', 32, 17],
  [GgmlType.NVFP4, 'nvfp4', 64, 36], [GgmlType.Q1_0, 'q1_0', 128, 18], [GgmlType.Q2_0, 'q2_0', 64, 18],
];

/**
 * ggml's type table for the vendored llama.cpp (`ggml.c` `type_traits`): every tensor type a GGUF
 * file may hold, by id. A type that is not here is one gguf.cpp rejects.
 */
export const GGML_TYPE_TABLE: ReadonlyMap<number, GgmlTypeInfo> = new Map(
  typeRows.map(([type, name, blockSize, typeSize]) => [type, Object.freeze({ name, blockSize, typeSize })]),
);

/**
 * Bytes of data of `elements` values of a type (before alignment padding); `elements` must be a
 * whole number of the type's blocks. Exact for any element count, hence the bigint.
 */
export function ggmlDataBytes(info: GgmlTypeInfo, elements: bigint): bigint {
  return (elements / BigInt(info.blockSize)) * BigInt(info.typeSize);
}

/** `n` rounded up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
