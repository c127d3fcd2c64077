/**
 * The trained demo pair on the GPU: its boxes and answers on fixed held-out scenes, two questions
 * decoded together (parallel), against the CPU binary's on the same scenes. The CLI runs both,
 * each in its own process with its own binary.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { backend } from '../../lib/native/loader';
import { assertExited, runNode } from '../support/child';
import { CPU_BINARY, gpuDevice } from '../support/gpu';
import { REPO_ROOT } from '../support/paths';

const CLI = path.resolve(__dirname, '../../lib/cli/main.js');
const QUESTIONS = 20;

interface Prediction {
  index: number;
  answer: string;
  region: unknown;
}

describe('the demo model on the GPU', function () {
  this.timeout(1_200_000);
  before(() => gpuDevice());

  it(`answers and boxes ${QUESTIONS} held-out questions (two at a time) as the CPU binary does`, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cos-gpu-demo-'));
    try {
      const backgrounds = path.join(REPO_ROOT, 'test', 'fixtures', 'backgrounds', 'heldout');
      assertExited(await runNode([CLI, 'scenes', '--count', String(QUESTIONS), '--seed', '9001', '--out', dir, '--backgrounds', backgrounds]));
      const evaluate = async (binary: string, out: string): Promise<Prediction[]> => {
        const run = await runNode([CLI, 'eval', path.join(dir, 'questions.jsonl'), '--demo-model', '--parallel', '2', '--out', out], {
          env: { CHAIN_OF_SPOT_BINARY: binary },
          timeoutMs: 1_000_000,
        });
        assertExited(run);
        return (await readFile(out, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Prediction)
          .sort((a, b) => a.index - b.index).map(({ index, answer, region }) => ({ index, answer, region }));
      };
      const gpu = await evaluate(backend().path, path.join(dir, 'gpu.jsonl'));
      const cpu = await evaluate(CPU_BINARY, path.join(dir, 'cpu.jsonl'));
      assert.equal(gpu.length, QUESTIONS);
      assert.deepEqual(gpu, cpu);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
