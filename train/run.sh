#!/usr/bin/env bash
# The demo model from scratch: scenes -> tokens -> training -> GGUF pair in assets/demo-model/ ->
# held-out evaluation of the package against PyTorch. `npm run train` runs this. Scenes, tokens and
# training each leave a stamp (a .stamp file: the counts, seeds, options and the hashes of the files
# the step read); re-running skips a step only when its stamp matches, and training resumes from its
# checkpoints only when they were made with the same data and options (else they are moved to
# $WORK/superseded/ and training starts over), so re-running continues an interrupted run and a
# changed size or setting redoes what it changes. Needs scripts/setup-python.sh run once (Debian's
# PyTorch, NumPy, Pillow, OpenBLAS) and the native addon built.
#
#   WORK=.cache/train/demo STEPS_A=3000 STEPS_B=4000 TRAIN_COUNT=40000 HELDOUT_COUNT=500 train/run.sh [--no-eval]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
PY=/usr/bin/python3
WORK=${WORK:-.cache/train/demo}
SCENES=${SCENES:-.cache/scenes}
STEPS_A=${STEPS_A:-3000}
STEPS_B=${STEPS_B:-4000}
TRAIN_COUNT=${TRAIN_COUNT:-40000}
HELDOUT_COUNT=${HELDOUT_COUNT:-500}
CONFIG=${CONFIG:-'{"v_width": 96, "v_ffn": 384, "t_width": 128, "t_ffn": 384, "t_layers": 3}'}
OUT=${OUT:-assets/demo-model}
mkdir -p "$WORK"

$PY -c 'import torch, numpy, PIL' 2>/dev/null || { echo "PyTorch, NumPy or Pillow missing for $PY: run scripts/setup-python.sh" >&2; exit 1; }
npx tsc -p tsconfig.json

# A short hash of files' contents, for stamps.
hash_files() { cat "$@" | sha256sum | cut -c1-16; }
# Whether the stamp file STAMP holds KEY. A step writes its stamp once its output is whole, so a
# matching stamp means the output is there and was made from what KEY describes.
current() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# 1. Scenes: training (seed 1, training photos) and held-out (seed 9001, a photo never trained on).
scenes() { # SET COUNT SEED BACKGROUNDS
  local out="$SCENES/$1"
  local key="count=$2 seed=$3 backgrounds=$(hash_files "$4"/*) generator=$(hash_files lib/scenes/*.ts)"
  current "$out/questions.jsonl.stamp" "$key" && return
  rm -rf "$out"
  node -e 'require("./dist/lib/scenes/index.js").writeScenes({ count: Number(process.argv[1]), seed: Number(process.argv[2]), out: process.argv[3], backgrounds: process.argv[4] }).then((r) => console.log(r));' "$2" "$3" "$out" "$4"
  echo "$key" > "$out/questions.jsonl.stamp"
}
scenes train "$TRAIN_COUNT" 1 test/fixtures/backgrounds/train
scenes heldout "$HELDOUT_COUNT" 9001 test/fixtures/backgrounds/heldout

# 2. Token ids of every conversation, by the package's prompt code and llama.cpp's tokenizer.
node -e '
const t = require("./dist/lib/models/tiny-model.js");
const { writeFileSync } = require("node:fs");
writeFileSync(process.argv[1] + "/vocab.json", JSON.stringify(t.tinyVocab().tokens));
t.ensureTinyLlava(process.argv[1] + "/vocab", t.TINY_LLAVA_FAST).then(() => undefined);' "$WORK"
VOCAB_GGUF="$WORK/vocab/tiny-llava-112.gguf"
VOCAB_SIZE=$($PY -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$WORK/vocab.json")
for set in train heldout; do
  key="questions=$(hash_files "$SCENES/$set/questions.jsonl") vocab=$(hash_files "$VOCAB_GGUF") code=$(hash_files train/tokenize.js dist/lib/procedure/*.js)"
  current "$WORK/$set-tokens.jsonl.stamp" "$key" && continue
  rm -f "$WORK/$set-tokens.jsonl.stamp"
  node train/tokenize.js "$VOCAB_GGUF" "$SCENES/$set/questions.jsonl" "$WORK/$set-tokens.jsonl"
  echo "$key" > "$WORK/$set-tokens.jsonl.stamp"
done

# 3. Training, resumed from $WORK/stage-*.pt when they were made with these data and options (the
#    stamp describes the checkpoints, so it is written before training starts).
TRAIN_ARGS=(--work "$WORK" --scenes "$SCENES/train" --tokens "$WORK/train-tokens.jsonl" --vocab-size "$VOCAB_SIZE"
  --steps-a "$STEPS_A" --batch-a 32 --lr-a 2e-3 --steps-b "$STEPS_B" --cos-batch 2 --base-batch 3 --t1-batch 8 --t2-batch 6 --lr-b 2e-3
  --config "$CONFIG")
key="${TRAIN_ARGS[*]} data=$(hash_files "$WORK/train-tokens.jsonl" "$SCENES/train/questions.jsonl" "$SCENES/train/questions.jsonl.stamp")"
if ! current "$WORK/checkpoints.stamp" "$key"; then
  stale=$(cd "$WORK" && ls stage-a.pt stage-b.pt final.pt 2>/dev/null || true)
  if [ -n "$stale" ]; then
    echo "training data or options changed: moving $(echo $stale) to $WORK/superseded/ and training from the start" >&2
    rm -rf "$WORK/superseded" && mkdir -p "$WORK/superseded"
    (cd "$WORK" && mv $stale superseded/)
  fi
  echo "$key" > "$WORK/checkpoints.stamp"
fi
$PY train/train.py "${TRAIN_ARGS[@]}" 2>&1 | tee -a "$WORK/train.log"

# 4. Export: F16-rounded weights -> the GGUF pair.
$PY train/export.py "$WORK/final.pt" "$WORK/export"
node -e 'require("./dist/lib/models/demo-model.js").writeDemoModel(process.argv[1], process.argv[2]).then((f) => console.log(f));' "$WORK/export" "$OUT"

[ "${1:-}" = "--no-eval" ] && exit 0

# 5. Held-out evaluation: the package (ask + baseline, logits of the first 20) and PyTorch on the
#    same questions, side by side (evaluate.py waits for the package's run to finish, and fails if
#    that run ends without finishing).
rm -f "$WORK/package-heldout.jsonl.done"
node train/package-run.js "$OUT/cos-demo-112.gguf" "$OUT/cos-demo-112-mmproj.gguf" "$SCENES/heldout/questions.jsonl" "$WORK/package-heldout.jsonl" --logits 20 &
$PY train/evaluate.py "$WORK/export/rounded.pt" "$SCENES/heldout" "$WORK/heldout-tokens.jsonl" "$WORK/vocab.json" \
  --package "$WORK/package-heldout.jsonl" --package-pid $! --out "$WORK/heldout-report.json"
wait
