#!/usr/bin/env bash
# Builds a pinned stack (docs/DESIGN.md). STACK picks which: unset/empty or 3.5 -> .venv from requirements.txt
# (Spark 3.5, Petastorm, Horovod); spark4 -> .venv-spark4 from requirements-spark4.txt (no Petastorm; Horovod
# if it builds). Idempotent: a stamp holding the hash of the inputs makes a second call instant; change the
# requirements or this script and it rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${STACK:-}" in
  ""|3.5) venv=.venv; reqs=requirements.txt ;;
  spark4) venv=.venv-spark4; reqs=requirements-spark4.txt ;;
  *) echo "error: unknown STACK '${STACK}'; use STACK=3.5 (the default, .venv) or STACK=spark4 (.venv-spark4)" >&2; exit 2 ;;
esac
stamp=$venv/.harness-setup-stamp
want=$(cat $reqs scripts/setup.sh scripts/build-horovod.sh pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

bash scripts/check-java.sh
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "error: Python 3.11 is required ('$PY' not found); set PYTHON=/path/to/python3.11" >&2; exit 2; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || { echo "error: $PY is not Python 3.11 (Petastorm needs distutils, see docs/DESIGN.md); set PYTHON=" >&2; exit 2; }

[ -x $venv/bin/python ] || "$PY" -m venv $venv
echo "[setup] installing the pinned stack into $venv (first time: several minutes)"
$venv/bin/python -m pip install -q --upgrade pip
$venv/bin/python -m pip install -q -r $reqs
if [ "$venv" = .venv ]; then
  # petastorm pins setuptools<70 in its metadata, which conflicts with torch; its runtime deps are in requirements.txt
  $venv/bin/python -m pip install -q --no-deps petastorm==0.13.1
  bash scripts/build-horovod.sh $venv
  imports="pyspark, pyarrow, petastorm, torch, tensorflow, mlflow, horovod.torch"
else
  # Spark 4: Horovod is optional here; a failed build leaves the stack without it and the reason next to it
  # (its cases then say `unavailable`: horovod.torch is not installed)
  rm -f $venv/.horovod-unavailable
  if ! bash scripts/build-horovod.sh $venv > $venv/.horovod-build.log 2>&1; then
    { echo "horovod 0.28.1 did not build in $venv (see $venv/.horovod-build.log):"; grep -E 'error|Error' $venv/.horovod-build.log | tail -n 5 || true; } > $venv/.horovod-unavailable
    echo "[setup] $(head -n1 $venv/.horovod-unavailable) - continuing without it" >&2
  fi
  imports="pyspark, pyarrow, torch, tensorflow, mlflow, grpc, google.rpc, zstandard"
fi
$venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
$venv/bin/python -c "import $imports; print('[setup] stack imports ok')" 2>&1 | grep -v -E 'oneDNN|cuda|TF_ENABLE|rebuild TensorFlow|cpu_feature_guard|AVX|absl::' || true
echo "$want" > "$stamp"
echo "[setup] done: $venv"
