import { availableParallelism } from 'node:os';

/** The default thread count for llama.cpp: every CPU this process may use. */
export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}
