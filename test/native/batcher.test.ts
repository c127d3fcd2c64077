import assert from 'node:assert/strict';

import { Batcher } from '../../lib/llama/batcher';
import { Model } from '../../lib/llama/model';
import type { GenerateResult, Session } from '../../lib/llama/session';
import type { NativeStepItem, NativeStepResult } from '../../lib/native/addon';
import { rejectsWithCode } from '../support/results';
import { tinyLlavaFast } from '../support/models';

/** Settles with what `promise` does, or rejects once `ms` have passed (a hang fails the test, it does not stall it). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The steps a session runs, with their items and results, as the batcher sees them. */
function recordSteps(session: Session): { items: NativeStepItem[]; results: NativeStepResult[] }[] {
  const steps: { items: NativeStepItem[]; results: NativeStepResult[] }[] = [];
  const step = session.step.bind(session);
  session.step = async (items) => {
    const results = await step(items);
    steps.push({ items, results });
    return results;
  };
  return steps;
}

const tokensOf = (result: GenerateResult): number[] => Array.from(result.tokens);

describe('Batcher: aborts, overflowing batches and edge cases', () => {
  let model: Model;
  before(async () => {
    model = await Model.load((await tinyLlavaFast()).model);
  });
  after(async () => model.dispose());

  /** A session with these prompts evaluated on sequences 0, 1, ... (alone, through the session's queue). */
  async function sessionWith(prompts: string[], options: { sequences?: number; batchSize?: number } = {}): Promise<Session> {
    const session = await model.createSession({ contextSize: 2048, sequences: options.sequences ?? prompts.length, batchSize: options.batchSize });
    for (const [i, text] of prompts.entries()) await session.evaluate(model.tokenize(text, { addBos: true }), { sequence: i });
    return session;
  }

  /** What Session.generate (no batcher) produces from `prompt` with these options: the reference. */
  async function alone(prompt: string, options: { maxTokens: number; grammar?: string }, batchSize?: number): Promise<GenerateResult> {
    const session = await sessionWith([prompt], { batchSize });
    try {
      return await session.generate(options);
    } finally {
      await session.dispose();
    }
  }

  for (const [how, abortFrom] of [
    // The other sequence's onText runs between the native step and this request's turn to read its result.
    ['from another sequence\'s onText', 'other'],
    // A timer fires while the native step runs (the JS thread is idle then).
    ['by a timer, while the native step runs', 'timer'],
  ] as const) {
    it(`an abort ${how} puts the sequence back as before the call (position and logits); the next generate runs as alone`, async () => {
      const prompts = ['The quick brown fox', 'Several sequences at once'];
      const session = await sessionWith(prompts);
      try {
        const before = { position: session.position(0), logits: await session.logits(0) };
        assert.ok(before.logits !== null);
        const batcher = new Batcher(session);
        const controller = new AbortController();
        let started = false; // the aborted generation has streamed text: it runs
        let other: Promise<GenerateResult> | undefined;
        // Submitted first, so that in each step its result is read before the other's.
        if (abortFrom === 'other') other = batcher.generate(1, { maxTokens: 120, onText: () => started && controller.abort() });
        const onText = (): void => {
          if (abortFrom === 'timer' && !started) setTimeout(() => controller.abort(), 0);
          started = true;
        };
        const aborted = batcher.generate(0, { maxTokens: 400, signal: controller.signal, onText });
        await rejectsWithCode(aborted, 'ERR_ABORTED');
        await other;
        assert.equal(session.position(0), before.position, 'the position is as before the call');
        assert.deepEqual(await session.logits(0), before.logits, 'the logits are those from before the call');
        const next = await batcher.generate(0, { maxTokens: 12 });
        assert.deepEqual(tokensOf(next), tokensOf(await alone(prompts[0]!, { maxTokens: 12 })));
      } finally {
        await session.dispose();
      }
    });
  }

  it('an abort (or new work) issued before the native step starts still makes it return after its first decode', async () => {
    const session = await sessionWith(['Interrupted before it began']);
    try {
      const steps = recordSteps(session);
      const batcher = new Batcher(session);
      const controller = new AbortController();
      const aborted = batcher.generate(0, { maxTokens: 400, signal: controller.signal });
      // The step is queued (its items made), its native worker not constructed yet.
      controller.abort();
      await rejectsWithCode(aborted, 'ERR_ABORTED');
      const first = steps[0]!;
      assert.ok('generate' in first.items[0]!, 'the first step began the generation');
      const result = first.results[0]!;
      assert.ok(!('error' in result));
      assert.equal(result.decodes, 1, 'it returned after its first decode (a lost interrupt runs on for 20 ms)');
    } finally {
      await session.dispose();
    }
  });

  it('a zero-token evaluate resolves at once; with tokens pending, it evaluates them (logits ready)', async () => {
    const session = await sessionWith(['Nothing to add']);
    try {
      const batcher = new Batcher(session);
      const position = session.position(0);
      const empty = await within(batcher.evaluate(0, new Int32Array(0), undefined), 5000, 'a zero-token evaluate');
      assert.deepEqual([empty.position, empty.tokens, session.position(0)], [position, 0, position]);
      // After a generation its tokens are pending (the last one not decoded): an empty evaluate decodes them.
      await batcher.generate(0, { maxTokens: 5 });
      assert.equal(await session.logits(0), null);
      await within(batcher.evaluate(0, new Int32Array(0), undefined), 5000, 'a zero-token evaluate after a generation');
      assert.equal(session.position(0), position + 5);
      assert.ok((await session.logits(0)) !== null, 'the pending tokens were evaluated, with the logits');
    } finally {
      await session.dispose();
    }
  });

  it('a batched generate right after a generate continues from its tokens, as Session.generate does', async () => {
    const prompt = 'One generation after another';
    const reference = await sessionWith([prompt]);
    let expected: number[][];
    try {
      expected = [tokensOf(await reference.generate({ maxTokens: 6 })), tokensOf(await reference.generate({ maxTokens: 6 }))];
    } finally {
      await reference.dispose();
    }
    const session = await sessionWith([prompt]);
    try {
      const batcher = new Batcher(session);
      const first = await batcher.generate(0, { maxTokens: 6 });
      const second = await batcher.generate(0, { maxTokens: 6 });
      assert.deepEqual([tokensOf(first), tokensOf(second)], expected);
    } finally {
      await session.dispose();
    }
  });

  describe('with a batch (batchSize) too small for every sequence\'s tokens of a step', () => {
    it('more generating sequences than the batch holds: each generates what it does alone', async () => {
      const prompts = ['Red', 'Green leaves', 'Blue water and sky', 'Yellow'];
      const expected: number[][] = [];
      for (const prompt of prompts) expected.push(tokensOf(await alone(prompt, { maxTokens: 10 }, 2)));
      const session = await sessionWith(prompts, { batchSize: 2 });
      try {
        const batcher = new Batcher(session);
        const together = await Promise.all(prompts.map((_, i) => batcher.generate(i, { maxTokens: 10 })));
        assert.deepEqual(together.map(tokensOf), expected);
      } finally {
        await session.dispose();
      }
    });

    it('a grammar that forces more tokens than the batch holds: the choice after them is made on their logits', async () => {
      // A choice, a forced run longer than the batch, then choices again.
      const grammar = 'root ::= [a-z] " and then the words that the grammar writes" [a-z] [a-z] [a-z]';
      const prompts = ['Choose a letter', 'Another letter please'];
      const expected: GenerateResult[] = [];
      for (const prompt of prompts) expected.push(await alone(prompt, { maxTokens: 40, grammar }, 4));
      for (const result of expected) assert.ok(result.tokens.length - result.sampledTokens > 4, 'the grammar forced a run longer than the batch');
      const session = await sessionWith(prompts, { batchSize: 4 });
      try {
        const batcher = new Batcher(session);
        const together = await Promise.all(prompts.map((_, i) => batcher.generate(i, { maxTokens: 40, grammar })));
        assert.deepEqual(together.map(tokensOf), expected.map(tokensOf));
      } finally {
        await session.dispose();
      }
    });
  });
});
