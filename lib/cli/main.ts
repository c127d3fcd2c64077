#!/usr/bin/env node
/**
 * The `chain-of-spot` command's entry point: parses the arguments (args.ts), runs the command (one
 * file each: ask, demo, eval, scenes, rpc-server), and turns any failure into one line and an exit status.
 */
import { setLogger } from '../native/logger';
import { parseCommandLine, USAGE, type Command } from './args';
import { ask } from './ask';
import { demo } from './demo';
import { evaluate } from './eval';
import { packageVersion } from './io';
import { rpcServer } from './rpc-server';
import { scenes } from './scenes';

/** Runs a parsed command; resolves to the exit status. */
async function run(command: Command, signal: AbortSignal): Promise<number> {
  switch (command.command) {
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case 'version':
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    case 'ask':
      return ask(command, signal);
    case 'eval':
      return evaluate(command, signal);
    case 'demo':
      return demo(command, signal);
    case 'scenes':
      return scenes(command);
    case 'rpc-server':
      return rpcServer(command, signal);
  }
}

/**
 * What to print for a failure and the exit status: one line, `chain-of-spot: error: <message> (<code>)`,
 * status 2 for wrong usage, 1 otherwise, and 130 for an interruption. With `debug` the stack traces follow.
 */
export function errorReport(error: unknown, debug: boolean): { text: string; exitCode: number } {
  const code: unknown = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_ABORTED') return { text: 'chain-of-spot: interrupted\n', exitCode: 130 };
  const message = (error instanceof Error ? error.message : String(error)).replace(/\s*\n\s*/g, ' ').trim();
  const hint = code === 'ERR_USAGE' ? "; see 'chain-of-spot --help'" : '';
  let text = `chain-of-spot: error: ${message}${typeof code === 'string' ? ` (${code})` : ''}${hint}\n`;
  if (debug) {
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) text += `${cause.stack ?? cause.message}\n`;
  }
  return { text, exitCode: code === 'ERR_USAGE' ? 2 : 1 };
}

/**
 * Runs the command line and resolves to the exit status. The first Ctrl-C cancels what is running
 * (an evaluation keeps every finished line); a second one quits at once.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const controller = new AbortController();
  const onSigint = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const command = parseCommandLine(argv);
    if (debug) setLogger((_level, text) => process.stderr.write(text), 'info');
    return await run(command, controller.signal);
  } catch (error) {
    const report = errorReport(error, debug);
    process.stderr.write(report.text);
    return report.exitCode;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
