"""spark-ml-harness: benchmarks and performance comparisons of distributed ML on Apache Spark."""
import os as _os

# Nothing leaves this machine: MLflow 3 reports usage telemetry unless told not to. Set once here, so the CLI,
# its workers and every process they start (they inherit the environment) run with it off.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_os.environ.setdefault("DO_NOT_TRACK", "true")
