/** Assertions on ChainOfSpot's results and errors, shared by the tests. */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import type { AskResult } from '../../lib/procedure/types';

/** Asserts that `promise` rejects with a ChainOfSpotError of this code. */
export async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** The part of a result that must not depend on how or when it was computed. */
export function essence(result: AskResult): unknown {
  return { answer: result.answer, roi: result.roi, turns: result.turns.map((turn) => Array.from(turn.tokens)) };
}
