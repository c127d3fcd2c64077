/** Synthetic images the tests share. */
import type { RgbImage } from '../../lib/common/rgb-image';

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
