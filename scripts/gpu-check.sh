#!/usr/bin/env bash
# Runs the scaling experiment's GPU rows end to end on an NVIDIA machine (one process per GPU, NCCL):
#   scripts/gpu-check.sh [RESULTS_DIR]        (default results/gpu-check)
# Prerequisites, checked first (each failure says the fix):
#   - nvidia-smi lists a GPU;
#   - torch in .venv is a CUDA build (INSTALL_CUDA_TORCH=1 installs one from $TORCH_INDEX_URL, network needed);
#   - Horovod built with NCCL: done here via HOROVOD_GPU_OPERATIONS=NCCL scripts/build-horovod.sh (needs the
#     CUDA toolkit and NCCL headers; a few minutes, skipped when already built).
# The rows then take a few minutes on one GPU: workers=1 and 2 (with one GPU, the second is capped at 1 and its
# record says so), ResNet-style CNN, synthetic data. tf_multiworker is recorded `unavailable` with
# tensorflow-cpu; TorchDistributor gets Spark GPU scheduling from a discovery script written here.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
py="$venv/bin/python"
results=${1:-results/gpu-check}
[ -x "$py" ] || { echo "error: no $py: run scripts/setup.sh first" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs an NVIDIA GPU and driver" >&2; exit 2; }
ngpu=$(nvidia-smi -L | grep -c '^GPU ' || true)
[ "$ngpu" -ge 1 ] || { echo "error: nvidia-smi lists no GPU" >&2; exit 2; }
nvidia-smi -L

if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  if [ "${INSTALL_CUDA_TORCH:-0}" = 1 ]; then
    ver=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
    "$py" -m pip install --force-reinstall --no-deps "torch==$ver" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
  else
    echo "error: torch in $venv cannot use the GPU (CPU wheel?): rerun with INSTALL_CUDA_TORCH=1" \
         "(and TORCH_INDEX_URL for your CUDA version) or install the CUDA wheel of the pinned torch" >&2
    exit 2
  fi
fi
if ! "$py" -c 'import horovod.torch as h, sys; sys.exit(0 if h.nccl_built() else 1)' 2>/dev/null; then
  HOROVOD_GPU_OPERATIONS=NCCL bash scripts/build-horovod.sh "$venv"
fi

# Spark resource discovery for TorchDistributor(use_gpu=True): the driver (and local executor) owns every GPU
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/gpus.sh" <<'EOF'
#!/usr/bin/env bash
ids=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [$ids]}"
EOF
chmod +x "$work/gpus.sh"

workers="1,$ngpu"
[ "$ngpu" = 1 ] && workers="1,2"  # the 2 is capped at the one GPU: shows the cap in the record
common=(--set device=gpu --set "workers=$workers" --set model=resnet --set batch_size=64 --set batches=20
        --repeats 3 --warmup 1 --timeout 300 --no-mlflow --no-report --results "$results")
start=$(date +%s)
status=0
# launchers that need no Spark resource scheduling
"$venv/bin/harness" run scaling.horovod scaling.horovod_spark scaling.tf_multiworker scaling.horovod_tf \
  "${common[@]}" --run-id gpu-launchers --master "local[$((ngpu > 2 ? ngpu : 2))]" || status=$?
# TorchDistributor asks Spark for GPUs. local_mode=true reads the driver's GPUs (discovery script);
# local_mode=false also needs a GPU per barrier task, which Spark's local mode may not schedule: its own
# invocation with a short timeout, so a hang is recorded as a timeout instead of stalling the check
master="local[$((ngpu > 2 ? ngpu : 2))]"
gpu_conf=(--conf "spark.driver.resource.gpu.amount=$ngpu" --conf "spark.driver.resource.gpu.discoveryScript=$work/gpus.sh")
"$venv/bin/harness" run scaling.torch_distributor "${common[@]}" --set local_mode=true --run-id gpu-td-local \
  --master "$master" "${gpu_conf[@]}" || status=$?
"$venv/bin/harness" run scaling.torch_distributor "${common[@]}" --set local_mode=false --run-id gpu-td-barrier \
  --timeout 120 --master "$master" "${gpu_conf[@]}" --conf "spark.task.resource.gpu.amount=1" \
  --conf "spark.executor.resource.gpu.amount=$ngpu" || status=$?
echo "GPU rows took $(( $(date +%s) - start )) s"

"$py" - "$results" <<'EOF'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("gpu-*/results.jsonl")):
    for line in f.open():
        r = json.loads(line)
        e, p = r["extra"], r["params"]
        what = (f"{e.get('samples_per_s', 0):9.1f} samples/s  speedup {e.get('speedup')}  "
                f"workers run {e.get('workers')}{' (capped)' if e.get('gpu_capped') else ''}"
                if r["status"] == "ok" else (r["error"] or {}).get("message", "").splitlines()[0][:140])
        mode = f" local_mode={p['local_mode']}" if "local_mode" in p else ""
        print(f"{r['case']:<18} workers={p['workers']}{mode:<17} {r['status']:<12} {what}")
EOF
exit $status
