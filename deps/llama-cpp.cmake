# The llama.cpp build settings that the addon (../CMakeLists.txt) and the benchmark's C++ floor
# (../bench/floor/CMakeLists.txt) share, so that both build the same libraries. Include it after
# project(); then add_subdirectory(${LLAMA_DIR} ...). Sets LLAMA_DIR and LLAMA_COMMIT (read from
# the pin, deps/llama.cpp.json).
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
# Keep llama.cpp's and ggml's symbols private to this addon, so another addon in the same
# process (node-llama-cpp, say) linking a different llama.cpp cannot clash with ours.
set(CMAKE_C_VISIBILITY_PRESET hidden)
set(CMAKE_CXX_VISIBILITY_PRESET hidden)
set(CMAKE_VISIBILITY_INLINES_HIDDEN ON)

option(COS_CUDA "Build ggml's CUDA backend (needs the full CUDA toolkit, cuBLAS included)" OFF)
option(COS_VULKAN "Build ggml's Vulkan backend (needs glslc, the Vulkan headers and loader, SPIR-V headers)" OFF)

set(LLAMA_DIR ${CMAKE_CURRENT_LIST_DIR}/llama.cpp)
if (NOT EXISTS ${LLAMA_DIR}/VENDORED.json)
  message(FATAL_ERROR "deps/llama.cpp is missing: run `node scripts/vendor-llama-cpp.mjs` first")
endif()
file(READ ${CMAKE_CURRENT_LIST_DIR}/llama.cpp.json LLAMA_PIN)
string(JSON LLAMA_COMMIT GET ${LLAMA_PIN} commit)

# ccache, when installed, makes rebuilds after a clean checkout fast (CI installs it).
find_program(CCACHE_PROGRAM ccache)
if (CCACHE_PROGRAM)
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

if (COS_CUDA)
  if (NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Ampere (80, 86), Ada (89) and Hopper (90), plus PTX for newer GPUs.
    set(CMAKE_CUDA_ARCHITECTURES "80-real;86-real;89-real;90-real;90-virtual")
  endif()
  find_package(CUDAToolkit)
  if (NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "COS_CUDA: no CUDA toolkit found. Install the CUDA toolkit (nvcc, cudart, cuBLAS) "
                        "from NVIDIA and put nvcc on PATH, or build without CHAIN_OF_SPOT_CUDA / COS_CUDA for the CPU backend.")
  endif()
  if (NOT TARGET CUDA::cublas)
    message(FATAL_ERROR "COS_CUDA: the CUDA toolkit at ${CUDAToolkit_BIN_DIR} (CUDA ${CUDAToolkit_VERSION}) "
                        "has no cuBLAS, which ggml's CUDA backend links. Install cuBLAS (NVIDIA's libcublas-dev / "
                        "cuda-libraries-dev package for your CUDA version), or build without CHAIN_OF_SPOT_CUDA / COS_CUDA for the CPU backend.")
  endif()
  set(GGML_CUDA ON CACHE BOOL "" FORCE)
endif()

if (COS_VULKAN)
  # ggml's own CMake asks for the same with REQUIRED, whose message names no package; ours does.
  set(COS_VULKAN_PACKAGES "Debian/Ubuntu: `apt-get install glslc libvulkan-dev spirv-headers`; Fedora: "
      "`dnf install glslc vulkan-loader-devel vulkan-headers spirv-headers-devel`; elsewhere the LunarG Vulkan SDK "
      "(https://vulkan.lunarg.com). Or build without CHAIN_OF_SPOT_VULKAN / COS_VULKAN for the CPU backend.")
  find_package(Vulkan COMPONENTS glslc)
  # EXISTS too: a cache can name a header folder or a glslc that has since been removed.
  if (NOT Vulkan_FOUND OR NOT EXISTS "${Vulkan_INCLUDE_DIR}/vulkan/vulkan.h")
    message(FATAL_ERROR "COS_VULKAN: no Vulkan headers and loader (vulkan/vulkan.h, libvulkan) found. ${COS_VULKAN_PACKAGES}")
  endif()
  if (NOT Vulkan_glslc_FOUND OR NOT EXISTS "${Vulkan_GLSLC_EXECUTABLE}")
    message(FATAL_ERROR "COS_VULKAN: no glslc (the GLSL to SPIR-V compiler that builds ggml's shaders) found. ${COS_VULKAN_PACKAGES}")
  endif()
  find_package(SPIRV-Headers CONFIG QUIET)
  if (NOT SPIRV-Headers_FOUND)
    message(FATAL_ERROR "COS_VULKAN: no SPIR-V headers (SPIRV-HeadersConfig.cmake) found. ${COS_VULKAN_PACKAGES}")
  endif()
  set(GGML_VULKAN ON CACHE BOOL "" FORCE)
endif()

# llama.cpp: libraries only.
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
foreach (off LLAMA_BUILD_COMMON LLAMA_BUILD_TESTS LLAMA_BUILD_TOOLS LLAMA_BUILD_EXAMPLES LLAMA_BUILD_SERVER
             LLAMA_BUILD_APP LLAMA_OPENSSL LLAMA_SUBPROCESS MTMD_VIDEO LLAMA_ALL_WARNINGS GGML_OPENMP)
  set(${off} OFF CACHE BOOL "" FORCE)
endforeach()
set(LLAMA_BUILD_MTMD ON CACHE BOOL "" FORCE)
# ggml's RPC backend: the client (ChainOfSpot.load's rpcServers) and the server (`chain-of-spot
# rpc-server`). TCP only: the RDMA transport would link libibverbs where the build machine has it,
# which a prebuilt binary cannot count on.
set(GGML_RPC ON CACHE BOOL "" FORCE)
set(GGML_RPC_RDMA OFF CACHE BOOL "" FORCE)
string(SUBSTRING ${LLAMA_COMMIT} 0 8 LLAMA_SHORT_COMMIT)
set(LLAMA_BUILD_COMMIT ${LLAMA_SHORT_COMMIT} CACHE STRING "" FORCE)
set(LLAMA_BUILD_NUMBER 0 CACHE STRING "" FORCE)
