import assert from 'node:assert/strict';
import {
  BOX_PATTERN,
  fallbackBox,
  formatBox,
  parseBox,
  parseBoxOrFallback,
} from '../../lib/procedure/box';
import { mulberry32 } from '../../lib/common/random';
import { FULL_BOX, paddedSquare, type Box, type ImageSize } from '../../lib/image/geometry';

const box = (left: number, top: number, right: number, bottom: number): Box => ({ left, top, right, bottom });

/** A coordinate in [0, 1], often one of the awkward ones: exact ties (k/16), round thousandths, halves of them. */
function coordinate(random: () => number): number {
  switch (Math.floor(random() * 4)) {
    case 0: return Math.floor(random() * 17) / 16;
    case 1: return Math.floor(random() * 1001) / 1000;
    case 2: return Math.floor(random() * 2001) / 2000;
    default: return random();
  }
}

describe('box', () => {
  describe('formatBox', () => {
    // Expected values are Python's repr(round(x, 3)).
    const table: [number, string][] = [
      [0, '0.0'], [1, '1.0'], [0.5, '0.5'], [0.072, '0.072'], [0.586, '0.586'], [0.05, '0.05'], [0.999, '0.999'],
      [0.0625, '0.062'], [0.1875, '0.188'], [0.3125, '0.312'], [0.4375, '0.438'], [0.9375, '0.938'], // exact ties: to even
      [0.0725, '0.072'], [0.0005, '0.001'], [0.0015, '0.002'], [0.0004, '0.0'], [0.9995, '1.0'], [0.9996, '1.0'],
      [0.1 + 0.2, '0.3'], [1 / 3, '0.333'], [2 / 3, '0.667'], [0.1005, '0.101'], [0.2675, '0.268'], [0.0999, '0.1'],
    ];
    for (const [value, expected] of table) {
      it(`${value} -> ${expected}`, () => {
        assert.equal(formatBox(box(value, 0, 1, 1)), `[${expected}, 0.0, 1.0, 1.0]`);
      });
    }

    it('writes the reference list format', () => {
      assert.equal(formatBox(box(0, 0.072, 0.586, 1)), '[0.0, 0.072, 0.586, 1.0]');
    });

    it('rejects values outside [0, 1] and non-numbers', () => {
      assert.throws(() => formatBox(box(NaN, 0, 1, 1)), RangeError);
      assert.throws(() => formatBox(box(0, 0, 1.5, 1)), RangeError);
      assert.throws(() => formatBox(box(-0.1, 0, 1, 1)), RangeError);
      assert.throws(() => formatBox({ left: '0.5', top: 0, right: 1, bottom: 1 } as unknown as Box), TypeError);
      assert.throws(() => formatBox(null as unknown as Box), TypeError);
    });
  });

  describe('BOX_PATTERN and BOX_GRAMMAR', () => {
    it('every formatted box matches, with or without the leading space', () => {
      const random = mulberry32(1);
      for (let i = 0; i < 10_000; i++) {
        const text = formatBox(box(coordinate(random), coordinate(random), coordinate(random), coordinate(random)));
        assert.match(text, BOX_PATTERN);
        assert.match(` ${text}`, BOX_PATTERN);
      }
    });

    it('rejects what the reference never writes', () => {
      for (const text of [
        '[0.10, 0.2, 0.3, 0.4]', '[0.1,0.2,0.3,0.4]', '[1.5, 0.2, 0.3, 0.4]', '[0.1, 0.2, 0.3]', '  [0.1, 0.2, 0.3, 0.4]',
        '[0.0, 0.0, 1, 1]', '[.5, 0.2, 0.3, 0.4]', '[0.1, 0.2, 0.3, 0.4] ', '[0.1234, 0.2, 0.3, 0.4]', '[0.00, 0.2, 0.3, 0.4]',
        '[1.1, 0.2, 0.3, 0.4]', '[-0.1, 0.2, 0.3, 0.4]', '(0.1, 0.2, 0.3, 0.4)', '',
      ]) {
        assert.doesNotMatch(text, BOX_PATTERN, text);
      }
    });
  });

  describe('paddedSquare', () => {
    it('centres with floor division, as expand2square', () => {
      assert.deepEqual(paddedSquare(4, 2), { side: 4, left: 0, top: 1 });
      assert.deepEqual(paddedSquare(5, 2), { side: 5, left: 0, top: 1 });
      assert.deepEqual(paddedSquare(2, 5), { side: 5, left: 1, top: 0 });
      assert.deepEqual(paddedSquare(3, 3), { side: 3, left: 0, top: 0 });
      assert.deepEqual(paddedSquare(640, 427), { side: 640, left: 0, top: 106 });
    });

    it('rejects sizes that are not positive integers', () => {
      assert.throws(() => paddedSquare(0, 2), RangeError);
      assert.throws(() => paddedSquare(2.5, 2), RangeError);
      assert.throws(() => paddedSquare(2, '2' as unknown as number), TypeError);
    });
  });

  describe('parseBox', () => {
    const landscape: ImageSize = { width: 200, height: 100 }; // padded square 200, image at top 50
    const portrait: ImageSize = { width: 100, height: 200 }; // padded square 200, image at left 50
    const table: [string, ImageSize | undefined, Box | null][] = [
      ['[0.0, 0.072, 0.586, 1.0]', undefined, box(0, 0.072, 0.586, 1)],
      [' [0.1, 0.2, 0.5, 0.6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.1,0.2,0.5,0.6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[ 0.1 , 0.2 , 0.5 , 0.6 ]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['The region of interest is [0.1, 0.2, 0.5, 0.6].', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['Step 1: [0.1, 0.2, 0.5, 0.6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.1, 0.2, 0.5, 0.6]</s>', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.1, 0.2, 0.5, 0.6] and [0.2, 0.3, 0.4, 0.5]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.1, 0.2, 0.5, 0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[.1, .2, .5, .6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.1; 0.2; 0.5; 0.6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['(0.1, 0.2, 0.5, 0.6)', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['((0.1, 0.2), (0.5, 0.6))', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['0.1 0.2 0.5 0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['0.1-0.2-0.5-0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.5, 0.6, 0.1, 0.2]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0.5, 0.2, 0.1, 0.6]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[0, 0, 1, 1]', undefined, box(0, 0, 1, 1)],
      ['[10%, 20%, 50%, 60%]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['left 45%, top 10%, right 90%, bottom 80%', undefined, box(0.45, 0.1, 0.9, 0.8)],
      ['[10%, 20%, 150%, 60%]', undefined, box(0.1, 0.2, 1, 0.6)],
      ['x1=0.1 y1=0.2 x2=0.5 y2=0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['x1=0.1 y1=0.2 x2=0.5 y2=0.6, not x1=0.9', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['X1 = 0.1, Y1 = 0.2, X2 = 0.5, Y2 = 0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['x0: 0.1, y0: 0.2, x1: 0.5, y1: 0.6', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6}', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['{"top": 0.2, "left": 0.1, "bottom": 0.6, "right": 0.5}', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['x=0.125, y=0.25, w=0.375, h=0.5', undefined, box(0.125, 0.25, 0.5, 0.75)],
      ['[-0.1, 0.2, 1.2, 0.6]', undefined, box(0, 0.2, 1, 0.6)],
      ['[1e-1, 2e-1, 5e-1, 6e-1]', undefined, box(0.1, 0.2, 0.5, 0.6)],
      ['[10, 20, 110, 220]', landscape, box(0.05, 0.35, 0.55, 1)],
      ['[10, 20, 60, 120]', portrait, box(0.3, 0.1, 0.55, 0.6)],
      ['[10, 10, 99999999999, 50]', { width: 100, height: 100 }, box(0.1, 0.1, 1, 0.5)],
      ['[0.1, 0.2, 0.5, 0.6]', landscape, box(0.1, 0.2, 0.5, 0.6)],
      // Nothing usable:
      ['[10, 20, 110, 220]', undefined, null],
      ['[0.5, 0.5, 0.5, 0.5]', undefined, null],
      ['[0.5, 0.2, 0.5, 0.6]', undefined, null],
      ['[1.5, 0.2, 1.7, 0.6]', undefined, null],
      ['[NaN, 0.2, 0.5, 0.6]', undefined, null],
      ['[Infinity, 0, 1, 1]', undefined, null],
      ['[1e999, 0, 1, 1]', undefined, null],
      ['[0.1, 0.2, 0.5]', undefined, null],
      ['[0.1, 0.2, 0.5, 0.6, 0.7]', undefined, null],
      ['0.1, 0.2, 0.5, 0.6, 0.7, then 3', undefined, null],
      ['I cannot tell from the image.', undefined, null],
      ['', undefined, null],
    ];
    for (const [text, size, expected] of table) {
      it(`${JSON.stringify(text)}${size ? ` (${size.width}x${size.height})` : ''} -> ${expected ? formatBox(expected) : 'null'}`, () => {
        assert.deepEqual(parseBox(text, size), expected === null ? null : { box: expected, source: 'model' });
      });
    }

    it('falls back to the whole image when nothing usable was written', () => {
      assert.deepEqual(parseBoxOrFallback('no idea'), { box: FULL_BOX, source: 'fallback' });
      assert.deepEqual(parseBoxOrFallback('[0.1, 0.2, 0.5, 0.6]'), { box: box(0.1, 0.2, 0.5, 0.6), source: 'model' });
      assert.deepEqual(fallbackBox(), { box: { left: 0, top: 0, right: 1, bottom: 1 }, source: 'fallback' });
      assert.ok(Object.isFrozen(FULL_BOX));
    });

    it('rejects arguments of the wrong type', () => {
      assert.throws(() => parseBox(42 as unknown as string), TypeError);
      assert.throws(() => parseBox('[0.1, 0.2, 0.5, 0.6]', { width: 0, height: 10 }), RangeError);
      assert.throws(() => parseBox('[0.1, 0.2, 0.5, 0.6]', null as unknown as ImageSize), TypeError);
    });

    it('stays linear on long adversarial input', function () {
      // Half a million characters: linear work is milliseconds, a backtracking pattern would run
      // for hours and hit this test's timeout.
      this.timeout(30_000);
      for (const text of ['x' + ' '.repeat(500_000), '['.repeat(500_000), '1,'.repeat(500_000), '9'.repeat(500_000), 'x1='.repeat(200_000) + '0.5']) {
        assert.equal(parseBox(text), null);
      }
    });

    it('fuzz: 10,000 seeded strings never throw and give only boxes in order within [0, 1]', () => {
      const random = mulberry32(20240318);
      const alphabet = '0123456789.,-+[](){}%eE xyXYwh=:;"\'\n\tabclefttoprightbottomNaInfity1e999\u0661\u00bd</s>';
      const pick = (text: string): string => text[Math.floor(random() * text.length)]!;
      let boxes = 0;
      for (let i = 0; i < 10_000; i++) {
        let text: string;
        if (i % 2 === 0) {
          text = Array.from({ length: Math.floor(random() * 60) }, () => pick(alphabet)).join('');
        } else {
          // A near miss: a real box with a few characters deleted, replaced or inserted.
          const chars = [...formatBox(box(coordinate(random), coordinate(random), coordinate(random), coordinate(random)))];
          for (let edits = 1 + Math.floor(random() * 4); edits > 0; edits--) {
            const at = Math.floor(random() * (chars.length + 1));
            const kind = random();
            if (kind < 0.33) chars.splice(at, 1);
            else if (kind < 0.66) chars.splice(at, 1, pick(alphabet));
            else chars.splice(at, 0, pick(alphabet));
          }
          text = chars.join('');
        }
        const size = random() < 0.5 ? undefined : { width: 1 + Math.floor(random() * 4000), height: 1 + Math.floor(random() * 4000) };
        let result: ReturnType<typeof parseBox>;
        try {
          result = parseBox(text, size);
        } catch (error) {
          assert.fail(`parseBox threw on ${JSON.stringify(text)}: ${String(error)}`);
        }
        if (result === null) continue;
        boxes++;
        const { left, top, right, bottom } = result.box;
        assert.equal(result.source, 'model');
        for (const value of [left, top, right, bottom]) assert.ok(Number.isFinite(value) && value >= 0 && value <= 1, JSON.stringify(text));
        assert.ok(left < right && top < bottom, `${JSON.stringify(text)} -> ${JSON.stringify(result.box)}`);
      }
      assert.ok(boxes > 1000, `only ${boxes} of the strings parsed: the near misses should mostly parse`);
    });
  });
});
