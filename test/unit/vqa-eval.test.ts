import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ChainOfSpotError } from '../../lib/common/errors';
import { normalizeAnswer, scoreAnswer, vqaSoftAccuracy } from '../../lib/eval/score';
import { parseEvalData, planEval, readEvalData, runEval, summarize, writeAll, type Answerer, type EvalItem, type Prediction } from '../../lib/eval/vqa';

const near = (actual: number, expected: number): void => assert.ok(Math.abs(actual - expected) < 1e-12, `${actual} is not ${expected}`);

describe('VQA answer normalisation (official vqaEval.py rules)', () => {
  const cases: [string, string][] = [
    ['Two', '2'],
    ['a dog', 'dog'],
    ['yes.', 'yes'],
    ['The Cat!', 'cat'],
    ['  An apple\n', 'apple'],
    ['none', '0'],
    ['Ten', '10'],
    ['dont', "don't"],
    ['Isnt it', "isn't it"],
    ['3.5', '3.5'], // a full stop before a digit stays
    ['1,000', '1000'], // digit-comma-digit: every mark is dropped, not spaced
    ['black-and-white', 'black and white'], // a mark without a space beside it becomes a space
    ['black - white', 'black white'], // a mark beside a space is dropped
    ['red/blue', 'red blue'],
    ["it's", "it's"], // apostrophes are not punctuation here
    ['tHe   dog  ', 'dog'],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => assert.equal(normalizeAnswer(input), expected));
  }

  it('rejects a non-string', () => {
    assert.throws(() => normalizeAnswer(2 as unknown as string), TypeError);
  });
});

describe('VQA soft accuracy', () => {
  it('matches after normalisation: "Two" vs "2", "a dog" vs "dog", "yes." vs "yes"', () => {
    assert.equal(vqaSoftAccuracy('Two', ['2', '2', '2']), 1);
    near(vqaSoftAccuracy('a dog', ['dog', 'cat', 'cat']), 1 / 3);
    assert.equal(vqaSoftAccuracy('yes.', ['yes', 'yes', 'yes']), 1);
  });

  it('is min(matches / 3, 1)', () => {
    const answers = ['cat', 'cat', 'cat', 'cat', 'kitten', 'dog', 'dog', 'tiger', 'lion', 'cheetah'];
    assert.equal(vqaSoftAccuracy('cat', answers), 1); // 4 matches
    near(vqaSoftAccuracy('dog', answers), 2 / 3);
    near(vqaSoftAccuracy('kitten', answers), 1 / 3);
    assert.equal(vqaSoftAccuracy('horse', answers), 0);
    assert.equal(vqaSoftAccuracy('cat', ['cat', 'cat', 'cat']), 1);
  });

  it('averages over the leave-one-out subsets as the official script does', () => {
    const ten = (matching: number): string[] => [...Array<string>(matching).fill('2'), ...Array<string>(10 - matching).fill('3')];
    // 1 of 10: nine subsets keep the match (1/3), one drops it (0): 0.3.
    near(scoreAnswer('two', ten(1)).vqaAveraged, 0.3);
    // 3 of 10: seven subsets keep all three (1), three keep two (2/3): 0.9.
    near(scoreAnswer('two', ten(3)).vqaAveraged, 0.9);
    assert.equal(scoreAnswer('two', ten(4)).vqaAveraged, 1);
    assert.equal(scoreAnswer('two', ten(0)).vqaAveraged, 0);
    // One human answer: no subset to leave it out of; the plain formula.
    near(scoreAnswer('cat', ['cat']).vqaAveraged, 1 / 3);
  });

  it('exact match is against the most frequent normalised answer', () => {
    const answers = ['cat', 'Cat.', 'kitten'];
    assert.equal(scoreAnswer('a cat', answers).exact, true);
    assert.equal(scoreAnswer('kitten', answers).exact, false);
    assert.equal(scoreAnswer('dog', ['dog', 'cat']).exact, true, 'a tie: any of the most frequent');
  });

  it('needs at least one human answer', () => {
    assert.throws(() => vqaSoftAccuracy('cat', []), RangeError);
    assert.throws(() => vqaSoftAccuracy('cat', 'cat' as unknown as string[]), TypeError);
  });
});

describe('evaluation data', () => {
  it('parses lines, skips blank ones and resolves images against the data folder', () => {
    const text = [
      '{"id": "q1", "image": "cat.png", "question": "What is it?", "answers": ["cat"]}',
      '',
      '{"image": "/abs/dog.png", "question": "Which dog?"}',
      '',
    ].join('\n');
    const items = parseEvalData(text, '/data', 'data.jsonl');
    assert.deepEqual(items, [
      { index: 0, id: 'q1', image: path.resolve('/data/cat.png'), question: 'What is it?', answers: ['cat'] },
      { index: 1, image: path.resolve('/abs/dog.png'), question: 'Which dog?' },
    ]);
  });

  const bad: [string, RegExp][] = [
    ['{"image": "a.png", "question": "q"}\nnot json', /line 2: not valid JSON/],
    ['[1, 2]', /line 1: not a JSON object/],
    ['{"image": "a.png"}', /line 1: "question" must be/],
    ['{"question": "q"}', /line 1: "image" must be/],
    ['{"image": "a.png", "question": "q", "answers": "cat"}', /"answers" must be a non-empty array/],
    ['{"image": "a.png", "question": "q", "answers": []}', /"answers" must be a non-empty array/],
    ['{"image": "a.png", "question": "q", "id": true}', /"id" must be/],
    ['{"image": "a.png", "question": "q", "id": 1}\n{"image": "b.png", "question": "q", "id": 1}', /line 2: the id 1 is used twice/],
    ['\n\n', /holds no questions/],
  ];
  for (const [text, message] of bad) {
    it(`rejects ${JSON.stringify(text)} naming the problem`, () => {
      assert.throws(() => parseEvalData(text, '/data', 'data.jsonl'), (error: unknown) => {
        assert.ok(error instanceof ChainOfSpotError);
        assert.equal(error.code, 'ERR_EVAL_DATA');
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it('a missing data file is ERR_EVAL_DATA', async () => {
    await assert.rejects(readEvalData('/nonexistent/data.jsonl'), { code: 'ERR_EVAL_DATA' });
  });
});

describe('evaluation runner', () => {
  let dir: string;
  let out: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cos-eval-'));
    out = path.join(dir, 'pred.jsonl');
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  const items: EvalItem[] = [
    { index: 0, id: 'a', image: '/img/a.png', question: 'How many?', answers: ['2', '2', '2', 'two'] },
    { index: 1, image: '/img/b.png', question: 'What colour?', answers: ['red', 'blue', 'blue'] },
    { index: 2, id: 7, image: '/img/c.png', question: 'Which animal?', answers: ['dog'] },
    { index: 3, image: '/img/d.png', question: 'Unscored?' },
  ];
  /** Answers "Two" to everything, and records what it was asked. */
  function fakeAnswerer(asked: number[] = []): Answerer {
    return async (item) => {
      asked.push(item.index);
      return { answer: 'Two', region: null, timings: { totalMs: 10 } };
    };
  }
  const readLines = async (): Promise<string[]> => (await readFile(out, 'utf8')).split('\n').slice(0, -1);

  it('writes one scored prediction per line', async () => {
    const plan = await planEval({ items, mode: 'baseline', out });
    const run = await runEval(plan, fakeAnswerer());
    assert.equal(run.answered, 4);
    assert.equal(run.interrupted, false);
    const lines = (await readLines()).map((line) => JSON.parse(line) as Prediction);
    assert.deepEqual(lines, run.predictions);
    assert.deepEqual(lines[0], {
      index: 0, id: 'a', mode: 'baseline', question: 'How many?', answer: 'Two', region: null, timings: { totalMs: 10 },
      score: { vqa: 1, vqaAveraged: 1, exact: true },
    });
    assert.equal(lines[3]!.score, null, 'no answers, no score');
    const summary = summarize(lines);
    assert.equal(summary.predictions, 4);
    assert.equal(summary.scored, 3);
    near(summary.vqa, 1 / 3); // 1, 0, 0
    near(summary.exact, 1 / 3);
    assert.equal(summary.meanMs, 10);
  });

  it("scores turn one's region against a true box: IoU per prediction, the share at 0.5 or more", async () => {
    const boxed = parseEvalData(
      [
        '{"image": "a.png", "question": "q1", "answers": ["1"], "box": [0.1, 0.1, 0.3, 0.3]}',
        '{"image": "b.png", "question": "q2", "answers": ["2"], "box": [0.5, 0.5, 0.7, 0.7]}',
        '{"image": "c.png", "question": "q3", "answers": ["3"]}',
      ].join('\n'),
      dir,
      'boxes.jsonl',
    );
    assert.deepEqual(boxed[0]!.box, { left: 0.1, top: 0.1, right: 0.3, bottom: 0.3 });
    // The same region for every question: a hit for the first (IoU 4/7), a miss for the second.
    const region = { box: { left: 0.1, top: 0.1, right: 0.4, bottom: 0.3 }, pixels: { left: 0, top: 0, right: 1, bottom: 1 }, source: 'model' as const };
    const run = await runEval(await planEval({ items: boxed, mode: 'chain-of-spot' }), async () => ({ answer: '1', region, timings: { totalMs: 1 } }));
    assert.deepEqual(run.predictions.map((p) => p.iou), [0.6667, 0, undefined]);
    const summary = summarize(run.predictions);
    assert.equal(summary.boxes, 2);
    assert.equal(summary.boxHits, 0.5);
    near(summary.meanIou, 0.6667 / 2);
    assert.throws(() => parseEvalData('{"image": "a.png", "question": "q", "box": [0, 0, 1]}', dir, 'bad.jsonl'), /"box" must be \[left, top, right, bottom\]/);
  });

  it('answers `concurrency` items at once, writes each as it finishes, and stops on a failure that is not the item\'s', async () => {
    let inFlight = 0;
    let most = 0;
    const slow: Answerer = async (item) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5 * (4 - item.index)));
      inFlight--;
      return { answer: 'Two', region: null, timings: { totalMs: 1 } };
    };
    const run = await runEval(await planEval({ items, mode: 'baseline', out }), slow, { concurrency: 3 });
    assert.equal(most, 3);
    assert.equal(run.answered, 4);
    const written = (await readLines()).map((line) => (JSON.parse(line) as Prediction).index);
    assert.deepEqual([...written].sort(), [0, 1, 2, 3]);
    assert.notDeepEqual(written, [0, 1, 2, 3], 'written as they finish');

    const broken = new Error('the model is gone');
    const asked: number[] = [];
    const failing: Answerer = async (item) => {
      asked.push(item.index);
      if (item.index === 1) throw broken;
      await new Promise((resolve) => setTimeout(resolve, 5));
      return { answer: 'Two', region: null, timings: { totalMs: 1 } };
    };
    await assert.rejects(runEval(await planEval({ items, mode: 'baseline' }), failing, { concurrency: 2 }), (error) => error === broken);
    assert.deepEqual(asked, [0, 1], 'nothing more is started after the failure');
  });

  it('--limit answers only the first items', async () => {
    const asked: number[] = [];
    const plan = await planEval({ items, mode: 'chain-of-spot', out, limit: 2 });
    assert.equal(plan.total, 2);
    await runEval(plan, fakeAnswerer(asked));
    assert.deepEqual(asked, [0, 1]);
    assert.equal((await readLines()).length, 2);
  });

  it('resumes: skips the items already written (by id, else index) and keeps their lines', async () => {
    await runEval(await planEval({ items, mode: 'chain-of-spot', out, limit: 2 }), fakeAnswerer());
    const before = await readLines();
    const asked: number[] = [];
    const plan = await planEval({ items, mode: 'chain-of-spot', out, resume: true });
    assert.equal(plan.done.length, 2);
    const run = await runEval(plan, fakeAnswerer(asked));
    assert.deepEqual(asked, [2, 3]);
    const after = await readLines();
    assert.deepEqual(after.slice(0, 2), before, 'earlier lines untouched');
    assert.deepEqual(after.map((line) => (JSON.parse(line) as Prediction).index), [0, 1, 2, 3]);
    assert.equal(run.predictions.length, 4, 'the run reports over every item it covers, the earlier ones included');
  });

  it('--limit with --resume covers the first `limit` items, as without --resume; the other lines stay in the file', async () => {
    await runEval(await planEval({ items, mode: 'chain-of-spot', out }), fakeAnswerer());
    const asked: number[] = [];
    const plan = await planEval({ items, mode: 'chain-of-spot', out, resume: true, limit: 2 });
    assert.deepEqual(plan.done.map((p) => p.index), [0, 1]);
    assert.equal(plan.elsewhere, 2);
    const run = await runEval(plan, fakeAnswerer(asked));
    assert.deepEqual(asked, []);
    assert.deepEqual(run.predictions.map((p) => p.index), [0, 1]);
    // "Two" scores 1 on item 0 (2, 2, 2, two) and 0 on item 1 (red, blue, blue).
    const summary = summarize(run.predictions);
    assert.equal(summary.predictions, 2);
    assert.equal(summary.vqa, 0.5);
    assert.equal((await readLines()).length, 4, 'the lines beyond the limit are kept');
    const fresh = await runEval(await planEval({ items, mode: 'chain-of-spot', out: path.join(dir, 'fresh.jsonl'), limit: 2 }), fakeAnswerer());
    assert.deepEqual(summarize(fresh.predictions), summary, 'the same summary as a run of the same limit without --resume');
  });

  it('drops a last line cut short by a crash and redoes its item', async () => {
    await runEval(await planEval({ items, mode: 'chain-of-spot', out, limit: 2 }), fakeAnswerer());
    const text = await readFile(out, 'utf8');
    await writeFile(out, `${text}{"index":2,"mode":"chain-of`);
    const asked: number[] = [];
    await runEval(await planEval({ items, mode: 'chain-of-spot', out, resume: true }), fakeAnswerer(asked));
    assert.deepEqual(asked, [2, 3]);
    const lines = await readLines();
    assert.equal(lines.length, 4);
    lines.forEach((line) => JSON.parse(line));
  });

  it('refuses to overwrite predictions without --resume, or to resume a run of the other mode', async () => {
    await runEval(await planEval({ items, mode: 'chain-of-spot', out, limit: 1 }), fakeAnswerer());
    await assert.rejects(planEval({ items, mode: 'chain-of-spot', out }), (error: unknown) => {
      assert.ok(error instanceof ChainOfSpotError);
      assert.equal(error.code, 'ERR_EVAL_OUTPUT');
      assert.match(error.message, /--resume/);
      return true;
    });
    await assert.rejects(planEval({ items, mode: 'baseline', out, resume: true }), /add --baseline|drop --baseline/);
  });

  it('rejects a predictions file whose lines are not predictions', async () => {
    await writeFile(out, '{"index":0,"mode":"chain-of-spot"}\nhello\n');
    await assert.rejects(planEval({ items, mode: 'chain-of-spot', out, resume: true }), /line 2 is not a prediction/);
  });

  it('records an unreadable image as a failed item and goes on', async () => {
    const answer: Answerer = async (item) => {
      if (item.index === 1) throw new ChainOfSpotError('ERR_IMAGE', 'the image could not be decoded');
      return { answer: 'dog', region: null, timings: { totalMs: 5 } };
    };
    const run = await runEval(await planEval({ items, mode: 'chain-of-spot', out }), answer);
    assert.equal(run.answered, 4);
    const failed = run.predictions[1]!;
    assert.equal(failed.answer, null);
    assert.deepEqual(failed.error, { code: 'ERR_IMAGE', message: 'the image could not be decoded' });
    assert.deepEqual(failed.score, { vqa: 0, vqaAveraged: 0, exact: false });
    assert.equal(summarize(run.predictions).failed, 1);
  });

  it('stops on any other failure, keeping the lines written', async () => {
    const answer: Answerer = async (item) => {
      if (item.index === 1) throw new ChainOfSpotError('ERR_GPU_MEMORY', 'out of memory');
      return { answer: 'dog', region: null, timings: { totalMs: 5 } };
    };
    await assert.rejects(runEval(await planEval({ items, mode: 'chain-of-spot', out }), answer), { code: 'ERR_GPU_MEMORY' });
    assert.equal((await readLines()).length, 1);
  });

  it('an abort abandons the item in flight and writes nothing partial', async () => {
    const controller = new AbortController();
    const answer: Answerer = async (item, signal) => {
      if (item.index === 1) {
        controller.abort();
        assert.ok(signal.aborted);
        throw new ChainOfSpotError('ERR_ABORTED', 'the operation was aborted');
      }
      return { answer: 'dog', region: null, timings: { totalMs: 5 } };
    };
    const run = await runEval(await planEval({ items, mode: 'chain-of-spot', out }), answer, { signal: controller.signal });
    assert.equal(run.interrupted, true);
    assert.equal(run.answered, 1);
    assert.equal((await readLines()).length, 1);
  });

  it('writes the whole line when a write takes only part of it', async () => {
    const bytes = Buffer.from(`${JSON.stringify({ index: 0, answer: 'a line longer than one write' })}\n`);
    const fd = openSync(out, 'a');
    const calls: number[] = [];
    try {
      // A real write of at most 7 bytes a call, as a pipe or a nearly full disk may do.
      writeAll(fd, bytes, (target, buffer, offset, length) => {
        calls.push(offset);
        return writeSync(target, buffer, offset, Math.min(length, 7));
      });
    } finally {
      closeSync(fd);
    }
    assert.deepEqual(await readFile(out), bytes);
    assert.equal(calls.length, Math.ceil(bytes.length / 7));
  });

  it('a short write (the file size limit reached) fails the run with ERR_EVAL_OUTPUT; --resume drops the cut line', async function () {
    this.timeout(20_000);
    // Lines of about 400 bytes under a limit of 1024: the third write is cut short by the kernel.
    const long = items.slice(0, 3).map((item) => ({ ...item, question: `${item.question} ${'x'.repeat(300)}` }));
    const script = path.join(dir, 'limited.js');
    await writeFile(script, `
      const { planEval, runEval } = require(${JSON.stringify(path.resolve(__dirname, '../../lib/eval/vqa.js'))});
      const answer = async () => ({ answer: 'Two', region: null, timings: { totalMs: 1 } });
      planEval({ items: ${JSON.stringify(long)}, mode: 'baseline', out: ${JSON.stringify(out)} })
        .then((plan) => runEval(plan, answer))
        .then((run) => console.log(JSON.stringify({ answered: run.answered })), (error) => console.log(JSON.stringify({ code: error.code, message: error.message })));
    `);
    const printed = await new Promise<string>((resolve, reject) =>
      execFile('bash', ['-c', 'ulimit -f 1 && exec "$0" "$1"', process.execPath, script], (error, stdout) => (error ? reject(error) : resolve(stdout))),
    );
    const outcome = JSON.parse(printed) as { code?: string; message?: string; answered?: number };
    assert.equal((await stat(out)).size, 1024, 'the limit cut the third line');
    assert.equal(outcome.code, 'ERR_EVAL_OUTPUT', `the run must not report a line it could not write: ${printed}`);
    assert.match(outcome.message!, /cannot write .*pred\.jsonl.*--resume/);
    const plan = await planEval({ items: long, mode: 'baseline', out, resume: true });
    assert.deepEqual(plan.done.map((p) => p.index), [0, 1]);
    assert.deepEqual(plan.todo.map((item) => item.index), [2]);
  });

  it('without an out file it only returns the predictions', async () => {
    const run = await runEval(await planEval({ items, mode: 'chain-of-spot' }), fakeAnswerer());
    assert.equal(run.predictions.length, 4);
  });
});
