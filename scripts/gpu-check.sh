#!/usr/bin/env bash
# The GPU check, one command on a lent NVIDIA machine (the `device` tool), under 8 minutes:
# builds the CUDA variant, runs the native and SDK tests on the CUDA backend, benchmarks the
# LLaVA-1.5-7B shape fully offloaded, printing one short table, and measures what parallel decoding
# gains there, where generation dominates (1 and 8 users, sequential against parallel).
#
# The machine needs Node.js >= 20 and a CUDA toolkit with cuBLAS headers. Carry what it lacks:
#   node_modules (npm ci here), deps/llama.cpp (npm run vendor here), and a Node.js build.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null || { echo "gpu-check: no Node.js on PATH; carry a Node.js build and put its bin/ on PATH" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "gpu-check: no nvcc on PATH; this needs the CUDA toolkit" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export CHAIN_OF_SPOT_BACKEND=cuda

started=$(date +%s)
npm run --silent build:cuda
echo "gpu-check: CUDA build in $(( $(date +%s) - started )) s"
node -e "console.log(require('./dist/lib/index.js').ChainOfSpot.backend())"

npx tsc -p tsconfig.json
npx mocha --no-config --timeout 300000 \
  dist/test/native/model.test.js dist/test/native/session.test.js dist/test/native/chain-of-spot.test.js \
  dist/test/native/parallel.test.js

node dist/bench/run.js --shape 7b --reps 3
node dist/bench/concurrency.js --shape 7b --users 1,8 --questions 2 --answer-tokens 64 --no-server
echo "gpu-check: done in $(( $(date +%s) - started )) s"
