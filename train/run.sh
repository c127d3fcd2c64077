#!/usr/bin/env bash
# The demo model from scratch: scenes -> tokens -> training -> GGUF pair in assets/demo-model/ ->
# held-out evaluation of the package against PyTorch. `npm run train` runs this. Every step skips
# what is already done, and training resumes from its checkpoints, so re-running continues an
# interrupted run. Needs scripts/setup-python.sh run once (Debian's PyTorch, NumPy, Pillow, OpenBLAS)
# and the native addon built.
#
#   WORK=.cache/train/demo STEPS_A=3000 STEPS_B=4000 train/run.sh [--no-eval]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
PY=/usr/bin/python3
WORK=${WORK:-.cache/train/demo}
SCENES=${SCENES:-.cache/scenes}
STEPS_A=${STEPS_A:-3000}
STEPS_B=${STEPS_B:-4000}
CONFIG=${CONFIG:-'{"v_width": 96, "v_ffn": 384, "t_width": 128, "t_ffn": 384, "t_layers": 3}'}
OUT=${OUT:-assets/demo-model}
mkdir -p "$WORK"

$PY -c 'import torch, numpy, PIL' 2>/dev/null || { echo "PyTorch, NumPy or Pillow missing for $PY: run scripts/setup-python.sh" >&2; exit 1; }
npx tsc -p tsconfig.json

# 1. Scenes: training (seed 1, training photos) and held-out (seed 9001, a photo never trained on).
node -e '
const { writeScenes } = require("./dist/lib/scenes/index.js");
const { existsSync } = require("node:fs");
(async () => {
  for (const [count, seed, out, backgrounds] of [
    [40000, 1, process.argv[1] + "/train", "test/fixtures/backgrounds/train"],
    [500, 9001, process.argv[1] + "/heldout", "test/fixtures/backgrounds/heldout"],
  ]) {
    if (existsSync(out + "/questions.jsonl")) continue;
    console.log(await writeScenes({ count, seed, out, backgrounds }));
  }
})();' "$SCENES"

# 2. Token ids of every conversation, by the package's prompt code and llama.cpp's tokenizer.
node -e '
const t = require("./dist/lib/models/tiny-model.js");
const { writeFileSync } = require("node:fs");
writeFileSync(process.argv[1] + "/vocab.json", JSON.stringify(t.tinyVocab().tokens));
t.ensureTinyLlava(process.argv[1] + "/vocab", t.TINY_LLAVA_FAST).then(() => undefined);' "$WORK"
VOCAB_GGUF="$WORK/vocab/tiny-llava-112.gguf"
VOCAB_SIZE=$($PY -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$WORK/vocab.json")
for set in train heldout; do
  [ -f "$WORK/$set-tokens.jsonl" ] || node train/tokenize.js "$VOCAB_GGUF" "$SCENES/$set/questions.jsonl" "$WORK/$set-tokens.jsonl"
done

# 3. Training (resumes from $WORK/stage-*.pt).
$PY train/train.py --work "$WORK" --scenes "$SCENES/train" --tokens "$WORK/train-tokens.jsonl" --vocab-size "$VOCAB_SIZE" \
  --steps-a "$STEPS_A" --batch-a 32 --lr-a 2e-3 --steps-b "$STEPS_B" --cos-batch 2 --base-batch 3 --t1-batch 8 --t2-batch 6 --lr-b 2e-3 \
  --config "$CONFIG" 2>&1 | tee -a "$WORK/train.log"

# 4. Export: F16-rounded weights -> the GGUF pair.
$PY train/export.py "$WORK/final.pt" "$WORK/export"
node -e 'require("./dist/lib/models/demo-model.js").writeDemoModel(process.argv[1], process.argv[2]).then((f) => console.log(f));' "$WORK/export" "$OUT"

[ "${1:-}" = "--no-eval" ] && exit 0

# 5. Held-out evaluation: the package (ask + baseline, logits of the first 20) and PyTorch on the
#    same questions, side by side (evaluate.py waits for the package's run to finish).
rm -f "$WORK/package-heldout.jsonl.done"
node train/package-run.js "$OUT/cos-demo-112.gguf" "$OUT/cos-demo-112-mmproj.gguf" "$SCENES/heldout/questions.jsonl" "$WORK/package-heldout.jsonl" --logits 20 &
$PY train/evaluate.py "$WORK/export/rounded.pt" "$SCENES/heldout" "$WORK/heldout-tokens.jsonl" "$WORK/vocab.json" \
  --package "$WORK/package-heldout.jsonl" --out "$WORK/heldout-report.json"
wait
