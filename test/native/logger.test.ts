import assert from 'node:assert/strict';

import { setLogger, type LogLevel } from '../../lib/native/logger';
import { Model } from '../../lib/llama/model';
import { tinyLlavaFast } from '../support/models';

describe('logger', () => {
  afterEach(() => setLogger(null));

  it('routes llama.cpp log lines at or above the level to the logger, and is silent again after null', async () => {
    const lines: { level: LogLevel; text: string }[] = [];
    setLogger((level, text) => lines.push({ level, text }), 'info');
    const pair = await tinyLlavaFast();
    await (await Model.load(pair.model)).dispose();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(lines.length > 0, 'loading a model logs at info level');
    assert.ok(lines.every((line) => ['info', 'warn', 'error'].includes(line.level)));
    assert.ok(lines.some((line) => /llama_model_loader|load_tensors|print_info/.test(line.text)));

    setLogger(null);
    const before = lines.length;
    await (await Model.load(pair.model)).dispose();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(lines.length, before);
  });

  it('filters by level: at error, a successful load logs nothing', async () => {
    const lines: string[] = [];
    setLogger((_level, text) => lines.push(text), 'error');
    await (await Model.load((await tinyLlavaFast()).model)).dispose();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(lines, []);
  });

  it('a throwing logger becomes one process warning, not an uncaught exception', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      let calls = 0;
      setLogger(() => {
        calls++;
        throw new Error('logger failed');
      }, 'info');
      await (await Model.load((await tinyLlavaFast()).model)).dispose();
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(calls > 1, 'the logger is called on');
      const ours = warnings.filter((warning) => (warning as Error & { code?: string }).code === 'CHAIN_OF_SPOT_LOGGER');
      assert.equal(ours.length, 1);
      assert.match(ours[0]!.message, /logger failed/);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('rejects a logger that is not a function, and an unknown level', () => {
    assert.throws(() => setLogger('console' as unknown as null), TypeError);
    assert.throws(() => setLogger(() => undefined, 'verbose' as LogLevel), RangeError);
  });
});
