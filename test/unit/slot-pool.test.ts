import assert from 'node:assert/strict';

import { ChainOfSpotError, disposedError } from '../../lib/common/errors';
import { SlotPool } from '../../lib/procedure/slot-pool';

describe('SlotPool (the question sequences of parallel mode)', () => {
  it('hands out free slots at once, then serves waiters in arrival order as slots come back', async () => {
    const pool = new SlotPool([0, 1]);
    assert.deepEqual([await pool.acquire(), await pool.acquire()], [0, 1]);
    const order: string[] = [];
    const second = pool.acquire().then((slot) => order.push(`second:${slot}`));
    const third = pool.acquire().then((slot) => order.push(`third:${slot}`));
    pool.release(1);
    pool.release(0);
    await Promise.all([second, third]);
    assert.deepEqual(order, ['second:1', 'third:0']);
  });

  it('takes the free slot the caller prefers, else the one free the longest', async () => {
    const pool = new SlotPool([0, 1, 2]);
    assert.equal(await pool.acquire(undefined, (slot) => slot === 2), 2);
    assert.equal(await pool.acquire(undefined, () => false), 0, 'no preferred slot free: the least recently used');
    pool.release(0);
    assert.equal(await pool.acquire(), 1);
    assert.equal(await pool.acquire(), 0);
  });

  it('a waiter whose signal aborts leaves the queue with ERR_ABORTED, and the slot goes to the next', async () => {
    const pool = new SlotPool([7]);
    await pool.acquire();
    const controller = new AbortController();
    const aborted = pool.acquire(controller.signal);
    const next = pool.acquire();
    controller.abort();
    await assert.rejects(aborted, (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_ABORTED');
    pool.release(7);
    assert.equal(await next, 7);
    await assert.rejects(pool.acquire(AbortSignal.abort()), (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_ABORTED');
  });

  it('close rejects the waiters and every later acquire', async () => {
    const pool = new SlotPool([0]);
    await pool.acquire();
    const waiting = pool.acquire();
    pool.close(() => disposedError('this pool'));
    await assert.rejects(waiting, (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_DISPOSED');
    await assert.rejects(pool.acquire(), (error: unknown) => error instanceof ChainOfSpotError && error.code === 'ERR_DISPOSED');
  });
});
