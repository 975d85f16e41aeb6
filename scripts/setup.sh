#!/usr/bin/env bash
# Builds .venv from the pinned stack (docs/DESIGN.md). Idempotent: a stamp holding the hash of the
# inputs makes a second call instant; change requirements.txt or this script and it rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp=$venv/.harness-setup-stamp
want=$(cat requirements.txt scripts/setup.sh scripts/build-horovod.sh pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

bash scripts/check-java.sh
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "error: Python 3.11 is required ('$PY' not found); set PYTHON=/path/to/python3.11" >&2; exit 2; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || { echo "error: $PY is not Python 3.11 (Petastorm needs distutils, see docs/DESIGN.md); set PYTHON=" >&2; exit 2; }

[ -x $venv/bin/python ] || "$PY" -m venv $venv
echo "[setup] installing the pinned stack into $venv (first time: several minutes)"
$venv/bin/python -m pip install -q --upgrade pip
$venv/bin/python -m pip install -q -r requirements.txt
# petastorm pins setuptools<70 in its metadata, which conflicts with torch; its runtime deps are in requirements.txt
$venv/bin/python -m pip install -q --no-deps petastorm==0.13.1
bash scripts/build-horovod.sh $venv
$venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
$venv/bin/python -c "import pyspark, pyarrow, petastorm, torch, tensorflow, mlflow, horovod.torch; print('[setup] stack imports ok')" 2>&1 | grep -v -E 'oneDNN|cuda|TF_ENABLE|rebuild TensorFlow|cpu_feature_guard|AVX|absl::' || true
echo "$want" > "$stamp"
echo "[setup] done: $venv"
