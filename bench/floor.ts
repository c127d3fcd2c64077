/**
 * The C++ floor (bench/floor/floor.cpp): built in the addon's own build tree, from its llama.cpp
 * objects (the `cos-floor` target of CMakeLists.txt), and driven as a child process, one JSON line
 * per plan.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import type { Measured, PlanStep, Step } from './protocol';

const REPO_ROOT = path.resolve(__dirname, '../..');

/** Runs a command in the repository; rejects with the end of its output when it fails. */
export function exec(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPO_ROOT });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} failed (${code}):\n${output}`))));
  });
}

/**
 * Builds the floor in the build tree of the addon binary under test (`<tree>/Release/chain_of_spot.node`:
 * build/, build-cuda/), linking the llama.cpp objects that binary was made of; incremental, so a
 * no-op build takes a second.
 */
export async function buildFloor(addonBinary: string): Promise<string> {
  const tree = path.dirname(path.dirname(addonBinary));
  if (!existsSync(path.join(tree, 'CMakeCache.txt'))) {
    throw new Error(
      `the C++ floor is built in the addon's build tree, and ${addonBinary} has none (a prebuilt binary): ` +
        'build the addon (`npm run build:native`, or build:cuda) and run with CHAIN_OF_SPOT_BINARY=<tree>/Release/chain_of_spot.node',
    );
  }
  await exec('cmake', ['--build', tree, '--target', 'cos-floor']);
  return path.join(tree, 'cos-floor');
}

export interface FloorConfig {
  model: string;
  mmproj: string;
  nCtx: number;
  nBatch: number;
  threads: number;
  gpuLayers: number;
  projectorGpu: boolean;
}

/** The sequence's length at the end of each turn, as a run's generate steps report it. */
function turnEnds(steps: readonly { op: string; position?: number }[]): (number | undefined)[] {
  return steps.filter((step) => step.op === 'generate').map((step) => step.position);
}

/**
 * Throws unless a replay did A's work: its sequence as long as A's (which the plan keeps) at the
 * end of every turn. A replay that diverged, on a cache not cleared say, is not the floor.
 */
export function checkReplay(plan: PlanStep[], replay: Measured, round: number): void {
  const expected = turnEnds(plan);
  const actual = turnEnds(replay.steps);
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(
      `the C++ floor did not replay A's work in round ${round}: at the end of its turns its cache held ${actual.join(', ')} tokens where A's held ` +
        `${expected.join(', ')}; no floor is reported`,
    );
  }
}

export class FloorProcess {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: Interface;
  readonly #waiting: ((line: string) => void)[] = [];
  #stderr = '';

  private constructor(child: ChildProcessWithoutNullStreams) {
    this.#child = child;
    this.#lines = createInterface({ input: child.stdout });
    this.#lines.on('line', (line) => this.#waiting.shift()?.(line));
    child.stderr.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4000);
    });
    child.on('close', (code) => {
      for (const resolve of this.#waiting.splice(0)) resolve(JSON.stringify({ error: `the floor exited (${code}): ${this.#stderr}` }));
    });
  }

  /** Starts the floor and loads the models; resolves with the load time. */
  static async start(binary: string, config: FloorConfig): Promise<{ floor: FloorProcess; loadMs: number }> {
    const floor = new FloorProcess(spawn(binary, [], { cwd: REPO_ROOT }));
    const { loadMs } = (await floor.#request(config)) as { loadMs: number };
    return { floor, loadMs };
  }

  /**
   * Replays a plan, from an empty cache. Our image pipeline ran beforehand (the plan holds its 336x336 output), so
   * preprocessMs is 0; mtmd's own image preparation is in the image steps, as in the addon.
   */
  async run(plan: PlanStep[]): Promise<Measured> {
    const result = (await this.#request({ steps: plan })) as { steps: Step[]; totalMs: number; peakRssKb: number };
    return { steps: result.steps, preprocessMs: 0, totalMs: result.totalMs, peakRssKb: result.peakRssKb };
  }

  close(): void {
    this.#child.stdin.end();
  }

  #request(message: object): Promise<object> {
    return new Promise((resolve, reject) => {
      this.#waiting.push((line) => {
        const reply = JSON.parse(line) as { error?: string };
        if (reply.error !== undefined) reject(new Error(`cos-floor: ${reply.error}`));
        else resolve(reply);
      });
      this.#child.stdin.write(`${JSON.stringify(message)}\n`);
    });
  }
}
