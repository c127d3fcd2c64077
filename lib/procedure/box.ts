/**
 * The region box of Chain-of-Spot: what the model answers in turn one, how it is written, how a
 * model's free-form answer is read back, and a grammar that makes the model write it exactly as the
 * reference was trained to. The box's geometry (the padded square it lives in) is image/geometry.ts.
 */
import { coordinates, FULL_BOX, orderedBox, paddedSquare, referenceCropRect, type Box, type ImageSize, type PaddedSquare } from '../image/geometry';

export { paddedSquare, type Box } from '../image/geometry';

/** A box read from the model's answer. */
export interface ModelBox {
  readonly box: Box;
  readonly source: 'model';
}

/** The whole image, used when the model's answer held no usable box. */
export interface FallbackBox {
  readonly box: Box;
  readonly source: 'fallback';
}

/** The box turn two zooms into, and where it came from. */
export type RegionBox = ModelBox | FallbackBox;

/** One number of the reference's format: the repr of Python's `round(x, 3)` for x in [0, 1]. */
const NUMBER_PATTERN = String.raw`(?:0\.0|1\.0|0\.[0-9]{0,2}[1-9])`;

/**
 * A regular expression equivalent to {@link BOX_GRAMMAR}: what the grammar admits, this matches
 * (and nothing else). Every {@link formatBox} output matches it, with or without a leading space.
 */
export const BOX_PATTERN: RegExp = new RegExp(
  String.raw`^ ?\[${NUMBER_PATTERN}, ${NUMBER_PATTERN}, ${NUMBER_PATTERN}, ${NUMBER_PATTERN}\]$`,
);

/**
 * A GBNF grammar (llama.cpp's grammar syntax) admitting exactly the reference's box format: Python's
 * repr of a list of four `round(x, 3)` floats in [0, 1], e.g. `[0.0, 0.072, 0.586, 1.0]`.
 *
 * The leading space is optional, not forbidden: turn one's prompt ends with `ASSISTANT:` and the
 * model writes the separating space itself (its first token is SentencePiece's `▁[`, which decodes
 * to ` [`). Forbidding it would force the unnatural token `[`; requiring it would reject a model that
 * skips it. Once the grammar is complete only end-of-generation can follow. It constrains the
 * format only: `left <= right` is left to {@link parseBox}.
 */
export const BOX_GRAMMAR: string = [
  '# Chain-of-Spot region box: Python repr of [round(l, 3), round(t, 3), round(r, 3), round(b, 3)] in [0, 1].',
  '# The optional leading space is the one the model writes after "ASSISTANT:".',
  'root ::= " "? "[" num ", " num ", " num ", " num "]"',
  'num ::= "0.0" | "1.0" | "0." [0-9]{0,2} [1-9]',
  '',
].join('\n');

/**
 * Writes a box as the reference does (`str()` of a Python list of `round(x, 3)` floats): each
 * value rounded to 3 decimals half-to-even on its exact binary value, printed with the fewest
 * digits but at least one decimal: `[0.0, 0.072, 0.586, 1.0]`.
 *
 * @throws TypeError when a coordinate is not a number; RangeError when one is outside [0, 1].
 */
export function formatBox(box: Box): string {
  const values = coordinates(box);
  for (const value of values) {
    if (!(value >= 0 && value <= 1)) throw new RangeError(`box coordinates must be within [0, 1], got ${value}`);
  }
  return `[${values.map(formatCoordinate).join(', ')}]`;
}

/** Python's `repr(round(x, 3))` for x in [0, 1]. */
function formatCoordinate(value: number): string {
  const rounded = roundTo3(value);
  const text = String(rounded);
  return Number.isInteger(rounded) ? `${text}.0` : text;
}

/**
 * Python's `round(x, 3)`. `toFixed` rounds the exact binary value correctly, except that it breaks
 * exact ties upwards where Python breaks them to even. A double is an exact tie at 3 decimals only
 * when 16x is an odd integer (x = k/16, e.g. 0.0625), so only those need the even rule.
 */
function roundTo3(value: number): number {
  const sixteenths = value * 16;
  if (Number.isInteger(sixteenths) && sixteenths % 2 !== 0) {
    const lower = Math.floor(value * 1000); // exact: 1000 * k/16 = 62.5k
    return (lower % 2 === 0 ? lower : lower + 1) / 1000;
  }
  return Number(value.toFixed(3));
}

// A number as models write them. It may not follow a letter, digit, `_` or `.` (so the 1 of `x1`
// or the tail of `0.5.6` is no number); a sign counts only where it cannot be a range dash (`0.1-0.5`).
const NUMBER_SOURCE = String.raw`(?<![\p{L}\p{N}_.])(?:[-+](?=\.?\d))?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?`;
const NUMBER = new RegExp(NUMBER_SOURCE, 'gu');
// `key: value` / `key = value` / `"key": value` / `key value`, for labelled answers.
const LABELLED = new RegExp(
  String.raw`(?<![\p{L}\p{N}_])(x_?min|y_?min|x_?max|y_?max|x[012]|y[012]|left|top|right|bottom|width|height|[xywh])["']?\s*(?:[:=]\s*)?(${NUMBER_SOURCE})`,
  'giu',
);
// The innermost bracketed group: `[...]`, `(...)` or `{...}`.
const GROUP = /[[({]([^[\](){}]*)[\])}]/g;
// What may stand between the numbers of a bare run: punctuation, brackets, dashes, "to", "and".
const RUN_SEPARATOR = /^(?:[\s,;:()[\]{}\-–]|to|and)*$/iu;

/** A number the model wrote, before it is interpreted. */
interface Written {
  readonly value: number;
  readonly percent: boolean;
}

/**
 * Reads the box the model wrote in turn one, far more leniently than the reference (which `eval`s
 * the answer and gives up on anything but its own format). It never throws on any string.
 *
 * Accepted, in this order of preference:
 * 1. labelled values: `x1=0.1 y1=0.2 x2=0.5 y2=0.6`, `{"xmin": .., "ymin": ..}`, `left/top/right/bottom`,
 *    `x0,y0,x1,y1` (then `x1` is the right edge), or `x, y, w, h`;
 * 2. the first bracketed group `[...]`, `(...)` or `{...}` holding exactly four numbers;
 * 3. the first run of exactly four numbers separated only by punctuation, brackets, `to` or `and`
 *    (so `(x1, y1), (x2, y2)` and bare `0.1 0.2 0.5 0.6` work).
 *
 * The four values are then interpreted as:
 * - percentages, when any has a `%` sign (`45%` is 0.45; all four are then read as percentages);
 * - fractions of the padded square, when all are at most 1, or when the largest is below 2 and one
 *   has a fraction (a slightly overshooting fractional box, clamped below);
 * - otherwise pixels of the ORIGINAL image when `imageSize` is given (what a caller or a model
 *   means by pixels; the padded square is an internal detail), converted to the padded square with
 *   the same centring as {@link paddedSquare}; without `imageSize` such a box is rejected, since
 *   its scale cannot be known.
 *
 * Reversed corners are swapped, values are clamped to [0, 1], and a box that is not finite or has
 * no area (zero width or height after clamping) is rejected: a model that answers a point has not
 * named a region, and zooming into one pixel would only blur.
 *
 * @param text what the model wrote.
 * @param imageSize the original image's size, to read pixel coordinates.
 * @returns the box with `source: 'model'`, or `null` when nothing usable was written.
 * @throws TypeError when `text` is not a string; TypeError / RangeError for a bad `imageSize`.
 */
export function parseBox(text: string, imageSize?: ImageSize): ModelBox | null {
  if (typeof text !== 'string') throw new TypeError(`text must be a string, got ${typeof text}`);
  const square = imageSize === undefined ? undefined : paddedSquareOf(imageSize);
  const written = labelledCorners(text) ?? groupOfFour(text) ?? runOfFour(text);
  if (written === null) return null;
  const box = interpret(written, square);
  return box === null ? null : { box, source: 'model' };
}

/**
 * The four numbers of a box as the model wrote them, in the order {@link parseBox} looks for them
 * (labelled values, then a bracketed group of four, then a run of four), without interpreting
 * them: for families whose boxes are in their own frame and units. Null when there are none.
 */
export function writtenCorners(text: string): [number, number, number, number] | null {
  if (typeof text !== 'string') throw new TypeError(`text must be a string, got ${typeof text}`);
  const written = labelledCorners(text) ?? groupOfFour(text) ?? runOfFour(text);
  return written === null ? null : (written.map((number) => number.value) as [number, number, number, number]);
}

/**
 * {@link parseBox}, falling back to {@link FULL_BOX} with `source: 'fallback'` when the answer held
 * no usable box, which is where the reference ends up too when its crop fails: zooming into the
 * whole image.
 */
export function parseBoxOrFallback(text: string, imageSize?: ImageSize): RegionBox {
  return parseBox(text, imageSize) ?? fallbackBox();
}

/** The whole image as the region, with `source: 'fallback'`. */
export function fallbackBox(): FallbackBox {
  return { box: FULL_BOX, source: 'fallback' };
}

function paddedSquareOf(size: ImageSize): PaddedSquare {
  if (typeof size !== 'object' || size === null) throw new TypeError('imageSize must be an object { width, height }');
  return paddedSquare(size.width, size.height);
}

function numbersIn(text: string): Written[] {
  return Array.from(text.matchAll(NUMBER), (match) => toWritten(match[0]));
}

function toWritten(token: string): Written {
  const percent = token.endsWith('%');
  return { value: Number.parseFloat(percent ? token.slice(0, -1) : token), percent };
}

/** Corners from labelled values, or null unless all four edges can be told. */
function labelledCorners(text: string): Written[] | null {
  const found = new Map<string, Written>();
  for (const match of text.matchAll(LABELLED)) {
    const key = match[1]!.toLowerCase().replace('_', '');
    if (!found.has(key)) found.set(key, toWritten(match[2]!));
  }
  if (found.size < 4) return null;
  // With an x0 the corners are x0/x1; otherwise x1/x2.
  const zeroBased = found.has('x0') || found.has('y0');
  const pick = (...keys: string[]): Written | undefined => keys.map((key) => found.get(key)).find((value) => value !== undefined);
  const left = pick('xmin', 'left', zeroBased ? 'x0' : 'x1', 'x');
  const top = pick('ymin', 'top', zeroBased ? 'y0' : 'y1', 'y');
  const right = pick('xmax', 'right', zeroBased ? 'x1' : 'x2') ?? extent(left, pick('width', 'w'));
  const bottom = pick('ymax', 'bottom', zeroBased ? 'y1' : 'y2') ?? extent(top, pick('height', 'h'));
  return left && top && right && bottom ? [left, top, right, bottom] : null;
}

/** The far edge from a start and a length (`x + w`), in the units they were written in. */
function extent(start: Written | undefined, length: Written | undefined): Written | undefined {
  if (start === undefined || length === undefined) return undefined;
  return { value: start.value + length.value, percent: start.percent || length.percent };
}

function groupOfFour(text: string): Written[] | null {
  for (const match of text.matchAll(GROUP)) {
    const numbers = numbersIn(match[1]!);
    if (numbers.length === 4) return numbers;
  }
  return null;
}

function runOfFour(text: string): Written[] | null {
  let run: Written[] = [];
  let end = 0;
  for (const match of text.matchAll(NUMBER)) {
    if (run.length > 0 && !RUN_SEPARATOR.test(text.slice(end, match.index))) {
      if (run.length === 4) return run;
      run = [];
    }
    run.push(toWritten(match[0]));
    end = match.index + match[0].length;
  }
  return run.length === 4 ? run : null;
}

/** Scales, orders and clamps four written corners; null when they make no box. */
function interpret(written: Written[], square: PaddedSquare | undefined): Box | null {
  let [left, top, right, bottom] = written.map((number) => number.value) as [number, number, number, number];
  if (![left, top, right, bottom].every(Number.isFinite)) return null;
  const largest = Math.max(left, top, right, bottom);
  if (written.some((number) => number.percent)) {
    [left, top, right, bottom] = [left / 100, top / 100, right / 100, bottom / 100];
  } else if (largest > 1 && !(largest < 2 && [left, top, right, bottom].some((value) => !Number.isInteger(value)))) {
    if (square === undefined) return null;
    const { side, left: offsetX, top: offsetY } = square;
    [left, top, right, bottom] = [(left + offsetX) / side, (top + offsetY) / side, (right + offsetX) / side, (bottom + offsetY) / side];
  }
  const box = orderedBox({ left, top, right, bottom }, clamp01);
  return box.right > box.left && box.bottom > box.top ? box : null;
}

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, value));
}

// --- the reference's reader ----------------------------------------------------------------------

/** Python's `str.isspace()` characters, which `str.strip()` removes. */
const PY_SPACE = '\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000';
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'gu');
/** What `float()` strips: Python's whitespace but the ASCII separators \x1c-\x1f (it rejects those). */
const FLOAT_STRIP = new RegExp(`^[${PY_SPACE.replace('\x1c\x1d\x1e\x1f', '')}]+|[${PY_SPACE.replace('\x1c\x1d\x1e\x1f', '')}]+$`, 'gu');
const DIGITS = String.raw`[0-9](?:_?[0-9])*`;
/** Python's `float()` syntax, once Unicode digits are made ASCII: underscores only between digits. */
const PY_FLOAT = new RegExp(String.raw`^[-+]?(?:(?:${DIGITS}(?:\.(?:${DIGITS})?)?|\.${DIGITS})(?:[eE][-+]?${DIGITS})?|inf|infinity|nan)$`, 'i');
const UNICODE_DIGIT = /\p{Nd}/u;
/** The reference's stop string for LLaVA-1.5's `llava_v1` conversation (`sep2`). */
const STOP_STRING = '</s>';

/**
 * Reads turn one's answer exactly as the reference's `model_vqa_loader_CoS.py` does: the answer
 * stripped (and a trailing `</s>` removed, then stripped again), its first and last characters cut
 * off (`outputs[1:-1]`, whatever they are), the rest split at every `", "`, and the first four
 * parts read with Python's `float()` as left, top, right, bottom; parts after the fourth are ignored.
 *
 * So `[0.1, 0.2, 0.5, 0.6]` reads, and so do `[0.1, 0.2, 0.5, 0.6, 0.7]`, `(0.1, 0.2, 0.5, 0.6)`
 * and `[1.5, -0.2, 0.5, 0.6]`; but `[0.1,0.2,0.5,0.6]`, `[0.1, 0.2, 0.5]`, `The box is [...]` and
 * `[0.1, 0.2, 0.5, 0.6].` do not. `float()` accepts surrounding whitespace, `1.`, `.5`, `1e-1`,
 * `1_000`, signs, Unicode decimal digits, and `inf`/`infinity`/`nan` in any case.
 *
 * Unlike {@link parseBox} nothing is ordered, clamped or checked: the values are returned as
 * written, reversed, out of [0, 1], empty, infinite or NaN. What the reference then does with them
 * is {@link referenceCropRect}: Pillow's crop, where reversed, NaN and infinite boxes fail too.
 *
 * @param text what the model wrote in turn one.
 * @returns the four values, or `null` where the reference's reading raises (fewer than four parts,
 *   or a part `float()` rejects); the reference then zooms into the whole image.
 * @throws TypeError when `text` is not a string.
 */
export function parseReferenceBox(text: string): Box | null {
  if (typeof text !== 'string') throw new TypeError(`text must be a string, got ${typeof text}`);
  let outputs = pythonStrip(text);
  if (outputs.endsWith(STOP_STRING)) outputs = pythonStrip(outputs.slice(0, -STOP_STRING.length));
  const parts = Array.from(outputs).slice(1, -1).join('').split(', ');
  if (parts.length < 4) return null;
  const [left, top, right, bottom] = parts.slice(0, 4).map(pythonFloat);
  if (left === null || top === null || right === null || bottom === null) return null;
  return { left, top, right, bottom };
}

/**
 * The region the reference zooms into for turn one's answer, in an image of `imageSize`: the box
 * {@link parseReferenceBox} reads, with `source: 'model'`, when Pillow can crop it (see
 * {@link referenceCropRect}; the box may then lie partly or wholly outside [0, 1], or be empty),
 * otherwise the whole image with `source: 'fallback'`, as the reference's `except` leaves it.
 *
 * @throws TypeError when `text` is not a string; TypeError / RangeError for a bad `imageSize`.
 */
export function parseReferenceBoxOrFallback(text: string, imageSize: ImageSize): RegionBox {
  const { side } = paddedSquareOf(imageSize);
  const box = parseReferenceBox(text);
  return box !== null && referenceCropRect(box, side) !== null ? { box, source: 'model' } : fallbackBox();
}

function pythonStrip(text: string): string {
  return text.replace(PY_STRIP, '');
}

/** Python's `float(text)`, or null where it raises ValueError. */
function pythonFloat(text: string): number | null {
  const ascii = Array.from(text, (char) => (char > '\x7f' && UNICODE_DIGIT.test(char) ? String(unicodeDigitValue(char)) : char))
    .join('')
    .replace(FLOAT_STRIP, '');
  if (!PY_FLOAT.test(ascii)) return null;
  const lower = ascii.toLowerCase().replace(/_/g, '');
  const unsigned = lower.replace(/^[-+]/, '');
  const sign = lower.startsWith('-') ? -1 : 1;
  if (unsigned === 'nan') return Number.NaN;
  if (unsigned === 'inf' || unsigned === 'infinity') return sign * Infinity;
  return Number(lower);
}

/**
 * A Unicode decimal digit's value. Unicode keeps each script's digits 0-9 in one run of code points
 * (runs may adjoin, as the mathematical digits do), so the value is the distance from the run's start mod 10.
 */
function unicodeDigitValue(char: string): number {
  const code = char.codePointAt(0)!;
  let before = 0;
  while (UNICODE_DIGIT.test(String.fromCodePoint(code - before - 1))) before++;
  return before % 10;
}
