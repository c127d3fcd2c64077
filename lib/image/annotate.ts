/**
 * Pictures of what the model looked at: the region of interest drawn on the picture the user gave.
 *
 * The drawing is an SVG overlay composited with sharp (librsvg renders it). The frame and the
 * label's background are rectangles on whole pixels with anti-aliasing off, so they cover exactly
 * the pixels {@link regionLayout} names and nothing else; only the label's text depends on fonts
 * being installed, and it is clipped to the label, so a system without fonts still gets the frame
 * and a plain label tab.
 */
import sharp from 'sharp';

import type { PixelRect } from './geometry';
import { loadImage, type ImageInput } from './image';
import { optionsObject } from '../common/validate';

/** The frame's default colour: a saturated red-pink that stands out on most photos. */
export const REGION_COLOUR = '#ff2d55';

/** The default label. */
export const REGION_LABEL = 'region of interest';

/** Options of {@link drawRegion}. */
export interface DrawRegionOptions {
  /** The frame and label colour, as `#rrggbb` (default {@link REGION_COLOUR}). */
  colour?: string;
  /** The label's text, or `''` for no label (default {@link REGION_LABEL}). */
  label?: string;
}

/** Where {@link drawRegion} draws, in the image's pixels (`right`/`bottom` exclusive). */
export interface RegionLayout {
  /** The frame's outer edge: the region clamped to the image; null when nothing of it is in the image. */
  readonly frame: PixelRect | null;
  /** The frame's line width; the line runs inside the region, so the region's own pixels are the ones covered. */
  readonly lineWidth: number;
  /** The label tab: above the frame's top-left corner, or inside it when there is no room above; null without a label. */
  readonly label: PixelRect | null;
  readonly fontSize: number;
}

/** Average glyph advance as a fraction of the font size, for sans-serif text (DejaVu Sans is ~0.6). */
const GLYPH_WIDTH = 0.6;

/**
 * Where the frame and label go for a region on a `width` x `height` image. Sizes scale with the
 * image, so the drawing looks alike on a thumbnail and on a photo.
 */
export function regionLayout(width: number, height: number, pixels: PixelRect, label: string = REGION_LABEL): RegionLayout {
  const short = Math.min(width, height);
  const lineWidth = Math.max(2, Math.round(short / 150));
  const fontSize = Math.min(64, Math.max(10, Math.round(short * 0.04)));
  const left = clamp(pixels.left, 0, width);
  const top = clamp(pixels.top, 0, height);
  const right = clamp(pixels.right, 0, width);
  const bottom = clamp(pixels.bottom, 0, height);
  const frame = right > left && bottom > top ? { left, top, right, bottom } : null;

  let labelRect: PixelRect | null = null;
  const tabHeight = Math.round(fontSize * 1.5);
  if (label.length > 0 && tabHeight <= height) {
    const padding = Math.round(fontSize * 0.4);
    const tabWidth = Math.min(width, Math.ceil(label.length * fontSize * GLYPH_WIDTH) + 2 * padding);
    const x = Math.min(frame?.left ?? 0, width - tabWidth);
    const anchor = frame?.top ?? 0;
    const y = anchor >= tabHeight ? anchor - tabHeight : anchor;
    labelRect = { left: x, top: y, right: x + tabWidth, bottom: y + tabHeight };
  }
  return { frame, lineWidth, label: labelRect, fontSize };
}

/**
 * The image with the region framed and labelled, as PNG bytes of the image's own size. `pixels`
 * is the region in the image's pixels, as `AskResult.roi.pixels` gives it; the image is
 * read as {@link loadImage} reads it (upright by its EXIF orientation), which is the frame those
 * pixels are in.
 *
 * @throws ChainOfSpotError `ERR_IMAGE` when the image cannot be read; TypeError / RangeError for
 *   bad options.
 */
export async function drawRegion(image: ImageInput, pixels: PixelRect, options?: DrawRegionOptions): Promise<Buffer> {
  const opts = optionsObject(options);
  const colour = opts.colour ?? REGION_COLOUR;
  if (typeof colour !== 'string' || !/^#[0-9a-f]{6}$/i.test(colour)) throw new TypeError(`colour must be a '#rrggbb' string, got ${String(colour)}`);
  const label = opts.label ?? REGION_LABEL;
  if (typeof label !== 'string') throw new TypeError('label must be a string');
  for (const key of ['left', 'top', 'right', 'bottom'] as const) {
    if (typeof pixels?.[key] !== 'number' || !Number.isFinite(pixels[key])) throw new TypeError(`pixels.${key} must be a finite number`);
  }
  const rgb = await loadImage(image, { maxPixels: Infinity });
  const layout = regionLayout(rgb.width, rgb.height, pixels, label);
  const overlay = Buffer.from(overlaySvg(rgb.width, rgb.height, layout, colour, label));
  const raw = { width: rgb.width, height: rgb.height, channels: 3 } as const;
  const composited = await sharp(rgb.data, { raw })
    .composite([{ input: overlay, left: 0, top: 0, limitInputPixels: false }])
    .raw()
    .toBuffer({ resolveWithObject: true });
  // Compositing adds an alpha channel (all opaque here); the PNG is RGB like the input.
  return sharp(composited.data, { raw: { ...raw, channels: composited.info.channels } }).removeAlpha().png().toBuffer();
}

function overlaySvg(width: number, height: number, layout: RegionLayout, colour: string, label: string): string {
  const parts: string[] = [];
  const { frame, lineWidth, label: tab } = layout;
  if (frame) {
    const { left, top, right, bottom } = frame;
    let path = `M${left} ${top}H${right}V${bottom}H${left}Z`;
    // The hole, unless the frame is too small for one (then the line fills it).
    if (right - left > 2 * lineWidth && bottom - top > 2 * lineWidth) {
      path += `M${left + lineWidth} ${top + lineWidth}V${bottom - lineWidth}H${right - lineWidth}V${top + lineWidth}Z`;
    }
    parts.push(`<path d="${path}" fill="${colour}" fill-rule="evenodd"/>`);
  }
  if (tab) {
    const { left, top, right, bottom } = tab;
    const rect = `x="${left}" y="${top}" width="${right - left}" height="${bottom - top}"`;
    parts.push(
      `<clipPath id="tab"><rect ${rect}/></clipPath>`,
      `<rect ${rect} fill="${colour}"/>`,
      `<text x="${left + Math.round(layout.fontSize * 0.4)}" y="${(top + bottom) / 2}" dominant-baseline="central" clip-path="url(#tab)" ` +
        `font-family="DejaVu Sans, Verdana, Arial, Helvetica, sans-serif" font-size="${layout.fontSize}" fill="#ffffff">${escapeXml(label)}</text>`,
    );
  }
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" shape-rendering="crispEdges">` +
    `${parts.join('')}</svg>`
  );
}

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.round(value)));
}
