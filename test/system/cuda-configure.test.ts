import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../../..');

/** Where this machine's CUDA toolkit stands: none, nvcc without cuBLAS (as here), or complete. */
function cudaToolkit(): 'none' | 'no-cublas' | 'complete' {
  const nvcc = spawnSync('nvcc', ['--version'], { stdio: 'ignore' });
  if (nvcc.status !== 0) return 'none';
  const roots = [process.env.CUDA_PATH, '/usr/local/cuda', '/usr'].filter((r): r is string => !!r);
  return roots.some((r) => existsSync(path.join(r, 'include', 'cublas_v2.h'))) ? 'complete' : 'no-cublas';
}

/** `cmake-js configure` of the addon into a fresh folder, with these cmake-js `--CD` options; the folder is removed after `inspect`. */
async function configure(options: string[], inspect: (run: { status: number | null; output: string }, out: string) => Promise<void>): Promise<void> {
  const out = await mkdtemp(path.join(tmpdir(), 'cos-configure-'));
  try {
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
    const run = spawnSync(process.execPath, [cmakeJs, 'configure', '--out', out, ...options], { cwd: ROOT, encoding: 'utf8' });
    await inspect({ status: run.status, output: (run.stdout + run.stderr).replace(/\s+/g, ' ') }, out); // CMake wraps its messages
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** Whether this machine has what the Vulkan build needs (Debian's package names). */
function vulkanBuildTools(): boolean {
  return spawnSync('glslc', ['--version'], { stdio: 'ignore' }).status === 0 && existsSync('/usr/include/vulkan/vulkan.h') && existsSync('/usr/include/spirv');
}

describe('the CUDA build', function () {
  this.timeout(300_000);

  it('configures only with a complete CUDA toolkit, and otherwise fails early naming what is missing', () =>
    configure(['--CDCOS_CUDA=ON'], async (run, out) => {
      const toolkit = cudaToolkit();
      if (toolkit === 'complete') {
        assert.equal(run.status, 0, run.output);
        // Configured is not enough: CMake must have turned ggml's CUDA backend on.
        assert.match(await readFile(path.join(out, 'CMakeCache.txt'), 'utf8'), /^GGML_CUDA:BOOL=ON$/m);
      } else {
        assert.notEqual(run.status, 0);
        assert.match(run.output, toolkit === 'none' ? /no CUDA toolkit found/ : /has no cuBLAS, which ggml's CUDA backend links/);
        assert.match(run.output, /build without CHAIN_OF_SPOT_CUDA \/ COS_CUDA for the CPU backend/);
      }
    }));
});

describe('the Vulkan build', function () {
  this.timeout(300_000);
  const packages = /apt-get install glslc libvulkan-dev spirv-headers/;

  it('configures with glslc and the Vulkan headers, turning ggml\'s Vulkan backend on; without them fails naming the packages', () =>
    configure(['--CDCOS_VULKAN=ON'], async (run, out) => {
      if (vulkanBuildTools()) {
        assert.equal(run.status, 0, run.output);
        assert.match(await readFile(path.join(out, 'CMakeCache.txt'), 'utf8'), /^GGML_VULKAN:BOOL=ON$/m);
      } else {
        assert.notEqual(run.status, 0);
        assert.match(run.output, packages);
      }
    }));

  it('a glslc that is gone fails at configure time, naming glslc and the packages that bring it', () =>
    configure(['--CDCOS_VULKAN=ON', '--CDVulkan_GLSLC_EXECUTABLE=/nonexistent/glslc'], async (run) => {
      assert.notEqual(run.status, 0);
      assert.match(run.output, /COS_VULKAN: no glslc \(the GLSL to SPIR-V compiler that builds ggml's shaders\) found/);
      assert.match(run.output, packages);
      assert.match(run.output, /LunarG Vulkan SDK/);
      assert.match(run.output, /build without CHAIN_OF_SPOT_VULKAN \/ COS_VULKAN for the CPU backend/);
    }));
});
