/** Synthetic images the tests share. */
import type { RgbImage } from '../../lib/common/rgb-image';
import type { RgbPixels } from '../../lib/llama/session';

/** Busy, unstructured pixels, for comparing resampling with Pillow bit for bit. */
export function patterned(width: number, height: number): RgbImage {
  const data = Buffer.alloc(width * height * 3);
  for (let i = 0; i < data.length; i++) {
    const channel = i % 3;
    const x = Math.floor(i / 3) % width;
    const y = Math.floor(i / 3 / width);
    data[i] = (x * 37 + y * 91 + channel * 53) % 256;
  }
  return { data, width, height };
}

/** Smooth gradients shifted by `seed`: a different seed, a different image of the same size. */
export function seededPattern(width: number, height: number, seed: number): RgbPixels {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 3 + seed * 37) % 256;
      data[i + 1] = (y * 5 + seed * 11) % 256;
      data[i + 2] = ((x ^ y) + seed * 101) % 256;
    }
  }
  return { data, width, height };
}
