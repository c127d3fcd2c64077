/**
 * Argument checks shared by the public API: wrong types throw TypeError, values out of range
 * RangeError, before any work starts (as Node's own APIs and better-sqlite3 do).
 */

/** An options argument: undefined becomes {}, anything but a plain object is a TypeError. */
export function optionsObject<T extends object>(value: T | undefined, name = 'options'): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError(`${name} must be an object`);
  return value;
}

/** A whole number in [min, max], or the fallback when undefined. */
export function integerOption(value: unknown, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name} must be a number`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
  }
  return value;
}

/** A finite number in [min, max], or the fallback when undefined. */
export function numberOption(value: unknown, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value)) throw new TypeError(`${name} must be a number`);
  if (value < min || value > max) throw new RangeError(`${name} must be from ${min} to ${max}, got ${value}`);
  return value;
}

/** A boolean, or the fallback when undefined. */
export function booleanOption(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean`);
  return value;
}

/** A function, or undefined. */
export function functionOption<F extends (...args: never[]) => unknown>(value: unknown, name: string): F | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw new TypeError(`${name} must be a function`);
  return value as F;
}

/** A non-empty string. */
export function requiredString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string`);
  if (value.length === 0) throw new RangeError(`${name} must not be empty`);
  return value;
}

/** An AbortSignal, or undefined. */
export function signalOption(value: unknown, name = 'signal'): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw new TypeError(`${name} must be an AbortSignal`);
  return value;
}

/** The most RPC servers one model may use (ggml-rpc.h's GGML_RPC_MAX_SERVERS). */
export const MAX_RPC_SERVERS = 16;

/**
 * A list of ggml RPC servers, `host:port` each (an IPv4 address or a host name, no scheme), at
 * least one and at most {@link MAX_RPC_SERVERS}, none twice; undefined stays undefined.
 */
export function rpcServersOption(value: unknown, name = 'rpcServers'): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of 'host:port' strings`);
  if (value.length === 0 || value.length > MAX_RPC_SERVERS) throw new RangeError(`${name} must list from 1 to ${MAX_RPC_SERVERS} servers, got ${value.length}`);
  for (const server of value) {
    if (typeof server !== 'string') throw new TypeError(`${name} must be an array of 'host:port' strings, got ${server === null ? 'null' : typeof server}`);
    const match = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(server);
    if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
      throw new RangeError(`${name}: ${JSON.stringify(server)} is not 'host:port' (an IPv4 address or host name, and a port from 1 to 65535)`);
    }
  }
  if (new Set(value).size !== value.length) throw new RangeError(`${name} lists a server twice`);
  return [...(value as string[])];
}

/**
 * Throws TypeError unless `value` is a number, RangeError unless it is a positive integer.
 * @internal
 */
export function assertPositiveInteger(value: number, name: string): void {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
