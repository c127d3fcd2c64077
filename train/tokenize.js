// Token ids of every training/evaluation conversation, built with the package's own prompt
// functions and llama.cpp's tokenizer (through the addon), so PyTorch trains on exactly the
// tokens the SDK puts into the KV cache. Image positions are written as -1 (the original image)
// and -2 (the zoomed region); Python expands each to the projector's token count.
//
//   node train/tokenize.js VOCAB_GGUF questions.jsonl out.jsonl
//
// Per question: t1 = BOS + turn one's prompt (as ChainOfSpot.ask evaluates it), box = the tokens of
// the true box text (what turn one should generate), t2 = answerContinuation (starts with </s>),
// ans = the answer's tokens (" 7": what turn two should generate), base = BOS + baselinePrompt.
// Every sequence is followed by EOS (2) as the end of generation.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { resolve } = require('node:path');
const dist = resolve(__dirname, '..', 'dist', 'lib');
const { Model, roiPrompt, answerContinuation, baselinePrompt } = require(`${dist}/index.js`);
const { tokenizeParts } = require(`${dist}/procedure/evaluate-prompt.js`);

const IMAGE_SLOT = { original: -1, roi: -2 };

/** The ids evaluatePrompt puts into the cache for `parts`, with one placeholder per image. */
function promptIds(model, parts, bos) {
  const ids = [];
  let run = [];
  let first = true;
  const flush = () => {
    if (run.length === 0) return;
    ids.push(...tokenizeParts(model, run, bos && first));
    first = false;
    run = [];
  };
  for (const part of parts) {
    if (part.type !== 'image') {
      run.push(part);
      continue;
    }
    flush();
    if (first && bos) ids.push(model.info.bos);
    first = false;
    ids.push(IMAGE_SLOT[part.image]);
  }
  flush();
  return ids;
}

async function main() {
  const [vocab, questionsPath, outPath] = process.argv.slice(2);
  const model = await Model.load(vocab);
  try {
    const cache = new Map();
    const memo = (key, f) => {
      if (!cache.has(key)) cache.set(key, f());
      return cache.get(key);
    };
    const lines = readFileSync(questionsPath, 'utf8').split('\n').filter((l) => l.trim() !== '');
    const out = [];
    for (const line of lines) {
      const q = JSON.parse(line);
      const row = {
        id: q.id,
        t1: memo(`t1\0${q.question}`, () => promptIds(model, roiPrompt(q.question), true)),
        box: q.box_text === undefined ? [] : memo(`box\0${q.box_text}`, () => Array.from(model.tokenize(q.box_text))),
        t2: memo(`t2\0${q.question}`, () => promptIds(model, answerContinuation(q.question), false)),
        ans: memo(`ans\0${q.answers[0]}`, () => Array.from(model.tokenize(q.answers[0]))),
        base: memo(`base\0${q.question}`, () => promptIds(model, baselinePrompt(q.question), true)),
      };
      out.push(JSON.stringify(row));
    }
    writeFileSync(outPath, out.join('\n') + '\n');
    console.log(`${out.length} conversations -> ${outPath} (eos ${model.info.eos}, bos ${model.info.bos})`);
  } finally {
    await model.dispose();
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
