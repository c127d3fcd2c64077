import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GGUF_DEFAULT_ALIGNMENT, GgmlType, GgufType, type GgufValue } from '../../lib/gguf/format';
import { readGgufHeader, type GgufHeader } from '../../lib/gguf/reader';
import { GGML_TYPES, encodeF16, f16ToF32, f32ToF16, gguf, tensorByteSize, writeGguf, type GgufTensor } from '../../lib/gguf/writer';

/** A tensor whose data is the given floats, delivered in `chunks` pieces. */
function floatTensor(name: string, shape: number[], type: GgmlType, values: Float32Array, chunks = 1): GgufTensor {
  return {
    name,
    shape,
    type,
    *data() {
      const step = Math.ceil(values.length / chunks);
      for (let at = 0; at < values.length; at += step) yield values.subarray(at, at + step);
    },
  };
}

function ramp(n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => (i - n / 2) * scale);
}

async function readTensorBytes(path: string, header: GgufHeader, name: string): Promise<Buffer> {
  const info = header.tensors.find((t) => t.name === name);
  assert.ok(info, `tensor ${name} missing`);
  const size = tensorByteSize(info.type as GgmlType, info.shape);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(size);
    await fh.read(buf, 0, size, header.dataOffset + info.offset);
    return buf;
  } finally {
    await fh.close();
  }
}

describe('gguf-writer', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cos-gguf-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('f16 conversion', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [0.1, 0x2e66],
      [1 / 3, 0x3555],
      [65504, 0x7bff], // largest finite half
      [65519, 0x7bff], // below the halfway point to 65536: rounds down
      [65520, 0x7c00], // halfway: ties to even, which is Inf
      [1e6, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -24 * 1023, 0x03ff], // largest subnormal
      [2 ** -25, 0x0000], // exactly half the smallest subnormal: ties to even (0)
      [2 ** -25 * 1.5, 0x0001], // above half: rounds up
      [2 ** -24 * 2.5, 0x0002], // subnormal tie: to even (2)
      [2 ** -24 * 3.5, 0x0004], // subnormal tie: to even (4)
      [1 + 2 ** -11, 0x3c00], // tie between 0x3C00 and 0x3C01: to even
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3C01 and 0x3C02: to even
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie: up
      [2 ** -14 - 2 ** -25, 0x0400], // rounds up out of the subnormals into the smallest normal
    ];
    for (const [value, bits] of cases) {
      it(`converts ${Object.is(value, -0) ? '-0' : value} to 0x${bits.toString(16).padStart(4, '0')}`, () => {
        assert.equal(f32ToF16(value), bits);
      });
    }

    it('keeps NaN a NaN', () => {
      const bits = f32ToF16(NaN);
      assert.equal(bits & 0x7c00, 0x7c00);
      assert.notEqual(bits & 0x03ff, 0);
      assert.ok(Number.isNaN(f16ToF32(bits)));
    });

    it('round-trips every finite half value exactly', () => {
      for (let bits = 0; bits < 0x10000; bits++) {
        if ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0) continue; // NaNs
        assert.equal(f32ToF16(f16ToF32(bits)), bits, `0x${bits.toString(16)}`);
      }
    });

    it('encodes a Float32Array the same way as one value at a time', () => {
      const src = Float32Array.from([1, -2, 65504, 2 ** -24, 0.1, 70000]);
      const dst = new Uint16Array(src.length);
      encodeF16(src, dst);
      assert.deepEqual([...dst], [...src].map(f32ToF16));
    });
  });

  describe('metadata', () => {
    const metadata: [string, GgufValue][] = [
      ['t.u8', gguf.u8(255)],
      ['t.i8', gguf.i8(-128)],
      ['t.u16', gguf.u16(65535)],
      ['t.i16', gguf.i16(-32768)],
      ['t.u32', gguf.u32(0xffffffff)],
      ['t.i32', gguf.i32(-0x80000000)],
      ['t.u64', gguf.u64(2n ** 64n - 1n)],
      ['t.i64', gguf.i64(-(2n ** 63n))],
      ['t.f32', gguf.f32(Math.fround(1e-5))],
      ['t.f64', gguf.f64(Math.PI)],
      ['t.true', gguf.bool(true)],
      ['t.false', gguf.bool(false)],
      ['t.str', gguf.str('▁héllo ✓ "quoted"\n')],
      ['t.empty', gguf.str('')],
      ['a.u8', gguf.array(GgufType.UINT8, [0, 1, 255])],
      ['a.i8', gguf.array(GgufType.INT8, [-128, 0, 127])],
      ['a.u16', gguf.array(GgufType.UINT16, [0, 65535])],
      ['a.i16', gguf.array(GgufType.INT16, [-32768, 32767])],
      ['a.u32', gguf.array(GgufType.UINT32, [0, 0xffffffff])],
      ['a.i32', gguf.array(GgufType.INT32, [-1, 2, -3])],
      ['a.u64', gguf.array(GgufType.UINT64, [0n, 2n ** 64n - 1n])],
      ['a.i64', gguf.array(GgufType.INT64, [-(2n ** 63n), 2n ** 63n - 1n])],
      ['a.f32', gguf.array(GgufType.FLOAT32, [0.5, -1.25, Math.fround(0.48145466)])],
      ['a.f64', gguf.array(GgufType.FLOAT64, [Math.E, -0.1])],
      ['a.bool', gguf.array(GgufType.BOOL, [true, false, true])],
      ['a.str', gguf.array(GgufType.STRING, ['<unk>', '▁the', '', '日本'])],
      ['a.empty', gguf.array(GgufType.INT32, [])],
    ];

    it('round-trips every value type, in order', async () => {
      const path = join(dir, 'kv.gguf');
      await writeGguf(path, { metadata, tensors: [] });
      const header = await readGgufHeader(path);
      assert.equal(header.version, 3);
      assert.equal(header.tensorCount, 0);
      assert.deepEqual([...header.kv.entries()], metadata);
    });

    it('writes the exact bytes of the GGUF layout', async () => {
      const path = join(dir, 'layout.gguf');
      await writeGguf(path, { metadata: [['k', gguf.u16(0x1234)]], tensors: [] });
      const bytes = await readFile(path);
      const expected = Buffer.concat([
        Buffer.from('GGUF'),
        Buffer.from([3, 0, 0, 0]), // version
        Buffer.alloc(8), // tensor count
        Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), // kv count
        Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('k'), // key
        Buffer.from([GgufType.UINT16, 0, 0, 0]), Buffer.from([0x34, 0x12]),
      ]);
      assert.deepEqual(bytes.subarray(0, expected.length), expected);
    });

    it('reads headers larger than its first read', async () => {
      const path = join(dir, 'big-header.gguf');
      const many = Array.from({ length: 60000 }, (_, i) => `piece-number-${i}-with-some-padding`);
      await writeGguf(path, { metadata: [['big', gguf.array(GgufType.STRING, many)], ['after', gguf.u8(7)]], tensors: [] });
      const header = await readGgufHeader(path);
      assert.deepEqual(header.kv.get('big'), gguf.array(GgufType.STRING, many));
      assert.deepEqual(header.kv.get('after'), gguf.u8(7));
    });

    const invalid: [string, GgufValue][] = [
      ['u8 out of range', gguf.u8(256)],
      ['negative u32', gguf.u32(-1)],
      ['fractional i32', gguf.i32(1.5)],
      ['u64 out of range', gguf.u64(2n ** 64n)],
      ['array item out of range', gguf.array(GgufType.INT8, [0, 128])],
    ];
    for (const [what, value] of invalid) {
      it(`rejects ${what} before creating the file`, async () => {
        const path = join(dir, 'invalid.gguf');
        await assert.rejects(writeGguf(path, { metadata: [['bad', value]], tensors: [] }), RangeError);
        await assert.rejects(stat(path), { code: 'ENOENT' });
      });
    }

    it('rejects duplicate keys', async () => {
      await assert.rejects(
        writeGguf(join(dir, 'dup.gguf'), { metadata: [['k', gguf.u8(1)], ['k', gguf.u8(2)]], tensors: [] }),
        /duplicate metadata key/,
      );
    });

    it('rejects a file that is not GGUF', async () => {
      const path = join(dir, 'not.gguf');
      await writeFile(path, 'GGML and then some more bytes');
      await assert.rejects(readGgufHeader(path), /bad magic/);
    });
  });

  describe('tensors', () => {
    // Odd sizes so that every tensor needs padding.
    const f32 = ramp(3);
    const f16 = ramp(15, 0.25);
    const q8 = ramp(64, 0.5);
    const tensors = (): GgufTensor[] => [
      floatTensor('a.f32', [3], GgmlType.F32, f32),
      floatTensor('b.f16', [5, 3], GgmlType.F16, f16, 3),
      floatTensor('c.q8_0', [32, 2], GgmlType.Q8_0, q8),
      { name: 'd.raw', shape: [7], type: GgmlType.F16, *data() { yield new Uint8Array(14).fill(0x3c); } },
    ];

    for (const alignment of [GGUF_DEFAULT_ALIGNMENT, 64]) {
      it(`places data at ${alignment}-byte aligned, contiguous offsets`, async () => {
        const path = join(dir, `aligned-${alignment}.gguf`);
        const metadata: [string, GgufValue][] = alignment === GGUF_DEFAULT_ALIGNMENT ? [] : [['general.alignment', gguf.u32(alignment)]];
        const size = await writeGguf(path, { metadata, tensors: tensors() });
        const header = await readGgufHeader(path);
        assert.equal(header.alignment, alignment);
        assert.equal(header.dataOffset % alignment, 0);
        let expected = 0;
        for (const info of header.tensors) {
          assert.equal(info.offset, expected, info.name);
          assert.equal(info.offset % alignment, 0);
          expected += Math.ceil(tensorByteSize(info.type as GgmlType, info.shape) / alignment) * alignment;
        }
        assert.equal(size, header.dataOffset + expected);
        assert.equal((await stat(path)).size, size);
        assert.deepEqual(header.tensors.map((t) => [t.name, t.shape, t.type]), [
          ['a.f32', [3], GgmlType.F32],
          ['b.f16', [5, 3], GgmlType.F16],
          ['c.q8_0', [32, 2], GgmlType.Q8_0],
          ['d.raw', [7], GgmlType.F16],
        ]);
      });
    }

    it('stores values in the tensor type, with zero padding between tensors', async () => {
      const path = join(dir, 'values.gguf');
      await writeGguf(path, { metadata: [], tensors: tensors() });
      const header = await readGgufHeader(path);
      const a = await readTensorBytes(path, header, 'a.f32');
      assert.deepEqual([...new Float32Array(a.buffer, a.byteOffset, 3)], [...f32]);
      const b = await readTensorBytes(path, header, 'b.f16');
      assert.deepEqual([...new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length))], [...f16].map(f32ToF16));
      const c = await readTensorBytes(path, header, 'c.q8_0');
      // Block 0 holds -16, -15.5, ..., -0.5: amax 16, d = 16/127, q = round(x * 127/16).
      assert.equal(c.length, 2 * 34);
      assert.equal(c.readUInt16LE(0), f32ToF16(16 / 127));
      assert.deepEqual([c.readInt8(2), c.readInt8(3), c.readInt8(2 + 31)], [-127, -123, -4]);
      // Block 1 holds 0, 0.5, ..., 15.5: amax 15.5.
      assert.equal(c.readUInt16LE(34), f32ToF16(15.5 / 127));
      assert.deepEqual([c.readInt8(36), c.readInt8(36 + 31)], [0, 127]);
      const d = await readTensorBytes(path, header, 'd.raw');
      assert.ok(d.every((x) => x === 0x3c));
      const file = await readFile(path);
      const gap = file.subarray(header.dataOffset + 12, header.dataOffset + header.tensors[1]!.offset);
      assert.ok(gap.length > 0 && gap.every((x) => x === 0));
    });

    it('produces the same bytes however the data is chunked, sync or async', async () => {
      const values = ramp(4096, 1e-3);
      const one = join(dir, 'one-chunk.gguf');
      const many = join(dir, 'many-chunks.gguf');
      const asyncPath = join(dir, 'async-chunks.gguf');
      await writeGguf(one, { metadata: [], tensors: [floatTensor('x', [64, 64], GgmlType.F16, values)] });
      await writeGguf(many, { metadata: [], tensors: [floatTensor('x', [64, 64], GgmlType.F16, values, 37)] });
      await writeGguf(asyncPath, {
        metadata: [],
        tensors: [{
          name: 'x', shape: [64, 64], type: GgmlType.F16,
          async *data() {
            for (let at = 0; at < values.length; at += 1000) yield values.subarray(at, at + 1000);
          },
        }],
      });
      const reference = await readFile(one);
      assert.deepEqual(await readFile(many), reference);
      assert.deepEqual(await readFile(asyncPath), reference);
    });

    it('streams a tensor larger than the write buffer', async () => {
      const path = join(dir, 'large.gguf');
      const rows = 1024;
      const size = await writeGguf(path, {
        metadata: [],
        tensors: [{
          name: 'big', shape: [1024, rows], type: GgmlType.F32,
          *data() {
            for (let r = 0; r < rows; r++) yield new Float32Array(1024).fill(r);
          },
        }],
      });
      const header = await readGgufHeader(path);
      assert.equal(size, header.dataOffset + 4 * 1024 * rows);
      const fh = await open(path, 'r');
      const last = Buffer.alloc(4);
      await fh.read(last, 0, 4, size - 4);
      await fh.close();
      assert.equal(last.readFloatLE(0), rows - 1);
    });

    const bad: [string, GgufTensor[], RegExp][] = [
      ['too little data', [floatTensor('x', [4], GgmlType.F32, ramp(3))], /produced 12 bytes, expected 16/],
      ['too much data', [floatTensor('x', [2], GgmlType.F32, ramp(3))], /longer than 8 bytes/],
      ['duplicate names', [floatTensor('x', [1], GgmlType.F32, ramp(1)), floatTensor('x', [1], GgmlType.F32, ramp(1))], /duplicate tensor name/],
      ['a 64-byte name', [floatTensor('n'.repeat(64), [1], GgmlType.F32, ramp(1))], /too long/],
      ['five dimensions', [floatTensor('x', [1, 1, 1, 1, 1], GgmlType.F32, ramp(1))], /shape/],
      ['a Q8_0 row that is not whole blocks', [floatTensor('x', [16, 2], GgmlType.Q8_0, ramp(32))], /block size 32/],
      ['a float chunk that is not whole blocks', [floatTensor('x', [32, 2], GgmlType.Q8_0, ramp(64), 3)], /whole q8_0 blocks/],
    ];
    for (const [what, list, message] of bad) {
      it(`rejects ${what} and leaves no file behind`, async () => {
        const path = join(dir, 'bad-tensor.gguf');
        await assert.rejects(writeGguf(path, { metadata: [], tensors: list }), message);
        await assert.rejects(stat(path), { code: 'ENOENT' });
      });
    }

    it('rejects an alignment that is not a UINT32 power of two', async () => {
      for (const value of [gguf.u32(48), gguf.u64(32n)]) {
        await assert.rejects(writeGguf(join(dir, 'align.gguf'), { metadata: [['general.alignment', value]], tensors: [] }), /power of two/);
      }
      await assert.rejects(stat(join(dir, 'align.gguf')), { code: 'ENOENT' });
    });

    it('knows the block layout of each type', () => {
      assert.deepEqual(
        Object.values(GGML_TYPES).map((t) => [t.name, t.blockSize, t.typeSize]),
        [['f32', 1, 4], ['f16', 1, 2], ['q8_0', 32, 34], ['q4_K', 256, 144], ['q6_K', 256, 210]],
      );
      assert.equal(tensorByteSize(GgmlType.Q8_0, [64, 3]), 6 * 34);
      assert.equal(tensorByteSize(GgmlType.Q4_K, [4096, 2]), 32 * 144);
    });
  });
});
