#!/usr/bin/env bash
# The GPU check, one command on a lent NVIDIA machine (the `device` tool), under 8 minutes: builds
# the CUDA variant for the machine's GPU, runs the GPU tests (test/gpu) and the native and SDK
# tests on it, the Vulkan GPU tests on the NVIDIA driver's Vulkan when the machine has one and a
# Vulkan binary was carried, then benchmarks the LLaVA-1.5-7B shape fully offloaded and measures
# what parallel decoding gains there (1 and 8 users, sequential against parallel).
#
# That machine has nvcc, CMake and ninja, and NVIDIA's pip packages (nvidia-cublas,
# nvidia-cuda-runtime) under Python's site-packages, but no internet and probably no Node.js. So:
#   here:  scripts/gpu-check.sh --pack    puts what it lacks into build-gpu-carry/ (a Node.js build,
#          node_modules, the vendored llama.cpp, the compiled dist/; under the device tool's
#          64 MiB), then run it there with carry: ["build-gpu-carry"] (and "build-vulkan" when
#          a Vulkan binary should be checked too).
#   there: scripts/gpu-check.sh [--dry-run] [--no-bench]
# --dry-run unpacks, finds node, nvcc and cuBLAS, prints the build command and stops before nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
carry=$root/build-gpu-carry

usage() { echo "usage: scripts/gpu-check.sh [--pack | --dry-run] [--no-bench]" >&2; exit 2; }
mode=run bench=1
for arg in "$@"; do
  case $arg in
    --pack) mode=pack ;;
    --dry-run) mode=dry-run ;;
    --no-bench) bench=0 ;;
    -h|--help) usage ;;
    *) echo "gpu-check: unknown argument $arg" >&2; usage ;;
  esac
done
say() { echo "gpu-check: $*"; }

if [ $mode = pack ]; then
  # Everything a run needs that git does not carry; xz, as the device tool carries 64 MiB at most
  # (level 3 on every core: -6 took minutes longer on a busy 2-core machine for little gain).
  export XZ_OPT=${XZ_OPT:--3 -T0}
  [ -f build/Release/chain_of_spot.node ] || say "note: no build/ CPU binary here; the tests compare the GPU with the CPU build the run makes"
  npx tsc -p tsconfig.json
  node scripts/vendor-llama-cpp.mjs
  rm -rf "$carry" && mkdir -p "$carry"
  tar -C "$(dirname "$(command -v node)")/.." -cJf "$carry/node.tar.xz" bin/node
  # The build's and the tests' modules; the compiler and the docs tools stay here (dist/ is compiled).
  tar -cJf "$carry/node_modules.tar.xz" --exclude=node_modules/typescript --exclude=node_modules/typedoc \
    --exclude=node_modules/typedoc-plugin-markdown --exclude=node_modules/@shikijs --exclude=node_modules/@types node_modules
  tar -cJf "$carry/tree.tar.xz" dist deps/llama.cpp
  du -ch "$carry"/*.tar.xz | tail -1 | { read -r size _; say "carry folder $carry: $size (the device tool carries 64 MiB)"; }
  exit 0
fi

# Unpack what was carried (a run in a full checkout, with node and node_modules, needs none).
if [ -d "$carry" ]; then
  [ -x "$carry/node/bin/node" ] || { mkdir -p "$carry/node" && tar -C "$carry/node" -xJf "$carry/node.tar.xz"; }
  [ -d node_modules ] || tar -xJf "$carry/node_modules.tar.xz"
  [ -f deps/llama.cpp/VENDORED.json ] && [ -d dist ] || tar -xJf "$carry/tree.tar.xz"
  export PATH="$carry/node/bin:$PATH"
fi
command -v node >/dev/null || { say "no Node.js on PATH; run scripts/gpu-check.sh --pack on a machine with one and carry build-gpu-carry" >&2; exit 2; }
[ -d node_modules/cmake-js ] || { say "no node_modules; run scripts/gpu-check.sh --pack and carry build-gpu-carry" >&2; exit 2; }
say "node $(node --version) at $(command -v node)"

# cuBLAS and the CUDA runtime: the toolkit's own when it has them, else NVIDIA's pip packages. Those
# ship versioned libraries only (libcublas.so.13): CMake's FindCUDAToolkit looks for libcublas.so,
# so the unversioned names are linked in build-gpu-libs/.
python=$(command -v python3 || command -v python || true)
pip_dir() { [ -n "$python" ] && "$python" -c "import importlib.util as u, os; s = u.find_spec('nvidia.$1'); print(os.path.dirname(s.origin) if s and s.origin else list(s.submodule_search_locations)[0])" 2>/dev/null || true; }
cmake_args=() libs=$root/build-gpu-libs
cublas=$(pip_dir cublas) cudart=$(pip_dir cuda_runtime)
if [ -n "$cublas" ] && [ -f "$cublas/include/cublas_v2.h" ]; then
  say "cuBLAS from pip: $cublas"
  mkdir -p "$libs"
  for lib in "$cublas"/lib/libcublas.so.* "$cublas"/lib/libcublasLt.so.* ${cudart:+"$cudart"/lib/libcudart.so.*}; do
    [ -e "$lib" ] || continue
    name=$(basename "$lib"); ln -sf "$lib" "$libs/${name%%.so.*}.so"
  done
  [ -e "$libs/libcublas.so" ] && [ -e "$libs/libcublasLt.so" ] || { say "$cublas/lib has no libcublas.so.N and libcublasLt.so.N" >&2; exit 2; }
  includes="-I$cublas/include${cudart:+ -I$cudart/include}"
  cmake_args+=("--CDCUDA_cublas_LIBRARY=$libs/libcublas.so" "--CDCUDA_cublasLt_LIBRARY=$libs/libcublasLt.so"
               "--CDCMAKE_CUDA_FLAGS=$includes" "--CDCMAKE_CXX_FLAGS=$includes")
  [ -e "$libs/libcudart.so" ] && cmake_args+=("--CDCUDA_cudart_LIBRARY=$libs/libcudart.so")
  # At run time the addon finds them there too.
  export LD_LIBRARY_PATH="$cublas/lib${cudart:+:$cudart/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  say "no pip cuBLAS (nvidia-cublas); counting on the CUDA toolkit's own"
fi

# ggml-cuda links the driver API (CUDA::cuda_driver, libcuda.so): the toolkit's stub when it has
# one, else the driver's own libcuda.so.1 (which ships no unversioned name).
nvcc_root=$(dirname "$(dirname "$(command -v nvcc || echo /nonexistent/bin/nvcc)")")
if ! ls "$nvcc_root"/lib64/stubs/libcuda.so "$nvcc_root"/targets/*/lib/stubs/libcuda.so >/dev/null 2>&1; then
  driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ { print $NF; exit }')
  if [ -n "$driver" ]; then
    mkdir -p "$libs" && ln -sf "$driver" "$libs/libcuda.so"
    cmake_args+=("--CDCUDA_cuda_driver_LIBRARY=$libs/libcuda.so")
    say "CUDA driver library: $driver"
  else
    say "no libcuda.so stub in $nvcc_root and no driver libcuda.so.1: ggml-cuda will not link" >&2
  fi
fi

# Only this machine's GPU architecture: all five of the release build would not fit the time.
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ' || true)
cmake_args+=("--CDCMAKE_CUDA_ARCHITECTURES=${arch:-90}-real")
build=(node_modules/.bin/cmake-js compile --out build-cuda --CDCOS_CUDA=ON --parallel "$(nproc)" "${cmake_args[@]}")
say "build: ${build[*]}"
if [ $mode = dry-run ]; then
  command -v nvcc >/dev/null && say "nvcc: $(nvcc --version | tail -1)" || say "would stop here: no nvcc on PATH"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || say "no nvidia-smi"
  say "dry run: stopping before nvcc"
  exit 0
fi

command -v nvcc >/dev/null || { say "no nvcc on PATH; this needs the CUDA toolkit" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
started=$(date +%s)
node scripts/vendor-llama-cpp.mjs
"${build[@]}"
say "CUDA build in $(( $(date +%s) - started )) s"

# The CPU binary the GPU tests compare with: the carried or local build/, else one built now.
[ -f build/Release/chain_of_spot.node ] || node_modules/.bin/cmake-js compile --out build --parallel "$(nproc)"
export CHAIN_OF_SPOT_CPU_BINARY=$root/build/Release/chain_of_spot.node
mocha=(node node_modules/mocha/bin/mocha.js --no-config --timeout 300000)
CHAIN_OF_SPOT_BACKEND=cuda node -e "console.log(require('./dist/lib/index.js').ChainOfSpot.backend())"
CHAIN_OF_SPOT_BACKEND=cuda "${mocha[@]}" dist/test/gpu dist/test/native/model.test.js dist/test/native/session.test.js \
  dist/test/native/chain-of-spot.test.js dist/test/native/parallel.test.js
if [ -f build-vulkan/Release/chain_of_spot.node ] && command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -q 'PHYSICAL_DEVICE_TYPE_DISCRETE_GPU'; then
  CHAIN_OF_SPOT_BACKEND=vulkan "${mocha[@]}" dist/test/gpu
else
  say "no Vulkan check: needs a carried build-vulkan/ and the NVIDIA driver's Vulkan (vulkaninfo)"
fi
say "tests done at $(( $(date +%s) - started )) s"

if [ $bench = 1 ]; then
  CHAIN_OF_SPOT_BACKEND=cuda node dist/bench/run.js --shape 7b --reps 3
  CHAIN_OF_SPOT_BACKEND=cuda node dist/bench/concurrency.js --shape 7b --users 1,8 --questions 2 --answer-tokens 64 --no-server
fi
say "done in $(( $(date +%s) - started )) s"
