/** Comparing logits, the numbers a test of a random model can trust (its greedy tokens prove little). */
import assert from 'node:assert/strict';

import type { RgbPixels } from '../../lib/llama/session';
import { seededPattern } from './images';

/** The largest difference between two logit vectors, relative to the largest logit of either. */
export function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!));
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  return worst / scale;
}

/**
 * The tolerance for one whole Chain-of-Spot conversation (about 1,300 tokens, two images) evaluated
 * along two paths: the ask's kept cache, whose generated tokens went in one or a few at a time,
 * against one fresh evaluation in batches. ggml multiplies f16 weights with one kernel for a single
 * token and another for a batch, and the rounding differences grow along the sequence: measured
 * 2.1e-3 on the 336-pixel tiny pair. The nearest layout bug measured, turn one's first token
 * doubled and </s> left out (same length), differs by 2.5e-2; a token dropped, by 3.9e-1.
 */
export const CONVERSATION_TOLERANCE = 1e-2;

/**
 * That the logits after an image depend on it: the same image twice gives the same logits (within
 * 1e-4), another image of the same size other logits (by more than 1e-2).
 */
export async function assertLogitsFollowTheImage(logitsAfter: (image: RgbPixels) => Promise<Float32Array>): Promise<void> {
  const first = await logitsAfter(seededPattern(150, 90, 1));
  const again = await logitsAfter(seededPattern(150, 90, 1));
  const other = await logitsAfter(seededPattern(150, 90, 2));
  assert.ok(maxRelativeDifference(first, again) < 1e-4, 'the same image gives the same logits');
  const difference = maxRelativeDifference(first, other);
  assert.ok(difference > 1e-2, `another image changes the logits (by ${difference})`);
}
