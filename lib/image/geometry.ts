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

