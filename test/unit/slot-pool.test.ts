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

  /** Who gets which slot, in the order served: `waiters` (a name, the slot it prefers) wait on a full pool, then `releases` come back. */
  async function served(slots: number[], waiters: [string, number?][], releases: number[]): Promise<string[]> {
    const pool = new SlotPool(slots);
    for (let i = 0; i < slots.length; i++) await pool.acquire();
    const order: string[] = [];
    const acquired = waiters.map(([name, prefers]) =>
      pool.acquire(undefined, prefers === undefined ? undefined : (slot) => slot === prefers).then((slot) => order.push(`${name}:${slot}`)),
    );
    for (const slot of releases) pool.release(slot);
    await Promise.all(acquired);
    return order;
  }

  it('a released slot goes to the longest waiter that prefers it, though others waited longer', async () => {
    assert.deepEqual(await served([0, 1], [['any'], ['wantsOne', 1]], [1, 0]), ['wantsOne:1', 'any:0']);
  });

  it('a waiter whose preferred slot is busy lets a slot it does not prefer go to one with no preference', async () => {
    assert.deepEqual(await served([0, 1], [['wantsOne', 1], ['any']], [0, 1]), ['any:0', 'wantsOne:1']);
  });

  it('never leaves a slot free while a question waits, whatever it prefers', async () => {
    const pool = new SlotPool([0, 1]);
    await pool.acquire();
    await pool.acquire();
    let got: number | undefined;
    void pool.acquire(undefined, (slot) => slot === 1).then((slot) => (got = slot));
    pool.release(0);
    await Promise.resolve();
    assert.equal(got, 0, 'no one else waits: the slot it does not prefer, at once');
  });

  it('a waiter whose preferred slot stays busy is passed over at most as many times as there are slots', async () => {
    const pool = new SlotPool([0, 1, 2]);
    for (let i = 0; i < 3; i++) await pool.acquire();
    let served: number | undefined;
    void pool.acquire(undefined, (slot) => slot === 2).then((slot) => (served = slot)); // slot 2 never comes back
    const held = [0, 1]; // the slots the questions with no preference hold
    let passes = 0;
    for (; passes < 10; passes++) {
      const next = pool.acquire(); // another question, with no preference, waits behind it ...
      pool.release(held.shift()!); // ... when a slot comes back
      await Promise.resolve();
      if (served !== undefined) break;
      held.push(await next); // that question took it: the waiter was passed over
    }
    assert.ok(served === 0 || served === 1, `served ${served}`);
    assert.ok(passes >= 1 && passes <= 3, `passed over ${passes} times`);
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
