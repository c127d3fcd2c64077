/**
 * Image input, and the reference's image preparation: the original padded to a square, and the
 * region of interest cropped from that square, padded to a square again and zoomed to the
 * projector's resolution. Pixels travel as raw RGB buffers between steps: nothing is re-encoded.
 */
import sharp from 'sharp';
import { ChainOfSpotError } from '../common/errors';
import { finiteCoordinates, orderedBox, paddedSquare, referenceCropRect, roundHalfEven, type Box, type PixelRect } from './geometry';
import { padCropResize } from './pixel-pool';
import { flatSquare, orientPixels } from './pixels';
import { assertPositiveInteger, booleanOption, integerOption, optionsObject } from '../common/validate';

import type { RgbImage } from '../common/rgb-image';

/** Decoded pixels: 8-bit, 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA) interleaved channels. */
export interface RawImageInput {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 2 | 3 | 4;
  /**
   * The EXIF orientation (1 to 8) of these pixels as stored, as an encoded image would carry it:
   * applied as that image's would be (default 1, upright).
   */
  readonly orientation?: number;
}

/**
 * What {@link loadImage} accepts: a file path, the bytes of an encoded image (JPEG, PNG, WebP, GIF,
 * TIFF, AVIF, SVG...), a sharp instance (used as configured, on a clone), or decoded pixels.
 */
export type ImageInput = string | Uint8Array | sharp.Sharp | RawImageInput;

/** Options of {@link loadImage}. */
export interface LoadImageOptions {
  /**
   * The most pixels (width x height) an image may have; larger ones are rejected before they are
   * decoded. `Infinity` turns the limit off. Default {@link DEFAULT_MAX_PIXELS}.
   */
  readonly maxPixels?: number;
  /**
   * Turn the image upright by its EXIF orientation (default true). False keeps the pixels as
   * stored, as PIL's `Image.open` does and as the reference therefore saw them (reference mode).
   */
  readonly applyOrientation?: boolean;
}

/**
 * The default pixel limit: 50 megapixels, above the largest common camera and phone photos, and
 * low enough that the padded square (max(W, H)² x 3 bytes, as large as the reference's) stays in
 * the hundreds of megabytes for ordinary aspect ratios.
 */
export const DEFAULT_MAX_PIXELS = 50_000_000;

/** A `maxPixels` option, checked: a positive integer, or `Infinity` for no limit. */
export function maxPixelsOption(value: unknown): number {
  return value === Infinity ? Infinity : integerOption(value, 'maxPixels', 1, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_PIXELS);
}

export { PAD_COLOUR } from './pixels';
export { referenceCropRect } from './geometry';

/**
 * How far outside the padded square a box may reach, in units of its side. Beyond the square the
 * crop is black and its canvas grows with the box, so this bounds the memory a box can cost
 * (at most (3 x side)² pixels).
 */
const BOX_REACH = { min: -1, max: 2 } as const;

/**
 * Loads an image as 8-bit RGB, the way the reference's `Image.open(...).convert('RGB')` sees it,
 * with a few deliberate differences for real-world input:
 * - an embedded ICC profile is ignored, as PIL ignores it: the model was trained on the stored
 *   values, not colour-managed ones;
 * - the EXIF orientation is applied (PIL's `open` ignores it; a photo should be seen upright),
 *   unless `applyOrientation` is false;
 * - alpha is dropped, not composited, as `convert('RGB')` does: transparent pixels keep the colour
 *   stored under them;
 * - grey becomes RGB by copying the grey level; CMYK becomes sRGB through its ICC profile (or a
 *   standard CMYK profile), not PIL's naive formula;
 * - 16-bit images are scaled to 8 bits (PIL clips 16-bit grey to 255);
 * - an animation gives its first frame;
 * - a damaged or truncated file is rejected (sharp `failOn: 'error'`) rather than decoded partly,
 *   while a file with mere warnings (stray bytes between JPEG markers, say) is still accepted.
 *
 * A sharp instance is used as its creator configured it (its own `failOn`, pixel limit, pages and
 * ICC handling), on a clone, with orientation, alpha, colour and the first frame handled as above;
 * its pixel count is checked after decoding.
 *
 * @throws TypeError / RangeError for an input of the wrong type, or bad options.
 * @throws ChainOfSpotError `ERR_IMAGE` when the image cannot be read or decoded, is empty, has no
 *   pixels, or has more than `maxPixels` pixels; the message says why and what to do.
 */
export async function loadImage(input: ImageInput, options?: LoadImageOptions): Promise<RgbImage> {
  return (await loadImageWithOrientation(input, options)).image;
}

/**
 * {@link loadImage}, also telling the input's EXIF orientation (1 when it has none), so that the
 * image can be turned into the other orientation mode later with {@link reorient}.
 * @internal
 */
export async function loadImageWithOrientation(input: ImageInput, options?: LoadImageOptions): Promise<{ image: RgbImage; orientation: number }> {
  const { maxPixels: limit, applyOrientation: apply } = optionsObject(options);
  const maxPixels = maxPixelsOption(limit);
  const applyOrientation = booleanOption(apply, 'applyOrientation', true);
  const source = toPipeline(input, maxPixels);
  // Raw pixels carry no EXIF: their orientation is the input's, applied here.
  const rawOrientation = isRaw(input) ? orientationOf(input) : undefined;
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  let orientation: number;
  try {
    // One instance (a clone of a caller's): a stream input is buffered once and read twice.
    orientation = rawOrientation ?? (await source.metadata()).orientation ?? 1;
    decoded = await (applyOrientation && rawOrientation === undefined ? source.autoOrient() : source)
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw decodeError(error, input, maxPixels);
  }
  const frame = firstFrame(decoded.data, decoded.info);
  if (frame.width * frame.height > maxPixels) throw tooManyPixels(maxPixels, frame);
  const image = applyOrientation && rawOrientation !== undefined ? orientPixels(frame, rawOrientation, false) : frame;
  return { image, orientation };
}

function isRaw(input: ImageInput): input is RawImageInput {
  return typeof input === 'object' && input !== null && !(input instanceof Uint8Array) && !isSharp(input);
}

function orientationOf(input: RawImageInput): number {
  return integerOption(input.orientation, 'raw input orientation', 1, 8, 1);
}

/**
 * An image loaded with its EXIF `orientation` applied or not (`applied`), as it would have been
 * loaded the other way: turned upright (`applied` false) or back as stored (`applied` true). The
 * pixels are only moved, so this equals decoding again with the other `applyOrientation` (tested
 * for all eight orientations). An image without orientation comes back as it is.
 * @internal
 */
export function reorient(image: RgbImage, orientation: number, applied: boolean): RgbImage {
  assertRgbImage(image);
  return orientPixels(image, orientation, applied);
}

/**
 * The original image as the model sees it: padded to a centred square of the pad colour
 * (`expand2square`), then resized to `size` x `size` with Pillow's bicubic filter, bit for bit
 * (the reference's CLIP image processor resizes with it). The result is what the projector takes
 * before normalisation.
 *
 * The work (a max(W, H)² canvas and a convolution over it) runs on a worker thread: a few
 * milliseconds for a 640-pixel image, a few hundred for a 12-megapixel photo.
 *
 * @param size the projector's image size (336 for LLaVA-1.5).
 * @param maxPixels the most pixels the padded square may have (default {@link DEFAULT_MAX_PIXELS}):
 *   an extreme aspect ratio makes a small image a huge square.
 * @throws TypeError / RangeError for a malformed image or a size that is not a positive integer.
 * @throws ChainOfSpotError `ERR_IMAGE` when the padded square has more than `maxPixels` pixels.
 */
export async function prepareOriginal(image: RgbImage, size: number, maxPixels = DEFAULT_MAX_PIXELS): Promise<RgbImage> {
  assertRgbImage(image);
  assertPositiveInteger(size, 'size');
  const { side } = paddedSquare(image.width, image.height);
  return squareToSize(image, { left: 0, top: 0, right: side, bottom: side }, size, maxPixels);
}

/**
 * The region of interest zoomed as the reference does: the image padded to a square (as in
 * {@link prepareOriginal}), the box's rectangle cropped from it (see {@link cropRect}; any part of
 * it outside the padded square is black, as PIL's crop fills it), the crop padded to a centred
 * square of the pad colour again, and resized to `size` x `size` with Pillow's bicubic filter, bit
 * for bit, as in {@link prepareOriginal}.
 *
 * @param box the region, as fractions of the padded square; each coordinate within [-1, 2].
 * @param size the projector's image size (336 for LLaVA-1.5).
 * @param maxPixels the most pixels the crop's square may have (default {@link DEFAULT_MAX_PIXELS}).
 * @throws TypeError / RangeError for a malformed image or box, or a size that is not a positive integer.
 * @throws ChainOfSpotError `ERR_IMAGE` when the crop's square has more than `maxPixels` pixels.
 */
export async function prepareRegion(image: RgbImage, box: Box, size: number, maxPixels = DEFAULT_MAX_PIXELS): Promise<RgbImage> {
  assertRgbImage(image);
  assertPositiveInteger(size, 'size');
  const { side } = paddedSquare(image.width, image.height);
  return squareToSize(image, cropRect(box, side), size, maxPixels);
}

/**
 * The region of interest zoomed exactly as the reference zooms it for a box read as it reads it
 * (`parseReferenceBox`): the rectangle Pillow crops from the padded square (see
 * {@link referenceCropRect}: any size, black beyond the square), padded to a centred square of the
 * pad colour and resized as in {@link prepareRegion}. Where Pillow's crop raises (reversed corners,
 * NaN or infinite coordinates, a crop too large for Pillow) this is the whole padded image, as the
 * reference's `except` leaves it; an empty crop (zero width or height) is a flat square of the pad colour.
 *
 * @param box the box as read, coordinates in any order and range.
 * @param maxPixels the most pixels the crop's square may have (default {@link DEFAULT_MAX_PIXELS});
 *   a box far outside [0, 1] makes a huge, mostly black crop, which the reference computes too:
 *   raise this (or pass `Infinity`) to match it there.
 * @throws TypeError / RangeError for a malformed image or box, or a size that is not a positive integer.
 * @throws ChainOfSpotError `ERR_IMAGE` when the crop's square has more than `maxPixels` pixels.
 */
export async function prepareReferenceRegion(image: RgbImage, box: Box, size: number, maxPixels = DEFAULT_MAX_PIXELS): Promise<RgbImage> {
  assertRgbImage(image);
  assertPositiveInteger(size, 'size');
  const { side } = paddedSquare(image.width, image.height);
  const rect = referenceCropRect(box, side) ?? { left: 0, top: 0, right: side, bottom: side };
  return squareToSize(image, rect, size, maxPixels);
}

/**
 * {@link boxToPixels} for a box read as the reference reads it: the rectangle of
 * {@link referenceCropRect} in the original image's pixels, clamped to the image; the whole image
 * where Pillow's crop raises (and the reference zooms into the whole image). An empty crop, or one
 * wholly in the padding or beyond the square, gives an empty rectangle.
 *
 * @throws TypeError when a coordinate is not a number; TypeError / RangeError when a size is not a positive integer.
 */
export function referenceBoxToPixels(box: Box, width: number, height: number): PixelRect {
  const square = paddedSquare(width, height);
  const rect = referenceCropRect(box, square.side);
  if (rect === null) return { left: 0, top: 0, right: width, bottom: height };
  return clampToImage(rect, width, height);
}

/** `rect` of the padded square, on its own square, resized: after checking that square's size. */
async function squareToSize(image: RgbImage, rect: PixelRect, size: number, maxPixels: number): Promise<RgbImage> {
  if (rect.right <= rect.left || rect.bottom <= rect.top) return flatSquare(size);
  const side = Math.max(rect.right - rect.left, rect.bottom - rect.top);
  if (side * side > maxPixels) {
    throw imageError(
      `the image is ${image.width}x${image.height}: padded to a square, as LLaVA sees it, it is ${side}x${side} pixels, ` +
        `over the limit of ${maxPixels}; crop it to a less extreme aspect ratio, or raise maxPixels`,
    );
  }
  try {
    return await padCropResize(image, rect, size);
  } catch (error) {
    throw imageError(`the image could not be prepared: ${(error as Error).message}`, error);
  }
}

/**
 * The pixels the reference crops from the padded square of `side` pixels for a box: each edge
 * `side * coordinate` rounded half to even (Python's `round`, which PIL's `Image.crop` applies).
 *
 * Two choices where the reference has none that works: a reversed box is read with its corners
 * swapped (Pillow raises, and the reference then zooms into the whole padded image), and a
 * rectangle that rounds to zero width or height is widened to one pixel (towards the inside of the
 * square), since an empty crop cannot be resized.
 *
 * @throws TypeError when a coordinate is not a number; RangeError when one is not finite or is
 *   outside [-1, 2], or when `side` is not a positive integer.
 */
export function cropRect(box: Box, side: number): PixelRect {
  assertPositiveInteger(side, 'side');
  for (const value of finiteCoordinates(box)) {
    if (value < BOX_REACH.min || value > BOX_REACH.max) {
      throw new RangeError(`box coordinates must be within [${BOX_REACH.min}, ${BOX_REACH.max}], got ${value}`);
    }
  }
  const { left, top, right, bottom } = orderedBox(box, (value) => roundHalfEven(side * value));
  const [x0, x1] = atLeastOnePixel(left, right, side);
  const [y0, y1] = atLeastOnePixel(top, bottom, side);
  return { left: x0, top: y0, right: x1, bottom: y1 };
}

/**
 * The box's crop (see {@link cropRect}) in the ORIGINAL image's pixels, clamped to the image: to
 * draw the region on the picture the user gave. A box wholly in the padding gives an empty rectangle.
 *
 * @throws as {@link cropRect}, and TypeError / RangeError when a size is not a positive integer.
 */
export function boxToPixels(box: Box, width: number, height: number): PixelRect {
  return clampToImage(cropRect(box, paddedSquare(width, height).side), width, height);
}

/** A rectangle of the padded square in the original image's pixels, clamped to the image. */
function clampToImage(rect: PixelRect, width: number, height: number): PixelRect {
  const square = paddedSquare(width, height);
  const clampX = (x: number): number => Math.min(width, Math.max(0, x - square.left));
  const clampY = (y: number): number => Math.min(height, Math.max(0, y - square.top));
  return { left: clampX(rect.left), top: clampY(rect.top), right: clampX(rect.right), bottom: clampY(rect.bottom) };
}

/**
 * A box given as fractions of the image itself (not of a padded square) in the image's pixels:
 * edges rounded outwards, at least one pixel wide and high.
 *
 * @throws TypeError when a coordinate is not a number; RangeError when one is outside [0, 1] or
 *   the box is reversed, or a size is not a positive integer.
 */
export function imageBoxToPixels(box: Box, width: number, height: number): PixelRect {
  assertPositiveInteger(width, 'width');
  assertPositiveInteger(height, 'height');
  const [left, top, right, bottom] = finiteCoordinates(box);
  if (![left, top, right, bottom].every((value) => value >= 0 && value <= 1) || right < left || bottom < top) {
    throw new RangeError(`box must be ordered fractions of the image within [0, 1], got ${JSON.stringify(box)}`);
  }
  const [x0, x1] = atLeastOnePixel(Math.floor(left * width), Math.ceil(right * width), width);
  const [y0, y1] = atLeastOnePixel(Math.floor(top * height), Math.ceil(bottom * height), height);
  return { left: x0, top: y0, right: x1, bottom: y1 };
}

/**
 * The region of interest for encoders that choose their own resolution: the box's pixels
 * ({@link imageBoxToPixels}) cropped from the image and enlarged with a bicubic filter, aspect
 * ratio kept, to about `pixels` pixels (the area the whole image was seen at), so that the
 * encoder gives the region about as many tokens as the whole image; never shrunk.
 *
 * @param box the region, as fractions of the image.
 * @param pixels the area to enlarge the crop to.
 * @param maxPixels the most pixels the result may have (default {@link DEFAULT_MAX_PIXELS}).
 * @throws as {@link imageBoxToPixels}; ChainOfSpotError `ERR_IMAGE` when the crop cannot be made.
 */
export async function zoomRegion(image: RgbImage, box: Box, pixels: number, maxPixels = DEFAULT_MAX_PIXELS): Promise<RgbImage> {
  assertRgbImage(image);
  const rect = imageBoxToPixels(box, image.width, image.height);
  const width = rect.right - rect.left;
  const height = rect.bottom - rect.top;
  const scale = Math.max(1, Math.sqrt(Math.min(pixels, maxPixels) / (width * height)));
  const size = { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
  try {
    const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
      .extract({ left: rect.left, top: rect.top, width, height })
      .resize(size.width, size.height, { kernel: 'cubic', fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height };
  } catch (error) {
    throw imageError(`the region could not be zoomed: ${(error as Error).message}`, error);
  }
}

/** Encodes an RGB image as PNG, to show a prepared image (the zoomed region, say) to people. */
export async function encodePng(image: RgbImage): Promise<Buffer> {
  assertRgbImage(image);
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}

function atLeastOnePixel(start: number, end: number, side: number): [number, number] {
  if (end > start) return [start, end];
  return end < side ? [start, end + 1] : [start - 1, end];
}

/** Whether an input object is a sharp instance. @internal */
export function isSharp(input: object): input is sharp.Sharp {
  return typeof (input as sharp.Sharp).clone === 'function' && typeof (input as sharp.Sharp).toBuffer === 'function';
}

/** A sharp pipeline for any input; argument mistakes throw here, before any work. */
function toPipeline(input: ImageInput, maxPixels: number): sharp.Sharp {
  const limitInputPixels = maxPixels === Infinity ? false : maxPixels;
  const decoding: sharp.SharpOptions = { failOn: 'error', limitInputPixels, pages: 1, page: 0, ignoreIcc: true };
  if (typeof input === 'string') {
    if (input === '') throw new TypeError('input must be a file path, image bytes, a sharp instance or { data, width, height, channels }; got an empty path');
    return sharp(input, decoding);
  }
  if (input instanceof Uint8Array) {
    if (input.byteLength === 0) throw imageError('the image data is empty (0 bytes): pass the bytes of an encoded image (JPEG, PNG, WebP, GIF, ...)');
    return sharp(input, decoding);
  }
  if (typeof input !== 'object' || input === null) {
    throw new TypeError(`input must be a file path, image bytes, a sharp instance or { data, width, height, channels }; got ${input === null ? 'null' : typeof input}`);
  }
  if (isSharp(input)) return input.clone();
  return sharp(checkedRaw(input), { raw: { width: input.width, height: input.height, channels: input.channels }, limitInputPixels });
}

/** Checks decoded pixels: types are argument mistakes, an empty or mis-sized image is ERR_IMAGE. */
function checkedRaw(input: RawImageInput): Uint8Array {
  const { data, width, height, channels } = input;
  if (!(data instanceof Uint8Array)) throw new TypeError('raw input data must be a Buffer or Uint8Array of 8-bit samples');
  for (const [name, value] of [['width', width], ['height', height]] as const) {
    if (typeof value !== 'number') throw new TypeError(`raw input ${name} must be a number, got ${typeof value}`);
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`raw input ${name} must be a non-negative integer, got ${value}`);
  }
  if (channels !== 1 && channels !== 2 && channels !== 3 && channels !== 4) {
    throw new RangeError(`raw input channels must be 1, 2, 3 or 4, got ${String(channels)}`);
  }
  if (width === 0 || height === 0) throw imageError(`the image has no pixels (${width}x${height}): pass an image at least 1x1`);
  if (data.byteLength !== width * height * channels) {
    throw imageError(`raw image data has ${data.byteLength} bytes but ${width}x${height}x${channels} needs ${width * height * channels}: check width, height and channels`);
  }
  return data;
}

/** Keeps the first frame when a (user-configured) sharp instance decoded several, stacked. */
function firstFrame(data: Buffer, info: sharp.OutputInfo): RgbImage {
  const frameHeight = info.pageHeight ?? info.height;
  if (frameHeight >= info.height) return { data, width: info.width, height: info.height };
  return { data: data.subarray(0, info.width * frameHeight * 3), width: info.width, height: frameHeight };
}

function assertRgbImage(image: RgbImage): void {
  if (typeof image !== 'object' || image === null || !(image.data instanceof Uint8Array)) {
    throw new TypeError('image must be { data: Buffer, width, height } of RGB pixels, as loadImage returns');
  }
  assertPositiveInteger(image.width, 'image.width');
  assertPositiveInteger(image.height, 'image.height');
  if (image.data.byteLength !== image.width * image.height * 3) {
    throw new RangeError(`image.data has ${image.data.byteLength} bytes, but ${image.width}x${image.height} RGB needs ${image.width * image.height * 3}`);
  }
}

function imageError(message: string, cause?: unknown): ChainOfSpotError {
  return new ChainOfSpotError('ERR_IMAGE', message, cause === undefined ? undefined : { cause });
}

function tooManyPixels(maxPixels: number, image?: { width: number; height: number }): ChainOfSpotError {
  const size = image ? ` (${image.width}x${image.height} = ${image.width * image.height})` : '';
  return imageError(`the image has more pixels${size} than the limit of ${maxPixels}: downscale it, or raise the maxPixels option`);
}

/** Says, in words, why sharp could not decode an input and what to do about it. */
function decodeError(error: unknown, input: ImageInput, maxPixels: number): ChainOfSpotError {
  const detail = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(detail)) return tooManyPixels(maxPixels);
  if (/file is missing/i.test(detail)) {
    const file = typeof input === 'string' ? ` ${JSON.stringify(input)}` : '';
    return imageError(`cannot read the image file${file}: it does not exist; check the path`, error);
  }
  if (/unsupported image format/i.test(detail)) {
    return imageError('the input is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, AVIF, SVG): check that it is an image file', error);
  }
  return imageError(`the image could not be decoded (${detail.split('\n')[0]}): the file is damaged or truncated; re-export or re-download it`, error);
}
