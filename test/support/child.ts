/**
 * Running code in a child Node process, for the tests whose subject may kill its process: a native
 * abort(), a segfault, an exit in the middle of native work. The child's outcome (exit code or
 * signal, output, time) comes back whatever happens to it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';

import { REPO_ROOT } from './paths';

/** The compiled library (dist/lib), for `require` in child scripts. */
export const DIST_LIB = path.resolve(__dirname, '../../lib');

/** What a child process did. */
export interface ChildResult {
  /** The exit code, or null when a signal ended it. */
  readonly code: number | null;
  /** The signal that ended it (SIGABRT, SIGSEGV...), or null. */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit, in milliseconds. */
  readonly ms: number;
  /** Whether the parent killed it for running past `timeoutMs`. */
  readonly timedOut: boolean;
  /** Milliseconds from spawn to each `MARK <name>` line the child printed. */
  readonly marks: ReadonlyMap<string, number>;
}

/** Options of {@link runNode} and {@link runScript}. */
export interface ChildOptions {
  /** Kill the child (SIGKILL) after this many milliseconds (default 60 000). */
  timeoutMs?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Node flags before the script (`--expose-gc`...). */
  nodeFlags?: string[];
  /** Working directory (default the repository root). */
  cwd?: string;
}

/**
 * Runs `node [nodeFlags] args...` and resolves with its outcome; never rejects for what the child
 * does. A line `MARK <name>` on the child's stdout records when it got somewhere.
 */
export function runNode(args: readonly string[], options: ChildOptions = {}): Promise<ChildResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, [...(options.nodeFlags ?? []), ...args], {
      cwd: options.cwd ?? REPO_ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    const marks = new Map<string, number>();
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const match = /^MARK (\S+)/.exec(line);
        if (match && !marks.has(match[1]!)) marks.set(match[1]!, performance.now() - start);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - start, timedOut, marks });
    });
  });
}

/**
 * Runs a CommonJS script given as source text in a child (`node -e`). The script can `require`
 * the library as `require(process.env.COS_DIST + '/index.js')`; `argv` follow it.
 */
export function runScript(source: string, argv: readonly string[] = [], options: ChildOptions = {}): Promise<ChildResult> {
  return runNode(['-e', source, '--', ...argv], { ...options, env: { COS_DIST: DIST_LIB, ...options.env } });
}

/** A short description of a child's outcome, for assertion messages. */
export function describeChild(result: ChildResult): string {
  const how = result.timedOut
    ? `was killed after ${Math.round(result.ms)} ms (timeout)`
    : result.signal
      ? `died of ${result.signal}`
      : `exited with code ${result.code}`;
  const tail = (text: string): string => text.trim().split('\n').slice(-8).join('\n    ');
  return `the child ${how}\n  stdout: ${tail(result.stdout)}\n  stderr: ${tail(result.stderr)}`;
}

/** Asserts the child exited by itself with `code` (default 0): no signal, no timeout. */
export function assertExited(result: ChildResult, code = 0): void {
  assert.ok(!result.timedOut && result.signal === null && result.code === code, `expected exit code ${code}: ${describeChild(result)}`);
}

/** The JSON of the last line of stdout that starts with `RESULT `. */
export function resultOf<T = unknown>(result: ChildResult): T {
  const line = result.stdout.split('\n').reverse().find((l) => l.startsWith('RESULT '));
  assert.ok(line !== undefined, `the child printed no RESULT line: ${describeChild(result)}`);
  return JSON.parse(line.slice('RESULT '.length)) as T;
}
