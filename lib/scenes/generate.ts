/**
 * Tag-reading scenes, the task the demo model is trained and measured on: coloured shapes ("tags")
 * carrying one digit each, so small that at the projector's input size (112 px for the demo model)
 * the digit is under 3 px high and cannot be read, while in a crop around the tag zoomed to the same
 * size it is 20 px high. Only a model that looks closer can answer "What number is on the red circle?".
 *
 * Everything is a pure function of the seed (and the background photos given): scene `i` of seed
 * `s` is the same whatever `count` is, so a smaller set is a prefix of a larger one.
 *
 * Geometry, in fractions of the side of the image padded to a square (the frame of Chain-of-Spot's
 * boxes): a tag's shape is {@link TAG_SIZE} across, its digit {@link DIGIT_HEIGHT} high, and its
 * box is its centre ± {@link BOX_HALF}. Tag centres lie on a grid of {@link CENTRE_GRID} (0.05), so
 * a box is written with at most 2 decimals (still the reference's `round(x, 3)` format) and finding
 * a tag is choosing one of ~17 positions per axis, which a model small enough to train on a CPU
 * learns; a neighbouring position already scores IoU < 0.5. For a projector of `S` px the digit
 * is `S * DIGIT_HEIGHT` px high in the whole view and `S * DIGIT_HEIGHT / (2 * BOX_HALF)` in the crop.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';

import { formatBox, paddedSquare, type Box } from '../procedure/box';
import { digitCentre, drawDigit, drawShape, gradientBackground, noiseBackground, Rng, SHAPES, type Canvas, type Rgb, type Shape } from './raster';

/** Width of a tag's shape, as a fraction of the padded side. */
export const TAG_SIZE = 0.06;
/** Height of a tag's digit, as a fraction of the padded side (2.8 px of 112). */
export const DIGIT_HEIGHT = 0.025;
/** Half the side of a tag's box (the region to zoom into): 0.14 across, so the zoom is ~7x. */
export const BOX_HALF = 0.07;
/** The least distance (Chebyshev, padded-side fractions) between two tags' centres. */
export const MIN_TAG_DISTANCE = 0.17;
/** The grid tag centres lie on, in hundredths of the padded side. */
export const CENTRE_GRID = 5;

/** A tag's named colour and the digit colour that contrasts with it. Names are single words. */
export interface TagColour {
  readonly name: string;
  readonly rgb: Rgb;
  readonly ink: Rgb;
}

const BLACK: Rgb = [10, 10, 10];
const WHITE: Rgb = [250, 250, 250];

/** The named colours; a scene's tags have distinct ones. */
export const TAG_COLOURS: readonly TagColour[] = [
  { name: 'red', rgb: [225, 25, 30], ink: WHITE },
  { name: 'blue', rgb: [25, 70, 230], ink: WHITE },
  { name: 'green', rgb: [20, 170, 60], ink: BLACK },
  { name: 'yellow', rgb: [250, 225, 20], ink: BLACK },
  { name: 'orange', rgb: [250, 135, 10], ink: BLACK },
  { name: 'purple', rgb: [135, 40, 180], ink: WHITE },
  { name: 'pink', rgb: [250, 140, 200], ink: BLACK },
  { name: 'brown', rgb: [120, 70, 30], ink: WHITE },
  { name: 'white', rgb: [245, 245, 245], ink: BLACK },
];

/** The phrasings of a question; `{tag}` becomes e.g. `red circle`. */
export const QUESTION_TEMPLATES: readonly string[] = [
  'What number is on the {tag}?',
  'Which digit is written on the {tag}?',
  'What digit is on the {tag}?',
  'Which number is shown on the {tag}?',
  'What is the number on the {tag}?',
  'What is the digit written on the {tag}?',
];

/** Backgrounds: a crop of a photo (when photos are given), a gradient, or value noise. */
export type BackgroundKind = 'photo' | 'gradient' | 'noise';

/** One tag of a scene. */
export interface SceneTag {
  readonly colour: string;
  readonly shape: Shape;
  readonly digit: number;
  /** Centre as fractions of the padded square. */
  readonly centre: readonly [number, number];
  /** Centre and shape width in the image's pixels. */
  readonly pixels: { readonly x: number; readonly y: number; readonly size: number };
  /** The tag's box: centre ± BOX_HALF, `[l, t, r, b]` in padded-square fractions. */
  readonly box: readonly [number, number, number, number];
}

/** One line of `questions.jsonl`. */
export interface SceneQuestion {
  readonly id: string;
  /** The image's path, relative to the JSONL file. */
  readonly image: string;
  readonly question: string;
  readonly answers: readonly string[];
  /** The true region, `[l, t, r, b]` in padded-square fractions (what turn one should write). */
  readonly box: readonly [number, number, number, number];
  /** The box as the reference writes it (turn one's target text), e.g. `[0.23, 0.41, 0.37, 0.55]`. */
  readonly box_text: string;
  readonly tag: SceneTag;
  /** Every tag of the scene (the asked one included). */
  readonly tags: readonly SceneTag[];
  readonly width: number;
  readonly height: number;
  readonly background: { readonly kind: BackgroundKind; readonly photo?: string };
  readonly scene: number;
  readonly seed: number;
}

/** Options of {@link writeScenes}. */
export interface WriteScenesOptions {
  /** Questions to write (each scene asks about each of its tags). */
  readonly count: number;
  readonly seed: number;
  /** Output folder: `questions.jsonl` and `images/`. Created if needed. */
  readonly out: string;
  /** A folder of background photos (PNG/JPEG/WebP); without it, backgrounds are gradients and noise. */
  readonly backgrounds?: string;
}

/** What {@link writeScenes} wrote. */
export interface WriteScenesResult {
  readonly questions: string;
  readonly images: number;
  readonly count: number;
}

interface Photo {
  readonly name: string;
  readonly data: Buffer;
  readonly width: number;
  readonly height: number;
}

/** Per-scene seed: independent streams for (seed, scene). */
function sceneSeed(seed: number, scene: number): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (const v of [scene >>> 0, 0x9e3779b9]) {
    h = Math.imul(h ^ v, 0x01000193) >>> 0;
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d) >>> 0;
  }
  return h >>> 0;
}

async function loadPhotos(dir: string | undefined): Promise<Photo[]> {
  if (dir === undefined) return [];
  const names = (await readdir(dir)).filter((n) => /\.(png|jpe?g|webp)$/i.test(n)).sort();
  if (names.length === 0) throw new RangeError(`no background photos (.png, .jpg, .webp) in ${dir}`);
  return Promise.all(
    names.map(async (name) => {
      const { data, info } = await sharp(join(dir, name)).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
      return { name, data, width: info.width, height: info.height };
    }),
  );
}

/** A random crop of a photo with the canvas's aspect ratio, resized to the canvas. */
async function photoBackground(photo: Photo, width: number, height: number, rng: Rng): Promise<Canvas> {
  const aspect = width / height;
  const scale = rng.uniform(0.5, 1);
  let cw = photo.width * scale;
  let ch = cw / aspect;
  if (ch > photo.height * scale) {
    ch = photo.height * scale;
    cw = ch * aspect;
  }
  const w = Math.max(8, Math.min(photo.width, Math.round(cw)));
  const h = Math.max(8, Math.min(photo.height, Math.round(ch)));
  const left = rng.int(0, photo.width - w);
  const top = rng.int(0, photo.height - h);
  const flip = rng.next() < 0.5;
  let pipeline = sharp(photo.data, { raw: { width: photo.width, height: photo.height, channels: 3 } })
    .extract({ left, top, width: w, height: h })
    .resize(width, height, { fit: 'fill', kernel: 'cubic' });
  if (flip) pipeline = pipeline.flop();
  const data = await pipeline.raw().toBuffer();
  return { data, width, height };
}

/** Rounds to 2 decimals on the 0.01 grid (exactly representable as the nearest double). */
const grid = (k: number): number => Number((k / 100).toFixed(2));

/** Scene `index` of `seed`: its canvas (tags drawn) and tags. */
export async function renderScene(seed: number, index: number, photos: readonly Photo[]): Promise<{ canvas: Canvas; tags: SceneTag[]; background: SceneQuestion['background'] }> {
  const rng = new Rng(sceneSeed(seed, index));
  const aspect = Math.exp(rng.uniform(Math.log(0.5), Math.log(2)));
  const long = rng.int(600, 1200);
  const width = aspect >= 1 ? long : Math.round(long * aspect);
  const height = aspect >= 1 ? Math.round(long / aspect) : long;
  const square = paddedSquare(width, height);

  const kinds: BackgroundKind[] = photos.length > 0 ? ['photo', 'photo', 'gradient', 'noise'] : ['gradient', 'noise'];
  const kind = rng.pick(kinds);
  let canvas: Canvas;
  let background: SceneQuestion['background'];
  if (kind === 'photo') {
    const photo = rng.pick(photos);
    canvas = await photoBackground(photo, width, height, rng);
    background = { kind, photo: photo.name };
  } else {
    canvas = kind === 'gradient' ? gradientBackground(width, height, rng) : noiseBackground(width, height, rng);
    background = { kind };
  }

  // Tag centres on the CENTRE_GRID of the padded square, the shape inside the image, the box inside the square.
  const side = square.side;
  const tagHalf = TAG_SIZE / 2 + 0.005;
  const range = (offset: number, extent: number): [number, number] => [
    Math.ceil(100 * Math.max(BOX_HALF, offset / side + tagHalf) - 1e-9),
    Math.floor(100 * Math.min(1 - BOX_HALF, (offset + extent) / side - tagHalf) + 1e-9),
  ];
  const [x0, x1] = range(square.left, width);
  const [y0, y1] = range(square.top, height);
  const wanted = rng.int(3, 6);
  const centres: [number, number][] = [];
  for (let attempt = 0; attempt < 400 && centres.length < wanted; attempt++) {
    const g = CENTRE_GRID;
    const c: [number, number] = [g * rng.int(Math.ceil(x0 / g), Math.floor(x1 / g)), g * rng.int(Math.ceil(y0 / g), Math.floor(y1 / g))];
    if (centres.every(([x, y]) => Math.max(Math.abs(x - c[0]), Math.abs(y - c[1])) >= MIN_TAG_DISTANCE * 100 - 1e-9)) centres.push(c);
  }
  const colours = rng.sample(TAG_COLOURS, centres.length);
  const tags: SceneTag[] = centres.map(([kx, ky], i) => {
    const colour = colours[i]!;
    const shape = rng.pick(SHAPES);
    const digit = rng.int(0, 9);
    const cx = grid(kx);
    const cy = grid(ky);
    const size = TAG_SIZE * side;
    const px = cx * side - square.left;
    const py = cy * side - square.top;
    drawShape(canvas, shape, px, py, size, colour.rgb);
    const [dx, dy] = digitCentre(shape, px, py, size);
    drawDigit(canvas, digit, dx, dy, DIGIT_HEIGHT * side, colour.ink);
    return {
      colour: colour.name,
      shape,
      digit,
      centre: [cx, cy],
      pixels: { x: Number(px.toFixed(2)), y: Number(py.toFixed(2)), size: Number(size.toFixed(2)) },
      box: [grid(kx - 100 * BOX_HALF), grid(ky - 100 * BOX_HALF), grid(kx + 100 * BOX_HALF), grid(ky + 100 * BOX_HALF)],
    };
  });
  return { canvas, tags, background };
}

/** The question about `tag` in phrasing `template`. */
export function questionFor(tag: SceneTag, template: string): string {
  return template.replace('{tag}', `${tag.colour} ${tag.shape}`);
}

/**
 * Writes `count` questions about generated scenes into `out`: PNG images under `out/images/` and
 * `out/questions.jsonl`, one {@link SceneQuestion} per line (what `chain-of-spot eval` reads:
 * `id`, `image`, `question`, `answers`; the rest is for training and scoring boxes).
 */
export async function writeScenes(options: WriteScenesOptions): Promise<WriteScenesResult> {
  const { count, seed, out } = options;
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`count must be a positive integer, got ${count}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer from 0 to 4294967295, got ${seed}`);
  const photos = await loadPhotos(options.backgrounds);
  await mkdir(join(out, 'images'), { recursive: true });
  const lines: string[] = [];
  let scene = 0;
  for (; lines.length < count; scene++) {
    const { canvas, tags, background } = await renderScene(seed, scene, photos);
    const name = `images/scene-${String(scene).padStart(6, '0')}.png`;
    await sharp(canvas.data, { raw: { width: canvas.width, height: canvas.height, channels: 3 } }).png({ compressionLevel: 6 }).toFile(join(out, name));
    const rng = new Rng(sceneSeed(seed ^ 0x5bd1e995, scene));
    for (const tag of rng.sample(tags, tags.length)) {
      if (lines.length >= count) break;
      const box: Box = { left: tag.box[0], top: tag.box[1], right: tag.box[2], bottom: tag.box[3] };
      const question: SceneQuestion = {
        id: `s${seed}-${scene}-${tag.colour}`,
        image: name,
        question: questionFor(tag, rng.pick(QUESTION_TEMPLATES)),
        answers: [String(tag.digit)],
        box: tag.box,
        box_text: formatBox(box),
        tag,
        tags,
        width: canvas.width,
        height: canvas.height,
        background,
        scene,
        seed,
      };
      lines.push(JSON.stringify(question));
    }
  }
  const questions = join(out, 'questions.jsonl');
  await writeFile(questions, lines.join('\n') + '\n');
  return { questions, images: scene, count: lines.length };
}
