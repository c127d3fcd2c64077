/** Command-line values shared by the benches. */
import { SHAPES, type Shape } from './models';

export function shapeOption(text: string): Shape {
  if (!SHAPES.includes(text as Shape)) throw new RangeError(`--shape must be one of ${SHAPES.join(', ')}`);
  return text as Shape;
}

export function positiveInteger(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`--${name} must be a positive integer`);
  return n;
}
