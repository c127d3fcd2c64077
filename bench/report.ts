/** Stage summaries, medians, the targets and the one table the benchmark prints. */
import type { Measured } from './protocol';

/** Where one question's time went. */
export interface Stages {
  /** Our image pipeline (decode, pad, resize, crop). */
  preprocessMs: number;
  imageEncodeMs: number;
  /** Evaluating the image tokens in the text model. */
  imageDecodeMs: number;
  imageTokens: number;
  /** Evaluating text tokens. */
  promptMs: number;
  promptTokens: number;
  generateMs: number;
  generatedTokens: number;
  /** llama_decode calls generating turn one (the region's box). */
  turnOneDecodeSteps: number;
  turnOneTokens: number;
  /** The rest: tokenizing, mtmd's image preparation, the cache's bookkeeping, JS and N-API. */
  otherMs: number;
  totalMs: number;
  peakRssKb: number;
}

export function stages(measured: Measured): Stages {
  const s: Stages = {
    preprocessMs: measured.preprocessMs,
    imageEncodeMs: 0,
    imageDecodeMs: 0,
    imageTokens: 0,
    promptMs: 0,
    promptTokens: 0,
    generateMs: 0,
    generatedTokens: 0,
    turnOneDecodeSteps: 0,
    turnOneTokens: 0,
    otherMs: 0,
    totalMs: measured.totalMs,
    peakRssKb: measured.peakRssKb,
  };
  for (const step of measured.steps) {
    if (step.op === 'image') {
      s.imageEncodeMs += step.encodeMs ?? 0;
      s.imageDecodeMs += step.decodeMs ?? 0;
      s.imageTokens += step.tokens ?? 0;
    } else if (step.op === 'tokens') {
      s.promptMs += step.ms;
      s.promptTokens += step.tokens ?? 0;
    } else if (step.op === 'generate') {
      s.generateMs += step.ms;
      s.generatedTokens += step.tokens ?? 0;
      if (step.turn === 1) {
        s.turnOneDecodeSteps += step.decodes ?? 0;
        s.turnOneTokens += step.tokens ?? 0;
      }
    }
  }
  s.otherMs = s.totalMs - s.preprocessMs - s.imageEncodeMs - s.imageDecodeMs - s.promptMs - s.generateMs;
  return s;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The median of each field on its own (so the medians of the stages need not add up to the median total). */
export function medianStages(list: Stages[]): Stages {
  const result = { ...list[0]! };
  for (const key of Object.keys(result) as (keyof Stages)[]) result[key] = median(list.map((s) => s[key]));
  return result;
}

export interface Target {
  name: string;
  value: number | null;
  /** How the value is shown. */
  shown: string;
  goal: string;
  /** null: reported, no goal; undefined: not measured. */
  met: boolean | null | undefined;
  note: string;
}

export interface Row {
  label: string;
  stages: Stages;
}

function duration(ms: number): string {
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  return ms < 100_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

function rate(tokens: number, ms: number): string {
  return ms > 0 ? `${(tokens / (ms / 1000)).toFixed(tokens / (ms / 1000) < 100 ? 1 : 0)}/s` : '-';
}

export function gb(kb: number): string {
  return `${(kb / 1024 / 1024).toFixed(2)} GB`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The table: one row per variant (medians), then the targets. */
export function renderTable(rows: Row[], targets: Target[]): string {
  const stageTable = table(
    ['variant (median)', 'image prep', 'img encode', 'img tokens', 'prompt', 'generate', 'turn-1 steps', 'other', 'total', 'peak RSS'],
    rows.map(({ label, stages: s }) => [
      label,
      duration(s.preprocessMs),
      duration(s.imageEncodeMs),
      s.imageTokens ? `${s.imageTokens} in ${duration(s.imageDecodeMs)} (${rate(s.imageTokens, s.imageDecodeMs)})` : '-',
      `${s.promptTokens} in ${duration(s.promptMs)} (${rate(s.promptTokens, s.promptMs)})`,
      `${s.generatedTokens} in ${duration(s.generateMs)} (${rate(s.generatedTokens, s.generateMs)})`,
      s.turnOneTokens ? `${s.turnOneDecodeSteps} for ${s.turnOneTokens} tok` : '-',
      duration(s.otherMs),
      duration(s.totalMs),
      gb(s.peakRssKb),
    ]),
  );
  const targetTable = table(
    ['target', 'value', 'goal', 'result', 'note'],
    targets.map((t) => [t.name, t.shown, t.goal, t.met === undefined ? 'not measured' : t.met === null ? 'reported' : t.met ? 'met' : 'MISSED', t.note]),
  );
  return `${stageTable}\n\n${targetTable}`;
}
