/**
 * llama.cpp, ggml and the CLIP encoder log a lot. By default this package prints none of it;
 * set a logger to receive it, or set CHAIN_OF_SPOT_DEBUG=1 to have it on stderr.
 */
import { binding } from './loader';

/** Log levels, lowest first. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Receives one log line of llama.cpp (with its trailing newline, as llama.cpp writes it). */
export type Logger = (level: LogLevel, text: string) => void;

const LEVEL_NUMBERS: Record<LogLevel, number> = { debug: 1, info: 2, warn: 3, error: 4 };

/**
 * Routes llama.cpp's log lines at `minLevel` and above to `logger`, or silences them again when
 * `logger` is null. The logger never keeps the process alive.
 */
export function setLogger(logger: Logger | null, minLevel: LogLevel = 'warn'): void {
  if (logger !== null && typeof logger !== 'function') throw new TypeError('logger must be a function or null');
  if (!(minLevel in LEVEL_NUMBERS)) throw new RangeError(`minLevel must be one of ${Object.keys(LEVEL_NUMBERS).join(', ')}`);
  binding().setLogger(logger === null ? null : guarded(logger), LEVEL_NUMBERS[minLevel]);
}

/**
 * The logger, made safe to call from the native side: what it throws would be an uncaught
 * exception there. The first error becomes a process warning; the logger is called on.
 */
function guarded(logger: Logger): (level: string, text: string) => void {
  let warned = false;
  return (level, text) => {
    try {
      logger(level as LogLevel, text);
    } catch (error) {
      if (warned) return;
      warned = true;
      process.emitWarning(`the chain-of-spot logger threw: ${error instanceof Error ? error.message : String(error)}`, {
        code: 'CHAIN_OF_SPOT_LOGGER',
        detail: 'setLogger() callbacks must not throw; later errors of this logger are not reported',
      });
    }
  };
}
