#!/usr/bin/env bash
# Builds Horovod 0.28.1 from the PyPI sdist into the venv given as $1, for PyTorch + Gloo (CPU).
# GPU machines: HOROVOD_GPU_OPERATIONS=NCCL scripts/build-horovod.sh .venv  (needs CUDA + NCCL).
set -euo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")" && pwd)
py="$venv/bin/python"
if "$py" -c "import horovod.torch" 2>/dev/null && [ -z "${HOROVOD_GPU_OPERATIONS:-}" ]; then
  echo "horovod already built in $venv"; exit 0
fi
command -v g++ >/dev/null || { echo "error: g++ is needed to build Horovod (apt-get install g++)" >&2; exit 2; }
if ! command -v cmake >/dev/null; then "$py" -m pip install -q "cmake>=3.13"; fi
echo "building horovod 0.28.1 (about 5-7 min on 2 cores)..."
export CXX="$here/cxx17-wrapper.sh" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
# --no-binary makes pip build from source; pip's wheel cache makes a second build on the same machine instant
# unless HOROVOD_GPU_OPERATIONS asks for a different build.
extra=()
[ -n "${HOROVOD_GPU_OPERATIONS:-}" ] && extra+=(--no-cache-dir --force-reinstall --no-deps)
"$py" -m pip install --no-build-isolation --no-binary horovod "${extra[@]}" horovod==0.28.1
"$py" -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd,'__version__') else '', 'gloo built:', hvd.gloo_built())"
