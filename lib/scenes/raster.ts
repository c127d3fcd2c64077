/**
 * The scene generator's drawing: a seeded PRNG, a 5x7 bitmap font for the digits, and filled
 * shapes, all rasterised by this code on raw RGB buffers, so a scene's pixels depend on its seed
 * alone (no fonts of the machine, no Math.random).
 */

import { mulberry32 } from '../common/random';

/** A seeded random source with the helpers the generator needs. */
export class Rng {
  readonly #next: () => number;

  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.#next();
  }

  /** Uniform in [min, max). */
  uniform(min: number, max: number): number {
    return min + (max - min) * this.#next();
  }

  /** Integer in [min, max] (both inclusive). */
  int(min: number, max: number): number {
    return min + Math.floor(this.#next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#next() * items.length)]!;
  }

  /** `k` distinct items, in random order. */
  sample<T>(items: readonly T[], k: number): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(this.#next() * (i + 1));
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy.slice(0, k);
  }
}

/** An RGB colour, 0..255 per channel. */
export type Rgb = readonly [number, number, number];

/** A raw 8-bit RGB canvas. */
export interface Canvas {
  readonly data: Buffer;
  readonly width: number;
  readonly height: number;
}

/** 5x7 glyphs of the digits 0-9, one string of 5 cells per row, `#` inked. */
const GLYPHS: readonly (readonly string[])[] = [
  ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
  ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
  ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
  ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
  ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
  ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
  ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
  ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
  ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
];

/** Glyph aspect: 5 cells wide, 7 high. */
export const GLYPH_COLUMNS = 5;
export const GLYPH_ROWS = 7;

function setPixel(canvas: Canvas, x: number, y: number, colour: Rgb): void {
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return;
  const i = (y * canvas.width + x) * 3;
  canvas.data[i] = colour[0];
  canvas.data[i + 1] = colour[1];
  canvas.data[i + 2] = colour[2];
}

/** Fills the pixels whose centres `inside` accepts, within the bounding rectangle given. */
function fillWhere(canvas: Canvas, x0: number, y0: number, x1: number, y1: number, colour: Rgb, inside: (x: number, y: number) => boolean): void {
  for (let y = Math.max(0, Math.floor(y0)); y <= Math.min(canvas.height - 1, Math.ceil(y1)); y++) {
    for (let x = Math.max(0, Math.floor(x0)); x <= Math.min(canvas.width - 1, Math.ceil(x1)); x++) {
      if (inside(x + 0.5, y + 0.5)) setPixel(canvas, x, y, colour);
    }
  }
}

/** The shapes a tag can have. */
export const SHAPES = ['circle', 'square', 'triangle'] as const;
export type Shape = (typeof SHAPES)[number];

/**
 * Draws a filled shape centred at (cx, cy) whose bounding box is `size` pixels across. The
 * triangle points up; its digit sits lower (see {@link digitCentre}).
 */
export function drawShape(canvas: Canvas, shape: Shape, cx: number, cy: number, size: number, colour: Rgb): void {
  const h = size / 2;
  switch (shape) {
    case 'circle':
      fillWhere(canvas, cx - h, cy - h, cx + h, cy + h, colour, (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= h * h);
      break;
    case 'square': {
      const s = h * 0.9; // a square looks larger than a circle of the same width
      fillWhere(canvas, cx - s, cy - s, cx + s, cy + s, colour, (x, y) => Math.abs(x - cx) <= s && Math.abs(y - cy) <= s);
      break;
    }
    case 'triangle':
      // Apex at the top centre, base at the bottom; |x - cx| <= h * (y - top) / size.
      fillWhere(canvas, cx - h, cy - h, cx + h, cy + h, colour, (x, y) => y >= cy - h && y <= cy + h && Math.abs(x - cx) <= (h * (y - (cy - h))) / size);
      break;
  }
}

/** Where a shape's digit is centred: the middle, or lower in a triangle where it is widest. */
export function digitCentre(shape: Shape, cx: number, cy: number, size: number): [number, number] {
  return shape === 'triangle' ? [cx, cy + size * 0.2] : [cx, cy];
}

/** Draws digit `d` as its 5x7 glyph, `height` pixels high, centred at (cx, cy). */
export function drawDigit(canvas: Canvas, d: number, cx: number, cy: number, height: number, colour: Rgb): void {
  const glyph = GLYPHS[d];
  if (!glyph) throw new RangeError(`not a digit: ${d}`);
  const cell = height / GLYPH_ROWS;
  const left = cx - (cell * GLYPH_COLUMNS) / 2;
  const top = cy - height / 2;
  glyph.forEach((row, r) => {
    for (let c = 0; c < GLYPH_COLUMNS; c++) {
      if (row[c] !== '#') continue;
      const x0 = Math.round(left + c * cell);
      const x1 = Math.round(left + (c + 1) * cell);
      const y0 = Math.round(top + r * cell);
      const y1 = Math.round(top + (r + 1) * cell);
      for (let y = y0; y < Math.max(y1, y0 + 1); y++) for (let x = x0; x < Math.max(x1, x0 + 1); x++) setPixel(canvas, x, y, colour);
    }
  });
}

/** A linear gradient between two colours at an angle, with a third colour stop in the middle. */
export function gradientBackground(width: number, height: number, rng: Rng): Canvas {
  const stops = [randomColour(rng), randomColour(rng), randomColour(rng)];
  const angle = rng.uniform(0, 2 * Math.PI);
  const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
  const extent = Math.abs(dx) * width + Math.abs(dy) * height;
  const origin = Math.min(0, dx * width) + Math.min(0, dy * height);
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = (dx * x + dy * y - origin) / extent; // 0..1
      const [a, b, u] = t < 0.5 ? [stops[0]!, stops[1]!, t * 2] : [stops[1]!, stops[2]!, t * 2 - 1];
      const i = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) data[i + c] = Math.round(a[c]! + (b[c]! - a[c]!) * u);
    }
  }
  return { data, width, height };
}

/**
 * Value noise: random colours on a coarse grid (cells of 20 to 90 pixels), bilinearly
 * interpolated, plus a little per-pixel grain.
 */
export function noiseBackground(width: number, height: number, rng: Rng): Canvas {
  const cell = rng.uniform(20, 90);
  const gw = Math.ceil(width / cell) + 2;
  const gh = Math.ceil(height / cell) + 2;
  const base = randomColour(rng);
  const spread = rng.uniform(40, 120);
  const grid = new Float32Array(gw * gh * 3);
  for (let i = 0; i < gw * gh; i++) {
    for (let c = 0; c < 3; c++) grid[i * 3 + c] = base[c]! + rng.uniform(-spread, spread);
  }
  const grain = rng.uniform(0, 24);
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    const gy = y / cell;
    const y0 = Math.floor(gy);
    const fy = gy - y0;
    for (let x = 0; x < width; x++) {
      const gx = x / cell;
      const x0 = Math.floor(gx);
      const fx = gx - x0;
      const i = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) {
        const g = (xx: number, yy: number): number => grid[(yy * gw + xx) * 3 + c]!;
        const v = (g(x0, y0) * (1 - fx) + g(x0 + 1, y0) * fx) * (1 - fy) + (g(x0, y0 + 1) * (1 - fx) + g(x0 + 1, y0 + 1) * fx) * fy;
        data[i + c] = Math.max(0, Math.min(255, Math.round(v + (rng.next() - 0.5) * grain)));
      }
    }
  }
  return { data, width, height };
}

function randomColour(rng: Rng): Rgb {
  return [rng.int(0, 255), rng.int(0, 255), rng.int(0, 255)];
}
