/**
 * The geometry of LLaVA-1.5's view of an image: the square it is padded to, boxes as fractions of
 * that square, and rectangles in pixels. Pure functions, no I/O; everything above image/ that
 * speaks of boxes (the procedure's box format, the crop) builds on these.
 */
import { assertPositiveInteger } from '../common/validate';

/**
 * A region, as fractions in [0, 1] of the image padded to a square (see {@link paddedSquare}):
 * `left`/`right` along the width, `top`/`bottom` along the height, `left <= right`, `top <= bottom`.
 * This is the frame the reference's boxes live in, because LLaVA-1.5 sees the padded square.
 */
export interface Box {
  readonly left: number;
  readonly top: number;
  readonly right: number;
  readonly bottom: number;
}

/** A width and height in pixels. */
export interface ImageSize {
  readonly width: number;
  readonly height: number;
}

/**
 * Where an image sits inside the square it is padded to: the square's `side` = max(width, height),
 * and the offset of the image's top-left corner in it.
 */
export interface PaddedSquare {
  readonly side: number;
  readonly left: number;
  readonly top: number;
}

/**
 * A rectangle in pixels: `left`/`top` inclusive, `right`/`bottom` exclusive (PIL's crop box), so
 * its width is `right - left`. Corners may lie outside the image they refer to.
 */
export interface PixelRect {
  readonly left: number;
  readonly top: number;
  readonly right: number;
  readonly bottom: number;
}

/** The whole padded square: `[0.0, 0.0, 1.0, 1.0]`. */
export const FULL_BOX: Box = Object.freeze({ left: 0, top: 0, right: 1, bottom: 1 });

/**
 * The square an image of `width` x `height` pixels is padded to, centred as the reference's
 * `expand2square` does: side = max(width, height), offset `(side - width) // 2` horizontally or
 * `(side - height) // 2` vertically.
 *
 * @throws TypeError / RangeError when a size is not a positive integer.
 */
export function paddedSquare(width: number, height: number): PaddedSquare {
  assertPositiveInteger(width, 'width');
  assertPositiveInteger(height, 'height');
  const side = Math.max(width, height);
  return { side, left: Math.floor((side - width) / 2), top: Math.floor((side - height) / 2) };
}

/**
 * A box with its corners put in order (left <= right, top <= bottom) and each coordinate passed
 * through `map`. Shared by the box parser and the crop, which reads a reversed box the same way.
 * @internal
 */
export function orderedBox(box: Box, map: (value: number) => number = (value) => value): Box {
  return {
    left: map(Math.min(box.left, box.right)),
    top: map(Math.min(box.top, box.bottom)),
    right: map(Math.max(box.left, box.right)),
    bottom: map(Math.max(box.top, box.bottom)),
  };
}

/**
 * The four coordinates of a box, checked to be numbers.
 * @internal
 */
export function coordinates(box: Box): [number, number, number, number] {
  if (typeof box !== 'object' || box === null) throw new TypeError('box must be an object { left, top, right, bottom }');
  const values: [number, number, number, number] = [box.left, box.top, box.right, box.bottom];
  if (!values.every((value) => typeof value === 'number')) {
    throw new TypeError('box.left, box.top, box.right and box.bottom must be numbers');
  }
  return values;
}

/**
 * Checks a box's coordinates are numbers (TypeError) and finite (RangeError); returns them.
 * @internal
 */
export function finiteCoordinates(box: Box): [number, number, number, number] {
  const values = coordinates(box);
  if (!values.every(Number.isFinite)) throw new RangeError(`box coordinates must be finite, got [${values.join(', ')}]`);
  return values;
}


/** Pillow's `MAX_IMAGE_PIXELS` (9.x/10.x): `Image.crop` refuses a crop over twice as many pixels. */
const PIL_MAX_IMAGE_PIXELS = 89_478_485;
/** The C `int` range Pillow's core `crop` parses its corners into. */
const C_INT = { min: -(2 ** 31), max: 2 ** 31 - 1 } as const;
/** Pillow's image allocation fails (MemoryError) for a width above `INT_MAX / 4 - 1`. */
const PIL_MAX_WIDTH = Math.floor(C_INT.max / 4) - 1;

/**
 * The rectangle the reference crops from the padded square of `side` pixels for a box read as the
 * reference reads it, exactly as Pillow 9/10's `Image.crop((side * l, side * t, side * r, side * b))`
 * does, or `null` where that call raises (and the reference, catching it, zooms into the whole
 * padded image instead):
 * - reversed corners (`r < l` or `b < t`, on the unrounded products): `ValueError`, so `null`;
 * - a coordinate that is NaN (`ValueError`) or infinite (`OverflowError`): `null`;
 * - otherwise each product is rounded half to even (Python's `round`); a crop of more than
 *   2 x 89,478,485 pixels (Pillow's decompression-bomb limit), a corner outside the C `int` range
 *   (`OverflowError`) or a width over 536,870,910 (`MemoryError`): `null`;
 * - anything else is cropped as given: corners beyond the square are allowed (Pillow fills what
 *   lies outside the image with black) and the rectangle may be empty (zero width or height, when
 *   the corners round to the same pixel), which `expand2square` then turns into a flat square of
 *   the pad colour.
 *
 * @throws TypeError when a coordinate is not a number; RangeError when `side` is not a positive integer.
 */
export function referenceCropRect(box: Box, side: number): PixelRect | null {
  assertPositiveInteger(side, 'side');
  const [left, top, right, bottom] = coordinates(box).map((value) => side * value) as [number, number, number, number];
  if (right < left || bottom < top) return null;
  if (![left, top, right, bottom].every(Number.isFinite)) return null;
  const [x0, y0, x1, y1] = [left, top, right, bottom].map(roundHalfEven) as [number, number, number, number];
  if (Math.abs(x1 - x0) * Math.abs(y1 - y0) > 2 * PIL_MAX_IMAGE_PIXELS) return null;
  if (![x0, y0, x1, y1].every((value) => value >= C_INT.min && value <= C_INT.max)) return null;
  if (x1 - x0 > PIL_MAX_WIDTH) return null;
  return { left: x0, top: y0, right: x1, bottom: y1 };
}

/**
 * Python's `round(x)` on a float: to the nearest integer, halves to even.
 * @internal
 */
export function roundHalfEven(value: number): number {
  const nearest = Math.round(value); // JavaScript rounds halves up
  return (nearest - value === 0.5 && nearest % 2 !== 0 ? nearest - 1 : nearest) + 0; // + 0: no -0
}

/** The intersection over union of two boxes: 0 when they do not overlap or either has no area. */
export function boxIou(a: Box, b: Box): number {
  const width = Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left));
  const height = Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
  const intersection = width * height;
  const union = (a.right - a.left) * (a.bottom - a.top) + (b.right - b.left) * (b.bottom - b.top) - intersection;
  return union > 0 ? intersection / union : 0;
}
