# For builds of llama.cpp's own CMake project (llama-server: scripts/build-llama-server.mjs), passed
# as -DCMAKE_PROJECT_INCLUDE: the addon's CPU level (cpu-level.cmake) applied after project(), before
# ggml declares its options, so llama-server runs the same kernels as the addon.
include(${CMAKE_CURRENT_LIST_DIR}/cpu-level.cmake)
set(COS_CPU_LEVEL "auto" CACHE STRING "x86-64, x86-64-v3, x86-64-v4, auto (the best this CPU runs) or native")
cos_apply_cpu_level(${COS_CPU_LEVEL})
