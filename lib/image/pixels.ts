/**
 * The pixel work of the reference's image preparation, on raw RGB buffers: paste a rectangle of an
 * image's padded square onto a square canvas of the pad colour, and resize it exactly as Pillow's
 * bicubic filter does. Pure and synchronous: pixel-pool.ts runs it off the main thread.
 */
import type { RgbImage } from '../common/rgb-image';
import { paddedSquare, type PixelRect } from './geometry';

/**
 * The colour images are padded with: `int(mean * 255)` of CLIP's normalisation mean
 * (0.48145466, 0.4578275, 0.40821073), as the reference's `expand2square` call computes it.
 */
export const PAD_COLOUR: readonly [number, number, number] = Object.freeze([122, 116, 104] as [number, number, number]);
const PAD_PIXEL = Buffer.from(PAD_COLOUR);

/**
 * `rect` of the image's padded square, centred on a square canvas, resized to `size` x `size`.
 * An empty `rect` (zero width or height, which only the reference's crop gives) is a flat square of
 * the pad colour: `expand2square` pads an empty crop to a square of nothing but the pad colour, and
 * resizing a flat image keeps it flat (checked against Pillow).
 */
export function padCropResize(image: RgbImage, rect: PixelRect, size: number): RgbImage {
  if (rect.right <= rect.left || rect.bottom <= rect.top) return flatSquare(size);
  return resizeSquare(squareCanvas(image, rect), size);
}

/** A `size` x `size` image of the pad colour. */
export function flatSquare(size: number): RgbImage {
  return { data: Buffer.allocUnsafe(size * size * 3).fill(PAD_PIXEL), width: size, height: size };
}

/**
 * Turns pixels stored with EXIF `orientation` (1-8) upright, as sharp's `autoOrient()` does: 2
 * mirrors, 3 turns 180 degrees, 4 flips, 5 transposes, 6 turns 90 degrees clockwise, 7 transverses,
 * 8 turns 90 degrees anticlockwise. With `undo`, the inverse: upright pixels back as stored.
 * Any other orientation value leaves the image as it is (a copy is not made).
 */
export function orientPixels(image: RgbImage, orientation: number, undo = false): RgbImage {
  if (!Number.isInteger(orientation) || orientation < 2 || orientation > 8) return image;
  // 6 and 8 are each other's inverse; the other orientations are their own.
  const applied = undo && (orientation === 6 || orientation === 8) ? 14 - orientation : orientation;
  const { width, height, data } = image;
  const swap = applied >= 5;
  const outWidth = swap ? height : width;
  const outHeight = swap ? width : height;
  const output = Buffer.allocUnsafe(data.byteLength);
  // The stored pixel (x, y) shown at output (u, v).
  const source: (u: number, v: number) => number = {
    2: (u: number, v: number) => v * width + (width - 1 - u),
    3: (u: number, v: number) => (height - 1 - v) * width + (width - 1 - u),
    4: (u: number, v: number) => (height - 1 - v) * width + u,
    5: (u: number, v: number) => u * width + v,
    6: (u: number, v: number) => (height - 1 - u) * width + v,
    7: (u: number, v: number) => (height - 1 - u) * width + (width - 1 - v),
    8: (u: number, v: number) => u * width + (width - 1 - v),
  }[applied]!;
  for (let v = 0, at = 0; v < outHeight; v++) {
    for (let u = 0; u < outWidth; u++, at += 3) {
      const from = source(u, v) * 3;
      output[at] = data[from]!;
      output[at + 1] = data[from + 1]!;
      output[at + 2] = data[from + 2]!;
    }
  }
  return { data: output, width: outWidth, height: outHeight };
}

/**
 * The square canvas the reference resizes: `rect` of the image's padded square (black outside the
 * padded square), centred on a square of the pad colour as `expand2square` pastes it. With `rect`
 * the whole padded square, this is `expand2square` itself.
 */
function squareCanvas(image: RgbImage, rect: PixelRect): RgbImage {
  const square = paddedSquare(image.width, image.height);
  const cropWidth = rect.right - rect.left;
  const cropHeight = rect.bottom - rect.top;
  const side = Math.max(cropWidth, cropHeight);
  const canvas = Buffer.allocUnsafe(side * side * 3).fill(PAD_PIXEL);
  const pixels = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength);
  // Where the crop's top-left corner lands on the canvas.
  const originX = Math.floor((side - cropWidth) / 2);
  const originY = Math.floor((side - cropHeight) / 2);
  // The image's columns inside the crop, in padded-square coordinates.
  const imageLeft = Math.max(rect.left, square.left);
  const imageRight = Math.min(rect.right, square.left + image.width);
  for (let row = 0; row < cropHeight; row++) {
    const y = rect.top + row;
    const rowStart = ((originY + row) * side + originX) * 3;
    const canvasIndex = (x: number): number => rowStart + (x - rect.left) * 3;
    // Outside the padded square: black (the canvas already holds the pad colour inside it).
    if (y < 0 || y >= square.side) {
      canvas.fill(0, rowStart, rowStart + cropWidth * 3);
      continue;
    }
    if (rect.left < 0) canvas.fill(0, rowStart, canvasIndex(Math.min(0, rect.right)));
    if (rect.right > square.side) canvas.fill(0, canvasIndex(Math.max(square.side, rect.left)), canvasIndex(rect.right));
    const imageY = y - square.top;
    if (imageY >= 0 && imageY < image.height && imageRight > imageLeft) {
      const sourceRow = imageY * image.width * 3;
      pixels.copy(canvas, canvasIndex(imageLeft), sourceRow + (imageLeft - square.left) * 3, sourceRow + (imageRight - square.left) * 3);
    }
  }
  return { data: canvas, width: side, height: side };
}

/**
 * Resizes a square canvas to `size` x `size` exactly as Pillow's `Image.resize(..., BICUBIC)` does
 * for 8-bit RGB (what the reference's CLIP image processor calls): a separable convolution with the
 * Keys cubic (a = -0.5), its support widened by the scale when shrinking (antialiasing), weights
 * normalised and rounded to 22-bit fixed point, the horizontal pass first and clipped to 8 bits,
 * then the vertical pass. libvips (sharp) shrinks almost identically but enlarges with a half-pixel
 * shift, and region crops are mostly enlarged, so this is done here, bit-exact.
 */
function resizeSquare(canvas: RgbImage, size: number): RgbImage {
  const side = canvas.width;
  if (side === size) return canvas; // Pillow returns a copy when the size is unchanged
  const { bounds, weights, taps } = bicubicCoefficients(side, size);
  const source = canvas.data;
  // Only the rows the vertical pass reads go through the horizontal pass, as in Pillow.
  const firstRow = bounds[0]!;
  const rowCount = bounds[2 * size - 2]! + bounds[2 * size - 1]! - firstRow;
  const between = Buffer.allocUnsafe(size * rowCount * 3);
  for (let row = 0; row < rowCount; row++) {
    const rowStart = (row + firstRow) * side * 3;
    for (let x = 0; x < size; x++) {
      convolve(source, rowStart + bounds[2 * x]! * 3, 3, bounds[2 * x + 1]!, weights, x * taps, between, (row * size + x) * 3);
    }
  }
  const output = Buffer.allocUnsafe(size * size * 3);
  for (let y = 0; y < size; y++) {
    const rowStart = (bounds[2 * y]! - firstRow) * size * 3;
    for (let x = 0; x < size; x++) {
      convolve(between, rowStart + x * 3, size * 3, bounds[2 * y + 1]!, weights, y * taps, output, (y * size + x) * 3);
    }
  }
  return { data: output, width: size, height: size };
}

const PRECISION_BITS = 22; // Pillow's 32 - 8 - 2: sums of 8-bit samples times weights stay within int32

/** One output pixel: `count` RGB samples `stride` bytes apart, weighted, rounded and clipped as Pillow does. */
function convolve(source: Uint8Array, start: number, stride: number, count: number, weights: Int32Array, weightStart: number, target: Buffer, at: number): void {
  let red = 1 << (PRECISION_BITS - 1);
  let green = red;
  let blue = red;
  for (let i = 0, p = start; i < count; i++, p += stride) {
    const weight = weights[weightStart + i]!;
    red += source[p]! * weight;
    green += source[p + 1]! * weight;
    blue += source[p + 2]! * weight;
  }
  target[at] = clip8(red);
  target[at + 1] = clip8(green);
  target[at + 2] = clip8(blue);
}

function clip8(sum: number): number {
  const value = sum >> PRECISION_BITS;
  return value < 0 ? 0 : value > 255 ? 255 : value;
}

/** Keys' cubic convolution kernel with a = -0.5 (Pillow's `bicubic_filter`), support 2. */
function bicubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/**
 * Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: for each output index the
 * first input index, the number of taps, and the fixed-point weights (`taps` slots per output).
 * The arithmetic follows Pillow's operation for operation, so every weight is the same integer.
 */
function bicubicCoefficients(inSize: number, outSize: number): { bounds: Int32Array; weights: Int32Array; taps: number } {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const reciprocal = 1 / filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * taps);
  const raw = new Float64Array(taps);
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(0, Math.trunc(center - support + 0.5));
    const count = Math.min(inSize, Math.trunc(center + support + 0.5)) - first;
    let total = 0;
    for (let i = 0; i < count; i++) {
      raw[i] = bicubic((i + first - center + 0.5) * reciprocal);
      total += raw[i]!;
    }
    for (let i = 0; i < count; i++) {
      const weight = (total !== 0 ? raw[i]! / total : raw[i]!) * (1 << PRECISION_BITS);
      weights[out * taps + i] = Math.trunc(weight < 0 ? weight - 0.5 : weight + 0.5);
    }
    bounds[2 * out] = first;
    bounds[2 * out + 1] = count;
  }
  return { bounds, weights, taps };
}
