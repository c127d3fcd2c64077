#!/usr/bin/env node
/**
 * Seeded fuzzing of what users hand to chain-of-spot: GGUF model files and images.
 *
 *   node scripts/fuzz.mjs --kind gguf|image [--seed S] [--cases N] [--start I] [--precheck] [--json]
 *                         [--bases model,mmproj,legacy,surgery,qwen25-model,...] [--case-timeout-ms MS] [--save DIR]
 *                         [--outcomes FILE] [--replay S:I] [--verbose]
 *
 * Each case is a mutation of a known-good input (the tiny LLaVA pair, the same mmproj laid out as
 * other GGUF writers lay it out, the tiny Qwen2.5-VL, Qwen3-VL, InternVL and Gemma 3 pairs, or
 * small PNG / JPEG / GIF / WebP images), made from the seed and the
 * case index alone, so `--replay S:I` (or
 * `--seed S --start I --cases 1`) reproduces it. The cases run in a CHILD process that loads each
 * input through the public API and, when it loads, uses it (a model: tokenize, a session,
 * evaluate, generate; a projector: encode an image; an image: encode it in the projector). Every
 * case must either succeed or reject with a ChainOfSpotError that has a stable code. A child that
 * dies (by a signal: abort(), a segfault...) is a crash: the parent records the case, starts a new
 * child and goes on with the next case. A case that takes longer than the timeout is a hang.
 *
 * GGUF cases load through the public `Model.load` / `Model.loadProjector` alone, which must run
 * lib/gguf/check.ts's `checkGguf` before llama.cpp sees the file. `--precheck` (or the environment
 * variable CHAIN_OF_SPOT_TEST_PRECHECK=1) calls `checkGguf` explicitly first, for a build where
 * the load does not do it yet. Image cases run `loadImage` with a 2-megapixel limit (so that
 * mutated dimensions do not turn every case into a slow large decode), `prepareOriginal` and the
 * projector on the result.
 *
 * `--bases` limits GGUF cases to some of the files they mutate (default all of them; see ggufBases):
 * the choice changes which case a seed and index make, so a replay names it too.
 *
 * `--crash-at I` makes the child abort() on case I: a self-test of the crash detection.
 *
 * Exit status: 0 when every case succeeded or was rejected with a coded error; 1 otherwise.
 * Built files are used: run `npx tsc -p tsconfig.json` first.
 */
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist', 'lib');
const MODEL_CACHE = path.join(ROOT, '.cache', 'models');
const FIXTURE_IMAGES = path.join(ROOT, 'test', 'fixtures', 'images');

// --- arguments -----------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = { kind: 'gguf', seed: 1, cases: 100, start: 0, precheck: process.env.CHAIN_OF_SPOT_TEST_PRECHECK === '1', crashAt: -1, json: false, caseTimeoutMs: 30_000, save: undefined, outcomes: undefined, replay: undefined, verbose: false, child: false, bases: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--kind') args.kind = value();
    else if (a === '--seed') args.seed = Number(value());
    else if (a === '--cases') args.cases = Number(value());
    else if (a === '--start') args.start = Number(value());
    else if (a === '--precheck') args.precheck = true;
    else if (a === '--crash-at') args.crashAt = Number(value());
    else if (a === '--json') args.json = true;
    else if (a === '--case-timeout-ms') args.caseTimeoutMs = Number(value());
    else if (a === '--save') args.save = value();
    else if (a === '--outcomes') args.outcomes = value();
    else if (a === '--verbose') args.verbose = true;
    else if (a === '--bases') args.bases = value().split(',');
    else if (a === '--child') args.child = true;
    else if (a === '--replay') {
      const [seed, index] = value().split(':').map(Number);
      args.replay = true;
      args.seed = seed;
      args.start = index;
      args.cases = 1;
      args.verbose = true;
    } else if (a === '--help' || a === '-h') {
      console.log('usage: node scripts/fuzz.mjs --kind gguf|image [--seed S] [--cases N] [--start I] [--precheck] [--json] [--bases model,mmproj,legacy,surgery,qwen25-model,...] [--case-timeout-ms MS] [--save DIR] [--outcomes FILE] [--replay S:I] [--verbose] [--crash-at I]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (args.kind !== 'gguf' && args.kind !== 'image') throw new Error('--kind must be gguf or image');
  const known = GGUF_BASE_WEIGHTS.map(([, name]) => name);
  if (args.bases !== undefined && (args.bases.length === 0 || args.bases.some((b) => !known.includes(b)))) throw new Error(`--bases takes some of ${known.join(',')}`);
  for (const k of ['seed', 'cases', 'start', 'caseTimeoutMs']) {
    if (!Number.isSafeInteger(args[k]) || args[k] < 0) throw new Error(`--${k} must be a whole number`);
  }
  return args;
}

// --- deterministic randomness --------------------------------------------------------------------

/** The library's seeded PRNG (lib/common/random.ts), with helpers. */
function rng(seed, index, kind) {
  const { fnv1a, mulberry32 } = require(path.join(DIST, 'common/random.js'));
  const next = mulberry32(fnv1a(`${kind}:${seed}:${index}`));
  const int = (n) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: (items) => items[int(items.length)],
    /** Picks by weight: [[weight, value], ...]. */
    weighted: (pairs) => {
      let r = next() * pairs.reduce((s, [w]) => s + w, 0);
      for (const [w, v] of pairs) if ((r -= w) < 0) return v;
      return pairs[pairs.length - 1][1];
    },
    u32: () => (int(0x10000) * 0x10000 + int(0x10000)) >>> 0,
  };
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');

function leBytes(value, width) {
  const b = Buffer.alloc(width);
  if (width === 8) b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)));
  else if (width === 4) b.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(value))));
  else if (width === 2) b.writeUInt16LE(Number(BigInt.asUintN(16, BigInt(value))));
  else b.writeUInt8(Number(BigInt.asUintN(8, BigInt(value))));
  return b;
}

function readLe(buf, at, width) {
  if (width === 8) return buf.readBigUInt64LE(at);
  if (width === 4) return BigInt(buf.readUInt32LE(at));
  if (width === 2) return BigInt(buf.readUInt16LE(at));
  return BigInt(buf.readUInt8(at));
}

/** Values that break parsers: boundaries, the original nudged, sizes of the file. */
function interestingInteger(r, original, width, fileSize) {
  const max = (1n << BigInt(width * 8)) - 1n;
  const candidates = [
    0n, 1n, 2n, 3n, 4n, 5n, 8n, 13n, 63n, 64n, 127n, 128n, 255n, 256n, 4095n, 65535n, 65536n,
    0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, (1n << 62n), (1n << 63n) - 1n, 1n << 63n, max,
    original + 1n, original - 1n, original * 2n, original / 2n, original + 32n, original - 32n, original * 1000n,
    BigInt(fileSize), BigInt(fileSize) + 1n, BigInt(fileSize) - 1n, max - original,
    BigInt(r.u32()), (BigInt(r.u32()) << 32n) | BigInt(r.u32()),
  ];
  return BigInt.asUintN(width * 8, r.pick(candidates));
}

// --- GGUF cases ----------------------------------------------------------------------------------

/** The other families' tiny pairs: their text models and projectors are bases too (`qwen25-model`, `qwen25-mmproj`...). */
const FAMILY_PAIRS = [
  ['qwen25', 'models/tiny-qwen-vl.js', 'ensureTinyQwen25Vl'],
  ['qwen3', 'models/tiny-qwen-vl.js', 'ensureTinyQwen3Vl'],
  ['internvl', 'models/tiny-internvl.js', 'ensureTinyInternVl'],
  ['gemma3', 'models/tiny-gemma3.js', 'ensureTinyGemma3'],
];

/**
 * The files GGUF cases mutate: the tiny LLaVA pair as our writer lays it out (`model`, `mmproj`),
 * its mmproj as llama.cpp's legacy converter (`legacy`) and LLaVA-1.6's surgery (`surgery`) lay it
 * out (other key sets and order, other tensor order, another alignment: test/unit/gguf-cases.ts),
 * and each other family's tiny pair (FAMILY_PAIRS). `pairs` names the text model each projector
 * base loads with: its own family's, so that its width fits and the projector reaches llama.cpp.
 */
async function ggufBases() {
  const { ensureTinyLlava, TINY_LLAVA_FAST } = require(path.join(DIST, 'models/tiny-model.js'));
  const { ggufFields, parseGgufHeader } = require(path.join(DIST, 'gguf/reader.js'));
  const { FOREIGN_LAYOUTS, writeForeignMmproj } = require(path.join(DIST, '..', 'test', 'unit', 'gguf-cases.js'));
  const files = await ensureTinyLlava(MODEL_CACHE, TINY_LLAVA_FAST);
  const sources = [['model', await readFile(files.model)], ['mmproj', await readFile(files.mmproj)]];
  const textModels = { mmproj: files.model };
  for (const [family, module, ensure] of FAMILY_PAIRS) {
    const pair = await require(path.join(DIST, module))[ensure](MODEL_CACHE);
    sources.push([`${family}-model`, await readFile(pair.model)], [`${family}-mmproj`, await readFile(pair.mmproj)]);
    textModels[`${family}-mmproj`] = pair.model;
  }
  const scratch = await mkdtemp(path.join(tmpdir(), 'cos-fuzz-bases-'));
  try {
    for (const layout of FOREIGN_LAYOUTS) {
      const file = path.join(scratch, `${layout}.gguf`);
      await writeForeignMmproj(files.mmproj, file, layout);
      sources.push([layout, await readFile(file)]);
      textModels[layout] = files.model;
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const bases = {};
  for (const [name, bytes] of sources) {
    const fields = ggufFields(bytes);
    const { headerBytes, dataOffset, alignment } = parseGgufHeader(bytes, { fileSize: bytes.length, complete: true, maxHeaderBytes: bytes.length });
    bases[name] = { name, bytes, fields, headerEnd: headerBytes, dataOffset, alignment };
  }
  return { bases, textModels };
}

/** How often each base is mutated. */
const GGUF_BASE_WEIGHTS = [
  [5, 'model'], [2, 'mmproj'], [1.5, 'legacy'], [1.5, 'surgery'],
  ...FAMILY_PAIRS.flatMap(([family]) => [[1, `${family}-model`], [1, `${family}-mmproj`]]),
];

/** One mutation of a GGUF base, as a list of byte operations (what a case is). */
function ggufMutation(r, base) {
  const size = base.bytes.length;
  const { fields, headerEnd } = base;
  const ofKind = (...kinds) => fields.filter((f) => kinds.includes(f.kind));
  const op = r.weighted([
    [3, 'truncate'], [3, 'flip'], [6, 'field'], [3, 'value'], [2, 'token'], [1, 'tensor-swap'], [1, 'splice'], [1, 'zero-data'], [2, 'retype'], [2, 'rename'],
  ]);
  switch (op) {
    case 'truncate': {
      const length = r.next() < 0.7 ? r.int(headerEnd + 64) : r.int(size);
      return { what: `truncate to ${length} bytes`, ops: [{ op: 'truncate', length }] };
    }
    case 'flip': {
      const n = 1 + r.int(8);
      const ops = [];
      for (let i = 0; i < n; i++) {
        const at = r.next() < 0.9 ? r.int(headerEnd) : r.int(size);
        ops.push({ op: 'xor', at, mask: 1 << r.int(8) | (r.next() < 0.2 ? r.int(256) : 0) });
      }
      return { what: `flip bits in ${n} bytes`, ops };
    }
    case 'field': {
      const field = r.pick(ofKind('version', 'n_tensors', 'n_kv', 'key_length', 'value_type', 'array_type', 'array_length', 'string_length', 'tensor_name_length', 'n_dims', 'dim', 'tensor_type', 'tensor_offset'));
      const original = readLe(base.bytes, field.offset, field.width);
      let value;
      if (field.kind === 'value_type' || field.kind === 'array_type' || field.kind === 'tensor_type') {
        value = BigInt(r.next() < 0.7 ? r.int(48) : r.u32());
      } else if (field.kind === 'n_dims') {
        value = BigInt(r.next() < 0.8 ? r.int(6) : r.u32());
      } else {
        value = interestingInteger(r, original, field.width, size);
      }
      return { what: `${field.kind}${field.owner ? ` of ${field.owner}` : ''} ${original} -> ${value}`, ops: [{ op: 'set', at: field.offset, hex: hex(leBytes(value, field.width)) }] };
    }
    case 'value': {
      const field = r.pick(ofKind('value'));
      if (field.valueType === 8) {
        // A string value: change a byte of it, or make it empty-looking.
        if (field.width === 0) return { what: `empty string ${field.owner}`, ops: [] };
        const at = field.offset + r.int(field.width);
        return { what: `byte of string ${field.owner}`, ops: [{ op: 'set', at, hex: hex([r.int(256)]) }] };
      }
      if (field.valueType === 6 || field.valueType === 12) {
        const v = r.pick([0, -1, 1, NaN, Infinity, -Infinity, 1e30, -1e30, 1e-30, 65504, 0.5]);
        const b = Buffer.alloc(field.width);
        if (field.width === 4) b.writeFloatLE(v);
        else b.writeDoubleLE(v);
        return { what: `${field.owner} = ${v}`, ops: [{ op: 'set', at: field.offset, hex: hex(b) }] };
      }
      const original = readLe(base.bytes, field.offset, field.width);
      const value = interestingInteger(r, original, field.width, size);
      return { what: `${field.owner} ${original} -> ${value}`, ops: [{ op: 'set', at: field.offset, hex: hex(leBytes(value, field.width)) }] };
    }
    case 'token': {
      // Array items: a vocabulary string copied onto another of the same length (a duplicate),
      // a changed byte, or a numeric item (token type, score) set to an odd value.
      const items = ofKind('array_item');
      if (items.length === 0) return { what: 'no array items', ops: [] };
      const item = r.pick(items);
      if (item.valueType === 8) {
        const sameLength = items.filter((f) => f.valueType === 8 && f.width === item.width && f.offset !== item.offset && f.owner === item.owner);
        if (sameLength.length > 0 && r.next() < 0.6) {
          const source = r.pick(sameLength);
          return { what: `${item.owner} item at ${item.offset} := the item at ${source.offset}`, ops: [{ op: 'set', at: item.offset, hex: base.bytes.subarray(source.offset, source.offset + source.width).toString('hex') }] };
        }
        if (item.width > 8) {
          const at = item.offset + 8 + r.int(item.width - 8);
          return { what: `a byte of an ${item.owner} item`, ops: [{ op: 'set', at, hex: hex([r.int(256)]) }] };
        }
        return { what: `${item.owner} item length`, ops: [{ op: 'set', at: item.offset, hex: hex(leBytes(interestingInteger(r, 0n, 8, size), 8)) }] };
      }
      const original = readLe(base.bytes, item.offset, item.width);
      const value = item.valueType === 6 ? BigInt(r.pick([0x7fc00000, 0x7f800000, 0xff800000, 0, 0x80000000])) : interestingInteger(r, original, item.width, size);
      return { what: `${item.owner} item ${original} -> ${value}`, ops: [{ op: 'set', at: item.offset, hex: hex(leBytes(value, item.width)) }] };
    }
    case 'tensor-swap': {
      // Two tensors' dimensions exchanged (same size, wrong shape), or a dimension moved.
      const dims = ofKind('dim');
      const a = r.pick(dims);
      const b = r.pick(dims);
      return {
        what: `dims of ${a.owner} and ${b.owner} exchanged`,
        ops: [
          { op: 'set', at: a.offset, hex: base.bytes.subarray(b.offset, b.offset + 8).toString('hex') },
          { op: 'set', at: b.offset, hex: base.bytes.subarray(a.offset, a.offset + 8).toString('hex') },
        ],
      };
    }
    case 'splice': {
      // A piece of the header repeated or cut out: everything after it shifts.
      const at = r.int(headerEnd);
      const length = 1 + r.int(64);
      return r.next() < 0.5
        ? { what: `delete ${length} bytes at ${at}`, ops: [{ op: 'delete', at, length }] }
        : { what: `repeat ${length} bytes at ${at}`, ops: [{ op: 'insert', at, hex: base.bytes.subarray(at, at + length).toString('hex') }] };
    }
    case 'retype': {
      // A structurally valid file with one tensor in another type (its data rewritten, the
      // offsets after it moved): what a broken quantizer could write.
      const { GGML_TYPE_TABLE } = require(path.join(DIST, 'gguf/format.js'));
      const tensor = r.pick(ofKind('tensor_type'));
      const row = Number(base.bytes.readBigInt64LE(fields.find((f) => f.kind === 'dim' && f.owner === tensor.owner).offset));
      const types = [...GGML_TYPE_TABLE.entries()].filter(([, info]) => row % info.blockSize === 0).map(([type]) => type);
      const type = r.pick(types);
      return { what: `${tensor.owner} retyped to ${GGML_TYPE_TABLE.get(type).name}`, ops: [{ op: 'retype', tensor: tensor.owner, type }] };
    }
    case 'rename': {
      // One byte of a tensor's name changed, the file otherwise intact: a tensor lost (and an
      // unknown one gained), or one renamed into another's role (mm.2 -> mm.3, ffn_up -> ffn_gate).
      const field = r.pick(ofKind('tensor_name_length'));
      const name = field.owner;
      const index = r.int(name.length);
      const byte = r.weighted([[3, () => r.pick([...'0123456789'])], [3, () => r.pick([...'._abdegiklmnopqrstuvwxyzW'])], [1, () => String.fromCharCode(r.int(256))]])();
      return { what: `tensor ${name} renamed: byte ${index} := ${JSON.stringify(byte)}`, ops: [{ op: 'set', at: field.offset + 8 + index, hex: hex([byte.charCodeAt(0)]) }] };
    }
    case 'zero-data': {
      // Tensor data set to NaN / huge values: the model must still load and run without crashing.
      const at = headerEnd + r.int(size - headerEnd - 64);
      const fill = r.pick(['ff', '7f', '00', '7c']);
      return { what: `data bytes at ${at} := ${fill}`, ops: [{ op: 'set', at, hex: fill.repeat(64) }] };
    }
    default:
      throw new Error(op);
  }
}

function makeGgufCase(seed, index, bases, only) {
  const r = rng(seed, index, 'gguf');
  const base = bases[r.weighted(GGUF_BASE_WEIGHTS.filter(([, name]) => only === undefined || only.includes(name)))];
  const count = r.next() < 0.8 ? 1 : 2 + r.int(2);
  const mutations = [];
  for (let i = 0; i < count; i++) mutations.push(ggufMutation(r, base));
  // A retype rebuilds the file from its header, so it goes first, while the header is intact.
  const ops = mutations.flatMap((m) => m.ops).sort((x, y) => Number(y.op === 'retype') - Number(x.op === 'retype'));
  return { kind: 'gguf', seed, index, base: base.name, what: mutations.map((m) => m.what).join('; '), ops };
}

/** `bytes` with tensor `name` in ggml type `type`: new data (a fixed pattern), later offsets moved. */
function retype(bytes, name, type) {
  const { ggufFields, parseGgufHeader } = require(path.join(DIST, 'gguf/reader.js'));
  const { GGML_TYPE_TABLE } = require(path.join(DIST, 'gguf/format.js'));
  const fields = ggufFields(bytes);
  const { alignment, dataOffset } = parseGgufHeader(bytes, { fileSize: bytes.length, complete: true, maxHeaderBytes: bytes.length });
  const header = Buffer.from(bytes.subarray(0, dataOffset));
  const tensors = [];
  for (const f of fields) {
    if (f.kind === 'n_dims') tensors.push({ name: f.owner, dims: [] });
    else if (f.kind === 'dim') tensors.at(-1).dims.push(Number(bytes.readBigInt64LE(f.offset)));
    else if (f.kind === 'tensor_type') Object.assign(tensors.at(-1), { typeAt: f.offset, type: bytes.readUInt32LE(f.offset) });
    else if (f.kind === 'tensor_offset') Object.assign(tensors.at(-1), { offsetAt: f.offset, offset: Number(bytes.readBigUInt64LE(f.offset)) });
  }
  const size = (t, dims) => {
    const { blockSize, typeSize } = GGML_TYPE_TABLE.get(t);
    return (dims.reduce((a, b) => a * b, 1) / blockSize) * typeSize;
  };
  const parts = [header];
  let offset = 0;
  for (const t of tensors) {
    const newType = t.name === name ? type : t.type;
    const n = size(newType, t.dims);
    header.writeUInt32LE(newType, t.typeAt);
    header.writeBigUInt64LE(BigInt(offset), t.offsetAt);
    let data;
    if (newType === t.type) data = bytes.subarray(dataOffset + t.offset, dataOffset + t.offset + n);
    else {
      data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (Math.imul(i, 2654435761) >>> 26) & 0x3f; // small values: no NaN scales
    }
    const padded = Math.ceil(n / alignment) * alignment;
    parts.push(data, Buffer.alloc(padded - n));
    offset += padded;
  }
  return Buffer.concat(parts);
}

function applyOps(bytes, ops) {
  let out = Buffer.from(bytes);
  for (const o of ops) {
    if (o.op === 'retype') out = retype(out, o.tensor, o.type);
    else if (o.op === 'truncate') out = out.subarray(0, Math.min(o.length, out.length));
    else if (o.op === 'xor') {
      if (o.at < out.length) out[o.at] ^= o.mask;
    } else if (o.op === 'set') {
      const b = Buffer.from(o.hex, 'hex');
      if (o.at < out.length) b.copy(out, o.at, 0, Math.min(b.length, out.length - o.at));
    } else if (o.op === 'delete') out = Buffer.concat([out.subarray(0, o.at), out.subarray(o.at + o.length)]);
    else if (o.op === 'insert') out = Buffer.concat([out.subarray(0, o.at), Buffer.from(o.hex, 'hex'), out.subarray(o.at)]);
    else throw new Error(`unknown op ${o.op}`);
  }
  return out;
}

// --- image cases ---------------------------------------------------------------------------------

async function imageBases() {
  const sharp = require('sharp');
  const cat = path.join(FIXTURE_IMAGES, 'chelsea.png');
  const small = sharp(cat).resize(48, 32);
  const bases = {
    png: await small.clone().png().toBuffer(),
    png16grey: await small.clone().grayscale().toColourspace('grey16').png().toBuffer(),
    pngRgba: await small.clone().ensureAlpha().png({ palette: false }).toBuffer(),
    pngPalette: await small.clone().png({ palette: true, colours: 16 }).toBuffer(),
    jpeg: await small.clone().jpeg({ quality: 80 }).toBuffer(),
    jpegProgressive: await small.clone().jpeg({ quality: 80, progressive: true }).toBuffer(),
    jpegCmyk: await small.clone().toColourspace('cmyk').jpeg().toBuffer(),
    gif: await readFile(path.join(FIXTURE_IMAGES, 'no_time_for_that_tiny.gif')),
    webp: await small.clone().webp({ quality: 60 }).toBuffer(),
  };
  const out = {};
  for (const [name, bytes] of Object.entries(bases)) out[name] = { name, bytes, fields: imageFields(bytes) };
  return out;
}

/** Length and size fields of PNG chunks and JPEG segments. */
function imageFields(bytes) {
  const fields = [];
  if (bytes.subarray(1, 4).toString('latin1') === 'PNG') {
    for (let at = 8; at + 8 <= bytes.length;) {
      const length = bytes.readUInt32BE(at);
      const type = bytes.subarray(at + 4, at + 8).toString('latin1');
      fields.push({ kind: 'chunk_length', offset: at, width: 4, owner: type });
      if (type === 'IHDR') {
        fields.push({ kind: 'width', offset: at + 8, width: 4 }, { kind: 'height', offset: at + 12, width: 4 });
        fields.push({ kind: 'bit_depth', offset: at + 16, width: 1 }, { kind: 'colour_type', offset: at + 17, width: 1 });
      }
      at += 12 + length;
    }
  } else if (bytes[0] === 0xff && bytes[1] === 0xd8) {
    for (let at = 2; at + 4 <= bytes.length;) {
      if (bytes[at] !== 0xff) break;
      const marker = bytes[at + 1];
      if (marker === 0xda) {
        fields.push({ kind: 'segment_length', offset: at + 2, width: 2, owner: 'SOS' });
        break;
      }
      fields.push({ kind: 'segment_length', offset: at + 2, width: 2, owner: marker.toString(16) });
      if (marker >= 0xc0 && marker <= 0xc3) {
        fields.push({ kind: 'height', offset: at + 5, width: 2 }, { kind: 'width', offset: at + 7, width: 2 }, { kind: 'components', offset: at + 9, width: 1 });
      }
      at += 2 + bytes.readUInt16BE(at + 2);
    }
  }
  return fields;
}

function makeImageCase(seed, index, bases) {
  const r = rng(seed, index, 'image');
  const base = bases[r.pick(Object.keys(bases))];
  const size = base.bytes.length;
  const op = r.weighted([[4, 'flip'], [2, 'truncate'], [base.fields.length > 0 ? 4 : 0, 'field'], [1, 'splice'], [1, 'garbage']]);
  let ops;
  let what;
  if (op === 'flip') {
    const n = 1 + r.int(16);
    ops = Array.from({ length: n }, () => ({ op: 'xor', at: r.int(size), mask: 1 + r.int(255) }));
    what = `flip ${n} bytes`;
  } else if (op === 'truncate') {
    const length = r.int(size);
    ops = [{ op: 'truncate', length }];
    what = `truncate to ${length}`;
  } else if (op === 'field') {
    const field = r.pick(base.fields);
    const big = (v) => {
      const b = Buffer.alloc(field.width);
      if (field.width === 4) b.writeUInt32BE(Number(BigInt.asUintN(32, v)));
      else if (field.width === 2) b.writeUInt16BE(Number(BigInt.asUintN(16, v)));
      else b.writeUInt8(Number(BigInt.asUintN(8, v)));
      return b;
    };
    const original = field.width === 4 ? BigInt(base.bytes.readUInt32BE(field.offset)) : field.width === 2 ? BigInt(base.bytes.readUInt16BE(field.offset)) : BigInt(base.bytes[field.offset]);
    const value = interestingInteger(r, original, field.width, size);
    ops = [{ op: 'set', at: field.offset, hex: hex(big(value)) }];
    what = `${field.kind}${field.owner ? ` of ${field.owner}` : ''} ${original} -> ${value}`;
  } else if (op === 'splice') {
    const at = r.int(size);
    const length = 1 + r.int(256);
    ops = r.next() < 0.5 ? [{ op: 'delete', at, length }] : [{ op: 'insert', at, hex: base.bytes.subarray(at, at + length).toString('hex') }];
    what = `${ops[0].op} ${length} bytes at ${at}`;
  } else {
    const at = r.int(size);
    const length = 1 + r.int(512);
    ops = [{ op: 'set', at, hex: hex(Array.from({ length }, () => r.int(256))) }];
    what = `${length} random bytes at ${at}`;
  }
  return { kind: 'image', seed, index, base: base.name, what, ops };
}

// --- the child: runs cases through the public API ------------------------------------------------

async function childMain() {
  const { Model } = require(path.join(DIST, 'llama/model.js'));
  const { ChainOfSpotError } = require(path.join(DIST, 'common/errors.js'));
  const { checkGguf } = require(path.join(DIST, 'gguf/check.js'));
  const { loadImage, prepareOriginal } = require(path.join(DIST, 'image/image.js'));
  // The parent's folder: it outlives a crashed child, and the parent removes it at the end.
  const work = process.env.COS_FUZZ_WORK;
  let bases;
  let goodModel;
  /** For GGUF cases: the text model each projector base loads with, loaded once each. */
  let textModels;
  const loadedTextModels = new Map();
  let goodProjector;
  let session;
  let counter = 0;

  const setUp = async (kind) => {
    if (bases) return;
    if (kind === 'gguf') {
      ({ bases, textModels } = await ggufBases());
    } else {
      bases = await imageBases();
      const { ensureTinyLlava, TINY_LLAVA_FAST } = require(path.join(DIST, 'models/tiny-model.js'));
      const pair = await ensureTinyLlava(MODEL_CACHE, TINY_LLAVA_FAST);
      goodModel = await Model.load(pair.model);
      goodProjector = await goodModel.loadProjector(pair.mmproj, { threads: 1 });
      session = await goodModel.createSession({ contextSize: 256, threads: 1 });
    }
  };

  const useModel = async (model) => {
    model.tokenize('Hello world, what is this?');
    const s = await model.createSession({ contextSize: 64, threads: 1 });
    try {
      await s.evaluate('Hello world', { addBos: true });
      await s.generate({ maxTokens: 2 });
    } finally {
      await s.dispose();
    }
  };

  const textModelFor = async (base) => {
    const file = textModels[base];
    if (!loadedTextModels.has(file)) loadedTextModels.set(file, await Model.load(file));
    return loadedTextModels.get(file);
  };

  const useProjector = async (projector, model) => {
    const size = projector.info.imageSize;
    if (!projector.info.supportsVision || size <= 0 || size > 1024) return;
    const s = await model.createSession({ contextSize: Math.max(64, projector.info.tokensPerImage + 16), threads: 1 });
    try {
      const pixels = new Uint8Array(size * size * 3).fill(128);
      await s.evaluateImage(projector, { data: pixels, width: size, height: size });
    } finally {
      await s.dispose();
    }
  };

  const runCase = async (c, precheck) => {
    await setUp(c.kind);
    if (c.kind === 'gguf') {
      const base = bases[c.base];
      const file = path.join(work, `case-${counter++}.gguf`);
      await writeFile(file, applyOps(base.bytes, c.ops));
      try {
        if (c.base.endsWith('model')) {
          if (precheck) await checkGguf(file, 'text-model');
          const model = await Model.load(file);
          try {
            await useModel(model);
          } finally {
            await model.dispose();
          }
        } else {
          if (precheck) await checkGguf(file, 'projector');
          const model = await textModelFor(c.base);
          const projector = await model.loadProjector(file, { threads: 1 });
          try {
            await useProjector(projector, model);
          } finally {
            await projector.dispose();
          }
        }
      } finally {
        await rm(file, { force: true });
      }
    } else {
      const bytes = applyOps(bases[c.base].bytes, c.ops);
      const image = await loadImage(bytes, { maxPixels: 2_000_000 });
      const prepared = await prepareOriginal(image, goodProjector.info.imageSize);
      await session.clear();
      await session.evaluateImage(goodProjector, prepared);
    }
  };

  process.on('message', async (message) => {
    if (message.type === 'quit') {
      await session?.dispose();
      await goodModel?.dispose();
      for (const model of loadedTextModels.values()) await model.dispose();
      process.exit(0);
    }
    const c = message.case;
    const start = performance.now();
    let result;
    if (message.crash) process.abort();
    try {
      await runCase(c, message.precheck);
      result = { outcome: 'ok' };
    } catch (error) {
      const coded = error instanceof ChainOfSpotError && typeof error.code === 'string';
      result = { outcome: coded ? 'rejected' : 'bad-error', code: error?.code, name: error?.name, message: String(error?.message ?? error).slice(0, 400) };
    }
    process.send({ type: 'result', index: c.index, ms: performance.now() - start, ...result });
  });
  process.send({ type: 'ready' });
}

// --- the parent: hands out cases, watches the child ----------------------------------------------

async function parentMain(args) {
  const self = fileURLToPath(import.meta.url);
  const log = (line) => {
    if (!args.json) console.log(line);
  };
  const { bases } = args.kind === 'gguf' ? await ggufBases() : { bases: await imageBases() };
  const make = (index) => (args.kind === 'gguf' ? makeGgufCase(args.seed, index, bases, args.bases) : makeImageCase(args.seed, index, bases));
  const work = await mkdtemp(path.join(tmpdir(), 'cos-fuzz-'));
  const tally = { ok: 0, rejected: 0, crashes: 0, hangs: 0, badErrors: 0 };
  /** Outcomes by the file a case mutated: { base: { ok, rejected, failed } }. */
  const perBase = {};
  const failures = [];
  const outcomes = [];
  const codes = {};
  const started = performance.now();
  let child;
  let spawns = 0;

  const startChild = () =>
    new Promise((resolve, reject) => {
      spawns++;
      const c = fork(self, ['--child'], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, COS_FUZZ_WORK: work } });
      c.stderrTail = '';
      c.stderr.on('data', (d) => {
        c.stderrTail = (c.stderrTail + d.toString()).slice(-2000);
      });
      c.once('message', (m) => (m.type === 'ready' ? resolve(c) : reject(new Error('unexpected first message'))));
      c.once('exit', (code, signal) => reject(new Error(`the fuzz child exited during start-up (code ${code}, signal ${signal}): ${c.stderrTail}`)));
    });

  /** Runs one case; resolves with the result, or a crash / hang record. */
  const runOne = (c) =>
    new Promise((resolve) => {
      const current = child;
      let done = false;
      const finish = (value) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        current.off('message', onMessage);
        current.off('exit', onExit);
        resolve(value);
      };
      const onMessage = (m) => {
        if (m.type === 'result' && m.index === c.index) finish(m);
      };
      const onExit = (code, signal) => {
        child = undefined;
        finish({ outcome: 'crash', code: null, signal, exitCode: code, message: current.stderrTail.trim().split('\n').slice(-6).join('\n') });
      };
      const timer = setTimeout(() => {
        current.off('exit', onExit);
        current.kill('SIGKILL');
        child = undefined;
        finish({ outcome: 'hang', message: `no result after ${args.caseTimeoutMs} ms` });
      }, args.caseTimeoutMs);
      current.on('message', onMessage);
      current.on('exit', onExit);
      current.send({ type: 'case', case: c, precheck: args.precheck, crash: c.index === args.crashAt });
    });

  try {
    for (let index = args.start; index < args.start + args.cases; index++) {
      const c = make(index);
      if (!child) child = await startChild();
      const result = await runOne(c);
      const baseTally = (perBase[c.base] ??= { ok: 0, rejected: 0, failed: 0 });
      baseTally[result.outcome === 'ok' || result.outcome === 'rejected' ? result.outcome : 'failed']++;
      if (result.outcome === 'ok') tally.ok++;
      else if (result.outcome === 'rejected') {
        tally.rejected++;
        codes[result.code] = (codes[result.code] ?? 0) + 1;
      } else {
        if (result.outcome === 'crash') tally.crashes++;
        else if (result.outcome === 'hang') tally.hangs++;
        else tally.badErrors++;
        const failure = { seed: args.seed, index, replay: `node scripts/fuzz.mjs --kind ${args.kind}${args.precheck ? ' --precheck' : ''}${args.bases ? ` --bases ${args.bases.join(',')}` : ''} --replay ${args.seed}:${index}`, base: c.base, what: c.what, ...result };
        failures.push(failure);
        log(`${result.outcome.toUpperCase()} case ${args.seed}:${index} (${c.base}: ${c.what})${result.signal ? ` signal ${result.signal}` : ''}${result.exitCode ? ` exit ${result.exitCode}` : ''}\n  ${String(result.message ?? '').replace(/\n/g, '\n  ')}\n  replay: ${failure.replay}`);
        if (args.save) {
          await mkdir(args.save, { recursive: true });
          const bytes = applyOps(bases[c.base].bytes, c.ops);
          await writeFile(path.join(args.save, `${args.kind}-${args.seed}-${index}.${args.kind === 'gguf' ? 'gguf' : 'bin'}`), bytes);
        }
      }
      if (args.outcomes) outcomes.push(JSON.stringify({ index, base: c.base, what: c.what, ms: Math.round(result.ms ?? 0), outcome: result.outcome, code: result.code, signal: result.signal, message: result.message }));
      if (args.verbose) log(`case ${args.seed}:${index} ${c.base}: ${c.what} -> ${result.outcome}${result.code ? ` ${result.code}` : ''}${result.message ? `: ${result.message}` : ''}`);
    }
    if (child) {
      const c = child;
      await new Promise((resolve) => {
        const timer = setTimeout(() => {
          c.kill('SIGKILL');
          resolve();
        }, 10_000);
        c.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        c.send({ type: 'quit' });
      });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  if (args.outcomes) await writeFile(args.outcomes, outcomes.join('\n') + '\n');
  const summary = {
    kind: args.kind, seed: args.seed, start: args.start, cases: args.cases, precheck: args.precheck, ...tally, codes, bases: perBase, childProcesses: spawns,
    seconds: Number(((performance.now() - started) / 1000).toFixed(1)), failures,
  };
  if (args.json) console.log(JSON.stringify(summary));
  else {
    log(`fuzz ${args.kind}${args.precheck ? ' (with an explicit checkGguf)' : ''} seed ${args.seed}, cases ${args.start}..${args.start + args.cases - 1}: ` +
      `${tally.ok} ok, ${tally.rejected} rejected (${Object.entries(codes).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}), ` +
      `${tally.crashes} crashes, ${tally.hangs} hangs, ${tally.badErrors} uncoded errors; ${spawns} child processes, ${summary.seconds} s`);
  }
  return failures.length === 0 ? 0 : 1;
}

const args = parseArgs(process.argv.slice(2));
if (args.child) await childMain();
else process.exitCode = await parentMain(args);
