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

describe('the CUDA build', function () {
  this.timeout(300_000);

  it('configures only with a complete CUDA toolkit, and otherwise fails early naming what is missing', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'cos-cuda-'));
    try {
      const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
      const run = spawnSync(process.execPath, [cmakeJs, 'configure', '--out', out, '--CDCOS_CUDA=ON'], { cwd: ROOT, encoding: 'utf8' });
      const output = (run.stdout + run.stderr).replace(/\s+/g, ' '); // CMake wraps its messages
      const toolkit = cudaToolkit();
      if (toolkit === 'complete') {
        assert.equal(run.status, 0, output);
        // Configured is not enough: CMake must have turned ggml's CUDA backend on.
        assert.match(await readFile(path.join(out, 'CMakeCache.txt'), 'utf8'), /^GGML_CUDA:BOOL=ON$/m);
      } else {
        assert.notEqual(run.status, 0);
        assert.match(output, toolkit === 'none' ? /no CUDA toolkit found/ : /has no cuBLAS, which ggml's CUDA backend links/);
        assert.match(output, /build without CHAIN_OF_SPOT_CUDA \/ COS_CUDA for the CPU backend/);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
