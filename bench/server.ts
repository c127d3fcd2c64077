/**
 * Row G: llama-server at the pinned llama.cpp commit, the best a user gets today. Built by
 * scripts/build-llama-server.mjs (the full tree in .cache/llama.cpp-full, the build in
 * .cache/llama-server-build/ at the addon's CPU level, shared with the remote backend's tests) and
 * driven over 127.0.0.1 with the reference's raw prompts, A's prepared images and A's token counts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';

import { BOX_GRAMMAR } from '../lib/procedure/box';
import { roiPrompt, twoTurnPrompt, type Prompt } from '../lib/procedure/prompt';
import { exec } from './floor';
import type { Measured, PlanStep, Step } from './protocol';

const REPO_ROOT = path.resolve(__dirname, '../..');
const SERVER_BUILD_DIR = path.join(REPO_ROOT, '.cache', 'llama-server-build');
/** As ChainOfSpot.ask's default roiMaxTokens (the grammar ends the box long before). */
const TURN_ONE_MAX_TOKENS = 128;
const START_TIMEOUT_MS = 300_000;
const REQUEST_TIMEOUT_MS = 1_800_000;

/**
 * Checks out the full tree (once) and builds llama-server through the shared script
 * (scripts/build-llama-server.mjs: the addon's x86-64 level, never -march=native, static, ccache);
 * incremental, so a no-op build takes seconds, the first one many minutes.
 */
export async function buildServer(): Promise<string> {
  await exec(process.execPath, [path.join(REPO_ROOT, 'scripts', 'build-llama-server.mjs')]);
  return path.join(SERVER_BUILD_DIR, 'bin', 'llama-server');
}

export interface ServerConfig {
  model: string;
  mmproj: string;
  nCtx: number;
  nBatch: number;
  threads: number;
  /** Parallel slots (`-np`, default 1); continuous batching merges their work into shared batches. */
  slots?: number;
}

/** What the two-turn flow replays from A's recorded plan. */
export interface ServerInput {
  question: string;
  /** A's plan: its two prepared images (raw RGB) and its answer's length. */
  plan: PlanStep[];
}

export interface ServerRun {
  measured: Measured;
  answers: [string, string];
  /** Turn two's prompt tokens served from the prompt cache, of all of them (images included). */
  cachedTokens: number;
  promptTokens: number;
}

/** The `timings` of a /completion response. */
interface Timings {
  cache_n: number;
  prompt_n: number;
  prompt_ms: number;
  predicted_n: number;
  predicted_ms: number;
}

/** The prompt as the raw string llama-server tokenizes, `marker` where an image goes. */
function rawPrompt(parts: Prompt, marker: string): string {
  return parts.map((part) => (part.type === 'image' ? marker : part.type === 'special' ? part.token : part.text)).join('');
}

/** A's raw RGB image as a binary PPM, which llama-server's stb_image decodes without compression costs. */
async function ppmBase64(step: Extract<PlanStep, { op: 'image' }>): Promise<string> {
  const header = Buffer.from(`P6\n${step.width} ${step.height}\n255\n`);
  return Buffer.concat([header, await readFile(step.path)]).toString('base64');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
}

/** The process's peak resident set, from /proc (it is not our child's rusage until it exits). */
async function peakRssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
}

export class LlamaServer {
  readonly #child: ChildProcess;
  readonly #url: string;
  /** Where each of `multimodal_data`'s files goes in a prompt: random per server process, read from /props. */
  #mediaMarker = '';
  #stderr = '';
  #exited: string | undefined;
  /** Kills the server if this process ends first (an error, Ctrl-C): it must never outlive the bench. */
  readonly #kill = (): void => {
    this.#child.kill('SIGKILL');
  };
  readonly #interrupted = (signal: NodeJS.Signals): void => {
    this.#kill();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };

  private constructor(child: ChildProcess, url: string) {
    this.#child = child;
    this.#url = url;
    child.stderr?.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4000);
    });
    child.on('error', (error) => {
      this.#exited = `llama-server could not run: ${error.message}`;
      this.#unhook();
    });
    child.on('exit', (code, signal) => {
      this.#exited = `llama-server exited (${signal ?? code}): ${this.#why()}`;
      this.#unhook();
    });
    process.on('exit', this.#kill);
    process.on('SIGINT', this.#interrupted);
    process.on('SIGTERM', this.#interrupted);
  }

  /** Where it listens (`http://127.0.0.1:PORT`). */
  get url(): string {
    return this.#url;
  }

  /**
   * Starts the server on a free loopback port with one slot (or `slots`) and the floor's context, batch and
   * threads, and waits until it has loaded the models; resolves with the load time. The RAM
   * prompt cache is off: it only helps when several conversations alternate, and saving to it costs.
   */
  static async start(binary: string, config: ServerConfig): Promise<{ server: LlamaServer; loadMs: number }> {
    const start = performance.now();
    const port = await freePort();
    const args = [
      '--host', '127.0.0.1', '--port', String(port), '-m', config.model, '--mmproj', config.mmproj,
      '-c', String(config.nCtx), '-b', String(config.nBatch), '-ub', String(config.nBatch),
      '-t', String(config.threads), '-tb', String(config.threads), '-np', String(config.slots ?? 1), '--cache-ram', '0', '--no-webui',
    ];
    const server = new LlamaServer(spawn(binary, args, { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] }), `http://127.0.0.1:${port}`);
    try {
      await server.#waitReady(start + START_TIMEOUT_MS);
      const props = (await (await fetch(`${server.#url}/props`)).json()) as { media_marker?: string; modalities?: { vision?: boolean } };
      if (!props.modalities?.vision || !props.media_marker) throw new Error('llama-server did not load the projector (no vision modality)');
      server.#mediaMarker = props.media_marker;
    } catch (error) {
      await server.close();
      throw error;
    }
    return { server, loadMs: performance.now() - start };
  }

  /**
   * The two-turn flow on a cold cache, as a first question on a new image: turn one with the
   * original (cache_prompt off, so nothing of an earlier round is reused) and the box grammar,
   * then the whole conversation with both images, whose common prefix the slot's cache serves.
   * Turn two generates exactly as many tokens as A's.
   */
  async twoTurn({ question, plan }: ServerInput): Promise<ServerRun> {
    const images = plan.filter((step) => step.op === 'image');
    const answerTokens = plan.find((step) => step.op === 'generate' && step.turn === 2);
    if (images.length !== 2 || answerTokens?.op !== 'generate') throw new Error("A's plan has no two images and turn-two answer");
    const [original, roi] = await Promise.all(images.map(ppmBase64));

    const start = performance.now();
    const one = await this.#complete({
      prompt: { prompt_string: rawPrompt(roiPrompt(question), this.#mediaMarker), multimodal_data: [original] },
      n_predict: TURN_ONE_MAX_TOKENS,
      grammar: BOX_GRAMMAR,
      cache_prompt: false,
    });
    const two = await this.#complete({
      prompt: { prompt_string: rawPrompt(twoTurnPrompt(question, one.content), this.#mediaMarker), multimodal_data: [original, roi] },
      n_predict: answerTokens.n,
      ignore_eos: true,
      cache_prompt: true,
    });
    const totalMs = performance.now() - start;

    // Image encoding and the image tokens are inside the server's prompt time: it reports no split.
    const steps: Step[] = [one, two].flatMap(({ timings: t }, index) => [
      { op: 'tokens', turn: index + 1, ms: t.prompt_ms, tokens: t.prompt_n },
      { op: 'generate', turn: index + 1, ms: t.predicted_ms, tokens: t.predicted_n, decodes: t.predicted_n },
    ]);
    return {
      measured: { steps, preprocessMs: 0, totalMs, peakRssKb: await peakRssKb(this.#child.pid!) },
      answers: [one.content, two.content.trim()],
      cachedTokens: two.timings.cache_n,
      promptTokens: two.timings.cache_n + two.timings.prompt_n,
    };
  }

  /** Stops the server and waits for it to exit (SIGKILL after 5 s). */
  async close(): Promise<void> {
    if (this.#exited === undefined) {
      const exited = new Promise((resolve) => this.#child.once('exit', resolve));
      this.#child.kill('SIGTERM');
      const timer = setTimeout(this.#kill, 5000);
      await exited;
      clearTimeout(timer);
    }
    this.#unhook();
  }

  #unhook(): void {
    process.off('exit', this.#kill);
    process.off('SIGINT', this.#interrupted);
    process.off('SIGTERM', this.#interrupted);
  }

  /** Its last error lines on one line (the table's note), then the end of its log (the bench's log). */
  #why(): string {
    const lines = this.#stderr.split('\n').filter((line) => line.trim() !== '');
    // llama.cpp's log lines: "<time> <level> <message>"; E is an error.
    const errors = lines.filter((line) => /^\S+ E /.test(line)).map((line) => line.replace(/^\S+ E\s+/, ''));
    return `${(errors.length > 0 ? errors.slice(-2) : lines.slice(-1)).join('; ')}\n${this.#stderr}`;
  }

  async #waitReady(deadline: number): Promise<void> {
    for (;;) {
      if (this.#exited !== undefined) throw new Error(this.#exited);
      if (performance.now() > deadline) throw new Error(`llama-server did not become ready in ${START_TIMEOUT_MS / 1000} s: ${this.#why()}`);
      // 503 while loading, 200 once ready; refused until it listens.
      const ok = await fetch(`${this.#url}/health`).then((response) => response.ok, () => false);
      if (ok) return;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async #complete(body: object): Promise<{ content: string; timings: Timings }> {
    const response = await fetch(`${this.#url}/completion`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // Greedy, as every other variant.
      body: JSON.stringify({ ...body, temperature: 0, stream: false }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    }).catch((error: unknown) => {
      throw new Error(this.#exited ?? `llama-server: ${(error as Error).message}`);
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`llama-server /completion ${response.status}: ${text.slice(0, 2000)}`);
    return JSON.parse(text) as { content: string; timings: Timings };
  }
}
