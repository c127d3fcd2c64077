// Runs the package (ChainOfSpot on llama.cpp) on a scenes set and writes what it answered, for
// train/evaluate.py to score and to compare with PyTorch.
//
//   node train/package-run.js MODEL MMPROJ questions.jsonl out.jsonl [--limit N] [--logits K]
//
// Per question: the Chain-of-Spot answer, turn one's text and tokens, the box and its source, turn
// two's tokens, the time of the ask; the baseline's answer and tokens. With --logits K, the first K
// questions also get the logits of the first token of each turn (turn two continued from the tokens
// the package itself generated), evaluated step by step through the package's own prompt code.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { dirname, resolve } = require('node:path');
const dist = resolve(__dirname, '..', 'dist', 'lib');
const { ChainOfSpot, Model, loadImage, prepareOriginal, prepareRegion, roiPrompt, answerContinuation } = require(`${dist}/index.js`);
const { evaluatePrompt } = require(`${dist}/procedure/evaluate-prompt.js`);

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

async function firstTokenLogits(modelPath, mmprojPath, image, question, box, boxTokens) {
  const model = await Model.load(modelPath);
  try {
    const projector = await model.loadProjector(mmprojPath, { gpu: false });
    const session = await model.createSession({ contextSize: 1024 });
    const size = projector.info.imageSize;
    const original = await loadImage(image);
    const whole = await prepareOriginal(original, size);
    await evaluatePrompt(session, projector, roiPrompt(question), { original: whole }, { bos: true });
    const turnOne = Array.from(await session.logits());
    await session.evaluate(boxTokens);
    const roi = await prepareRegion(original, box, size);
    await evaluatePrompt(session, projector, answerContinuation(question), { roi }, { bos: false });
    const turnTwo = Array.from(await session.logits());
    return { turnOne, turnTwo };
  } finally {
    await model.dispose();
  }
}

async function main() {
  const [modelPath, mmprojPath, questionsPath, outPath] = process.argv.slice(2);
  const limit = arg('--limit', Infinity);
  const logitsFor = arg('--logits', 0);
  const base = dirname(questionsPath);
  const questions = readFileSync(questionsPath, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l)).slice(0, limit);
  const cos = await ChainOfSpot.load({ model: modelPath, mmproj: mmprojPath });
  const out = [];
  try {
    for (const [i, q] of questions.entries()) {
      const image = resolve(base, q.image);
      const start = performance.now();
      const r = await cos.ask(image, q.question);
      const askMs = performance.now() - start;
      const b = await cos.baseline(image, q.question);
      const row = {
        id: q.id,
        answer: r.answer,
        box: [r.roi.box.left, r.roi.box.top, r.roi.box.right, r.roi.box.bottom],
        source: r.roi.source,
        t1_text: r.turns[0].text,
        t1_tokens: Array.from(r.turns[0].tokens),
        t2_tokens: Array.from(r.turns[1].tokens),
        ask_ms: askMs,
        base_answer: b.answer,
        base_tokens: Array.from(b.turn.tokens),
      };
      if (i < logitsFor) Object.assign(row, { logits: await firstTokenLogits(modelPath, mmprojPath, image, q.question, r.roi.box, r.turns[0].tokens) });
      out.push(JSON.stringify(row));
      if ((i + 1) % 50 === 0) console.log(`${i + 1}/${questions.length}`);
    }
  } finally {
    await cos.dispose();
  }
  writeFileSync(outPath, out.join('\n') + '\n');
  writeFileSync(`${outPath}.done`, '');
  console.log(`${out.length} questions -> ${outPath}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
