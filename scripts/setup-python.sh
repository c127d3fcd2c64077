#!/bin/sh
# Installs the Python side of the demo model's training (train/): Debian's PyTorch, NumPy and
# Pillow, and OpenBLAS beside PyTorch (Debian's python3-torch links the reference BLAS by default,
# 5-10x slower; with libopenblas0-pthread installed the BLAS alternative switches to OpenBLAS).
# Run as root (or with sudo). Everything in train/ runs with /usr/bin/python3, not a pyenv shim.
set -eu
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends python3-torch libopenblas0-pthread python3-numpy python3-pil
/usr/bin/python3 - <<'PY'
import torch, numpy, PIL
cfg = torch.__config__.show()
print("torch", torch.__version__, "numpy", numpy.__version__, "Pillow", PIL.__version__)
import ctypes.util, subprocess
# Which BLAS the torch library resolves to at run time.
out = subprocess.run(["sh", "-c", "ldd $(/usr/bin/python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),\"lib\",\"libtorch_cpu.so\"))') 2>/dev/null | grep -i blas; readlink -f /etc/alternatives/libblas.so.3-$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu) 2>/dev/null"], capture_output=True, text=True).stdout
print(out.strip())
if "openblas" not in out.lower():
    print("WARNING: torch does not seem to use OpenBLAS; training will be 5-10x slower")
PY
