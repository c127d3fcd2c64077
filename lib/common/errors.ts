/**
 * Every failure this package reports is a {@link ChainOfSpotError} with a stable `code`.
 * Argument mistakes are the exception: they throw plain `TypeError` / `RangeError` before any work
 * starts, as Node's own APIs do.
 */

/** The stable error codes. Match on `error.code`, never on the message. */
export type ErrorCode =
  /** The native addon binary could not be found or loaded. */
  | 'ERR_BINARY'
  /** The text model file is missing, unreadable, not a GGUF text model, or llama.cpp rejected it. */
  | 'ERR_MODEL_LOAD'
  /** The projector (mmproj) file is missing, unreadable, or not a CLIP/mmproj GGUF. */
  | 'ERR_PROJECTOR_LOAD'
  /** The projector's output width does not match the text model's embedding width. */
  | 'ERR_PROJECTOR_MISMATCH'
  /** The prompt (or the generation) does not fit in the session's context. */
  | 'ERR_CONTEXT_FULL'
  /** The image could not be decoded, or is outside the supported limits. */
  | 'ERR_IMAGE'
  /** A GBNF grammar failed to parse. */
  | 'ERR_GRAMMAR'
  /** The object was disposed before or during the call. */
  | 'ERR_DISPOSED'
  /** The call was cancelled through its AbortSignal. */
  | 'ERR_ABORTED'
  /** The GPU ran out of memory. */
  | 'ERR_GPU_MEMORY'
  /** llama.cpp reported a failure that none of the codes above describes. */
  | 'ERR_NATIVE'
  /**
   * A llama-server ({@link ChainOfSpot.connect}) failed: it cannot be reached, answered with an
   * HTTP error or something that is not llama-server's JSON, or did not answer within `timeoutMs`.
   * Or a ggml RPC server (`rpcServers`) cannot be reached when loading, or was lost later (the
   * {@link IsolatedChainOfSpot}'s model process died); or `chain-of-spot rpc-server` cannot listen.
   */
  | 'ERR_REMOTE'
  /** Command line only: the arguments are wrong (exit status 2). */
  | 'ERR_USAGE'
  /** Command line only: an output file or folder cannot be written. */
  | 'ERR_OUTPUT'
  /** `eval` only: the data file is missing or a line is not a question. */
  | 'ERR_EVAL_DATA'
  /** `eval` only: the predictions file cannot be read, written or continued. */
  | 'ERR_EVAL_OUTPUT';

/** The one error class of this package. */
export class ChainOfSpotError extends Error {
  /** A stable, documented code; see {@link ErrorCode}. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ChainOfSpotError';
    this.code = code;
  }
}

const KNOWN_CODES = new Set<ErrorCode>([
  'ERR_BINARY', 'ERR_MODEL_LOAD', 'ERR_PROJECTOR_LOAD', 'ERR_PROJECTOR_MISMATCH', 'ERR_CONTEXT_FULL',
  'ERR_IMAGE', 'ERR_GRAMMAR', 'ERR_DISPOSED', 'ERR_ABORTED', 'ERR_GPU_MEMORY', 'ERR_NATIVE', 'ERR_REMOTE',
  'ERR_USAGE', 'ERR_OUTPUT', 'ERR_EVAL_DATA', 'ERR_EVAL_OUTPUT',
]);

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && KNOWN_CODES.has(value as ErrorCode);
}

/** The error a call on a disposed object rejects with. */
export function disposedError(what: string): ChainOfSpotError {
  return new ChainOfSpotError('ERR_DISPOSED', `${what} has been disposed; create a new one to go on`);
}

/** The error a cancelled call rejects with. */
export function abortedError(reason?: unknown): ChainOfSpotError {
  return new ChainOfSpotError('ERR_ABORTED', 'the operation was aborted', { cause: reason });
}

/**
 * Turns whatever a native call or a library threw into a ChainOfSpotError that carries the
 * caller's stack (captured before the asynchronous work began), as sharp does: a stack that ends
 * inside a worker thread tells the user nothing.
 */
export function rethrowWithCallerStack(error: unknown, callerStack: string | undefined, fallback: ErrorCode = 'ERR_NATIVE'): never {
  const original = error instanceof Error ? error : new Error(String(error));
  // Argument errors stay what they are (TypeError, RangeError); everything else gets a code.
  const isArgumentError = original instanceof TypeError || original instanceof RangeError;
  const nativeCode: unknown = (original as Error & { code?: unknown }).code;
  const wrapped =
    original instanceof ChainOfSpotError || isArgumentError
      ? original
      : new ChainOfSpotError(isErrorCode(nativeCode) ? nativeCode : fallback, original.message, { cause: original });
  if (callerStack) {
    const header = wrapped instanceof ChainOfSpotError ? `${wrapped.name} [${wrapped.code}]` : wrapped.name;
    wrapped.stack = `${header}: ${wrapped.message}\n${callerStack.split('\n').slice(1).join('\n')}`;
  }
  throw wrapped;
}

/** Captures the current stack, to hand to {@link rethrowWithCallerStack} later. */
export function callerStack(): string | undefined {
  return new Error().stack;
}
