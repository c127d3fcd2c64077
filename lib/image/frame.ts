/**
 * The frame a model reads its image in, as the pinned llama.cpp's mtmd prepares it
 * (tools/mtmd/mtmd-image.cpp), so that a box a model writes in its own frame can be mapped back to
 * the original pixels: the aligned size of dynamic-resolution encoders (Qwen-VL's "smart resize",
 * `calc_size_preserved_ratio`), and the aspect-preserving resize with centred black padding that
 * mtmd then applies to fit an image into that size (`resize` with `PAD_CEIL`). Both are computed
 * in single precision, as the C++ does, so the rounding agrees to the pixel.
 */
import type { ImageSize, PixelRect } from './geometry';

const f = Math.fround;

/** Where the image lies inside its frame: offset and size, in frame pixels. */
export interface Frame {
  readonly width: number;
  readonly height: number;
  /** The image's rectangle in the frame (the rest is padding). */
  readonly content: PixelRect;
}

/**
 * The size a dynamic-resolution encoder resizes an image to: each side a multiple of `align`
 * (patch size x merge), the aspect ratio kept as far as that allows, the area within
 * `[minPixels, maxPixels]` (mtmd's `calc_size_preserved_ratio`, transformers' `smart_resize`).
 */
export function alignedSize(image: ImageSize, align: number, minPixels: number, maxPixels: number): ImageSize {
  const { width, height } = image;
  const byFactor = (round: (x: number) => number) => (x: number): number => round(f(f(x) / align)) * align;
  // std::round on a float rounds half away from zero (values here are positive).
  const roundBy = byFactor((x) => Math.floor(x + 0.5));
  const ceilBy = byFactor(Math.ceil);
  const floorBy = byFactor(Math.floor);
  let w = Math.max(align, roundBy(width));
  let h = Math.max(align, roundBy(height));
  if (maxPixels > 0 && w * h > maxPixels) {
    const beta = f(Math.sqrt(f(f(f(height) * width) / maxPixels)));
    h = Math.max(align, floorBy(f(height / beta)));
    w = Math.max(align, floorBy(f(width / beta)));
  } else if (minPixels > 0 && w * h < minPixels) {
    const beta = f(Math.sqrt(f(f(minPixels) / f(f(height) * width))));
    h = ceilBy(f(height * beta));
    w = ceilBy(f(width * beta));
  }
  return { width: w, height: h };
}

/**
 * How mtmd fits an image into `target` keeping its aspect ratio: scaled by the smaller of the two
 * ratios, each side rounded up (and capped at the target's), centred with the offset rounded down.
 */
export function letterbox(image: ImageSize, target: ImageSize): Frame {
  if (image.width === target.width && image.height === target.height) {
    return { ...target, content: { left: 0, top: 0, right: target.width, bottom: target.height } };
  }
  const scale = Math.min(f(target.width / image.width), f(target.height / image.height));
  const width = Math.min(Math.ceil(f(image.width * scale)), target.width);
  const height = Math.min(Math.ceil(f(image.height * scale)), target.height);
  const left = Math.floor((target.width - width) / 2);
  const top = Math.floor((target.height - height) / 2);
  return { width: target.width, height: target.height, content: { left, top, right: left + width, bottom: top + height } };
}

/** The image itself as the frame (encoders that stretch their tiles, so the frame is the image). */
export function wholeFrame(image: ImageSize): Frame {
  return { width: image.width, height: image.height, content: { left: 0, top: 0, right: image.width, bottom: image.height } };
}

/**
 * A rectangle in frame pixels as fractions of the original image (clamped to it; the padding maps
 * outside and is cut off), or null when nothing of it lies on the image.
 */
export function frameRectToImageFractions(rect: PixelRect, frame: Frame): PixelRect | null {
  const { content } = frame;
  const x = (value: number): number => Math.min(1, Math.max(0, (value - content.left) / (content.right - content.left)));
  const y = (value: number): number => Math.min(1, Math.max(0, (value - content.top) / (content.bottom - content.top)));
  const box = {
    left: x(Math.min(rect.left, rect.right)),
    top: y(Math.min(rect.top, rect.bottom)),
    right: x(Math.max(rect.left, rect.right)),
    bottom: y(Math.max(rect.top, rect.bottom)),
  };
  return box.right > box.left && box.bottom > box.top ? box : null;
}
