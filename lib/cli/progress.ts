/**
 * A progress display for the command line: a redrawn bar on a terminal, plain lines elsewhere
 * (a log file or CI output should get a few readable lines, not hundreds of carriage returns).
 */

/** Where progress is written: stderr, in the command line. */
export interface ProgressStream {
  write(text: string): unknown;
  /** True on a terminal: the bar is redrawn in place. Otherwise plain lines are written. */
  readonly isTTY?: boolean;
  /** The terminal's width in characters (default 80). */
  readonly columns?: number;
}

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** What is in progress, e.g. `loading model`. */
  label: string;
  /**
   * How many items there are. Without it progress is a fraction from 0 to 1 (no counts, no ETA);
   * with it, a count of items done, with the time per item and an estimate of the time left.
   */
  total?: number;
  /** Where to write (default `process.stderr`). */
  stream?: ProgressStream;
  /** The clock, in milliseconds (for tests; default `performance.now`). */
  now?: () => number;
}

/** What {@link formatProgress} draws. */
export interface ProgressState {
  label: string;
  /** Items done, or the fraction done when `total` is undefined. */
  done: number;
  total?: number;
  elapsedMs: number;
  /** Characters available (the bar shrinks to fit, down to 10 cells). */
  width: number;
}

/** Smallest interval between two redraws of the bar, so a fast update rate costs no terminal time. */
const REDRAW_MS = 100;
/** Without a terminal a counted progress writes a line at each tenth of the way. */
const PLAIN_STEPS = 10;

/**
 * A duration for people: `850 ms`, `1.2 s`, `42 s`, `3 min 05 s`, `1 h 02 min`.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
}

/**
 * One line of progress: `label [█████░░░░░]  50%` for a fraction, and for a count
 * `label [█████░░░░░] 5/10  50% · 1.2 s/item · ETA 6.0 s`.
 */
export function formatProgress(state: ProgressState): string {
  const { done, total } = state;
  const fraction = clamp01(total === undefined ? done : total === 0 ? 1 : done / total);
  const percent = `${String(Math.floor(fraction * 100)).padStart(3)}%`;
  let details = '';
  if (total !== undefined) {
    details = ` ${done}/${total} ${percent}`;
    if (done > 0) {
      const perItem = state.elapsedMs / done;
      details += ` · ${formatDuration(perItem)}/item`;
      if (done < total) details += ` · ETA ${formatDuration(perItem * (total - done))}`;
    }
  } else {
    details = ` ${percent}`;
  }
  const cells = Math.max(10, Math.min(40, state.width - state.label.length - details.length - 3));
  const filled = Math.round(fraction * cells);
  return `${state.label} [${'█'.repeat(filled)}${'░'.repeat(cells - filled)}]${details}`;
}

/** Progress of one task, on a stream. */
export class Progress {
  readonly #label: string;
  readonly #total: number | undefined;
  readonly #stream: ProgressStream;
  readonly #now: () => number;
  readonly #start: number;
  #done = 0;
  #lastDraw = -Infinity;
  #plainStep = 0;
  /** Whether a bar is on screen, so a log line or the last line must first clear it. */
  #drawn = false;

  constructor(options: ProgressOptions) {
    this.#label = options.label;
    this.#total = options.total;
    this.#stream = options.stream ?? process.stderr;
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
    if (this.#stream.isTTY) this.#draw();
  }

  /** Items done so far (or the fraction done, without a total). */
  update(done: number): void {
    this.#done = done;
    if (this.#stream.isTTY) {
      const complete = this.#total === undefined ? done >= 1 : done >= this.#total;
      if (complete || this.#now() - this.#lastDraw >= REDRAW_MS) this.#draw();
    } else if (this.#total !== undefined && this.#total > 0) {
      const step = Math.floor((done / this.#total) * PLAIN_STEPS);
      if (step > this.#plainStep) {
        this.#plainStep = step;
        this.#stream.write(`${this.#line(Infinity)}\n`);
      }
    }
  }

  /** Writes a line of text without garbling the bar (the bar is drawn again below it). */
  log(text: string): void {
    this.#clear();
    this.#stream.write(`${text}\n`);
    if (this.#stream.isTTY) this.#draw();
  }

  /** Ends the progress with `label… done in 1.2 s` (plus `note`, if given). */
  done(note?: string): void {
    this.#finish(`done in ${formatDuration(this.#now() - this.#start)}${note ? `, ${note}` : ''}`);
  }

  /** Ends the progress with `label… failed` (or `label… <reason>`). */
  fail(reason = 'failed'): void {
    this.#finish(reason);
  }

  #finish(outcome: string): void {
    this.#clear();
    this.#stream.write(`${this.#label}… ${outcome}\n`);
  }

  #line(width: number): string {
    const state: ProgressState = { label: this.#label, done: this.#done, elapsedMs: this.#now() - this.#start, width };
    if (this.#total !== undefined) state.total = this.#total;
    return formatProgress(state);
  }

  #draw(): void {
    this.#lastDraw = this.#now();
    // Leave the last column free: writing into it wraps the line on some terminals.
    this.#stream.write(`\r${this.#line((this.#stream.columns ?? 80) - 1)}\x1b[K`);
    this.#drawn = true;
  }

  #clear(): void {
    if (!this.#drawn) return;
    this.#stream.write('\r\x1b[K');
    this.#drawn = false;
  }
}

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, value));
}
