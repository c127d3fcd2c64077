/**
 * `chain-of-spot eval DATA.jsonl`: answers every question of a file (Chain-of-Spot or the plain
 * baseline), scores it, and keeps predictions line by line so an interrupted run can resume.
 */
import { IOU_THRESHOLD, planEval, readEvalData, runEval, summarize, type Answerer, type EvalSummary } from '../eval/vqa';
import type { Command } from './args';
import { checkOutputFolder, loadModel } from './io';
import { formatDuration, Progress } from './progress';

export async function evaluate(command: Extract<Command, { command: 'eval' }>, signal: AbortSignal): Promise<number> {
  if (command.out !== undefined) await checkOutputFolder(command.out);
  const items = await readEvalData(command.data);
  const mode = command.baseline ? 'baseline' : 'chain-of-spot';
  const plan = await planEval({ items, mode, limit: command.limit, out: command.out, resume: command.resume });
  const already = plan.total - plan.todo.length;
  // The summary covers these plan.total questions; lines for others (a longer earlier run) are kept, not counted.
  const elsewhere = plan.elsewhere > 0 ? ` (${plan.elsewhere} more lines in ${command.out} are for other questions: kept, not summarised)` : '';
  process.stderr.write(`${plan.total} questions from ${command.data}${already > 0 ? `, ${already} already in ${command.out}` : ''}, ${plan.todo.length} to answer (${mode}${command.reference ? ', reference mode' : ''})${elsewhere}\n`);

  let summary: EvalSummary;
  let interrupted = false;
  if (plan.todo.length === 0) {
    summary = summarize(plan.done);
  } else {
    const cos = await loadModel({ ...command.model, parallel: command.parallel }, signal);
    try {
      const answer: Answerer = async (item, itemSignal) => {
        const options = { maxTokens: command.model.maxTokens, signal: itemSignal, reference: command.reference === true };
        if (command.baseline) {
          const result = await cos.baseline(item.image, item.question, options);
          return { answer: result.answer, region: null, timings: result.timings };
        }
        // Reference mode has no grammar: --no-grammar is then implied.
        const result = await cos.ask(item.image, item.question, { ...options, grammar: command.model.grammar && command.reference !== true });
        return { answer: result.answer, region: result.roi, timings: result.timings };
      };
      const progress = new Progress({ label: 'eval', total: plan.todo.length });
      const onInterrupt = (): void => progress.log('interrupted: stopping after the questions already answered (Ctrl-C again to quit at once)');
      signal.addEventListener('abort', onInterrupt, { once: true });
      let answered = 0;
      const outcome = await runEval(plan, answer, {
        signal,
        concurrency: command.parallel,
        onPrediction: (prediction, item) => {
          if (prediction.error) progress.log(`question ${item.id ?? item.index} (${item.image}): ${prediction.error.message} (${prediction.error.code})`);
          progress.update(++answered);
        },
      }).finally(() => signal.removeEventListener('abort', onInterrupt));
      interrupted = outcome.interrupted;
      if (interrupted) progress.fail(`stopped after ${outcome.answered} of ${plan.todo.length}`);
      else progress.done();
      summary = summarize(outcome.predictions);
    } finally {
      await cos.dispose();
    }
  }
  process.stdout.write(formatSummary(summary, command.out));
  if (interrupted) {
    process.stderr.write(`interrupted: run the same command with --resume to answer the rest${command.out ? '' : ' (add --out FILE to keep predictions)'}\n`);
    return 130;
  }
  return 0;
}

/** The report of an evaluation: accuracies as percentages over the scored predictions. */
export function formatSummary(summary: EvalSummary, out: string | undefined): string {
  const percent = (value: number): string => `${(value * 100).toFixed(2)} %`;
  const lines = [
    `Predictions:  ${summary.predictions}${out === undefined ? '' : ` in ${out}`} (${summary.scored} with human answers, ${summary.failed} failed)`,
  ];
  if (summary.scored === 0) {
    lines.push('Accuracy:     nothing to score: no question has "answers"');
  } else {
    lines.push(
      `VQA accuracy: ${percent(summary.vqa)} (official average over the leave-one-answer-out subsets: ${percent(summary.vqaAveraged)})`,
      `Exact match:  ${percent(summary.exact)}`,
    );
  }
  if (summary.boxes > 0) {
    lines.push(`Region:       ${percent(summary.boxHits)} with IoU >= ${IOU_THRESHOLD} against the true box (mean IoU ${summary.meanIou.toFixed(3)}, ${summary.boxes} questions)`);
  }
  if (summary.meanMs > 0) lines.push(`Time:         ${formatDuration(summary.meanMs)} per question`);
  return `${lines.join('\n')}\n`;
}

