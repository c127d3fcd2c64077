/**
 * The one image type that crosses layers: decoded 8-bit RGB pixels.
 */

/**
 * An 8-bit RGB image: `width * height * 3` bytes, rows top to bottom, pixels interleaved R, G, B.
 * What this package returns holds a Buffer (`RgbImage`); what it takes may hold any Uint8Array
 * (`RgbImage<Uint8Array>`).
 */
export interface RgbImage<Data extends Uint8Array = Buffer> {
  readonly data: Data;
  readonly width: number;
  readonly height: number;
}
