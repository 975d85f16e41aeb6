"""Inference: scoring a DataFrame with a trained model on Spark, batch and streaming, against the no-Spark limit.

The question: which way of deploying a model on Spark scores fastest, what MLflow's `pyfunc` costs, how far
Spark stays from the same predict without it, and how much input rate a streaming job sustains.

Models: once per run, task, framework and model (outside every timing), the training experiment's preprocessed
data (`training.shared`) trains a fresh model of its architectures (`harness.models` for PyTorch and
TensorFlow, 5 epochs of Adam; MLlib's own estimators as in `training.mllib`); it is logged with MLflow's own
flavour (`mlflow.pytorch`, `mlflow.tensorflow`, `mlflow.spark`) and registered as
`harness-inference-<task>-<framework>-<model>` in the run's MLflow store: `MLFLOW_TRACKING_URI` when set and
reachable, else an SQLite store in `RUN/work/inference/mlflow/` (never a remote default). Its test-set R^2 or
accuracy is in the record, so a useless model shows.

Batch cases (`harness run inference`), one scoring DataFrame of `rows` rows (the task's test rows, cycled,
cached, 2 partitions per core):
- `pyfunc_udf`: `mlflow.pyfunc.spark_udf(spark, "models:/<name>/<version>", env_manager="local")`; MLflow's
  UDF loads the model once per task and predicts each Arrow batch whole (no batch size of its own);
- `predict_batch_udf`: `pyspark.ml.functions.predict_batch_udf`, the model loaded once per Python worker
  process (Spark caches it there), fed `batch_size` rows per call;
- `pandas_udf_iter`: a hand-written iterator `pandas_udf` loading the model once per task;
- `mllib_transform` (framework mllib only): the registered `PipelineModel`'s `transform`, all in the JVM;
- `local_limit`: the same model's predict over the same rows in one process without Spark (a child process,
  `batch_size` rows per call, threads = Spark's cores): the no-Spark limit. For MLlib, whose models only
  score in a JVM, it is NumPy over the fitted parameters, in double precision as MLlib computes.
`predict_batch_udf`, `pandas_udf_iter` and `local_limit` run the very same model code
(`_inference_worker.load_predictor`); a Python worker's framework threads = `spark.task.cpus`.

Timed (batch): building the style's query and the one Spark job that scores every row and folds the
predictions into one aggregate row (count, sum = checksum, max |prediction - reference|): nothing is
collected. Not timed: training, logging, registering, building the scoring DataFrame and its reference
column, `spark_udf`'s model download, the Spark conf. A fresh query per sample (a re-run DataFrame would skip
its finished stages); the warm-up sample is where fresh Python workers import frameworks.

Checks: every style's predictions must match the reference predictions (the model's own predict in a child
process, per row) within TOLERANCE x max(1, max |reference|), and the checksum accordingly; a mismatch is a
`CheckFailed` (an `error` record). Extras: `rows_per_s`, `slowdown_vs_local_limit` (against the fastest
`local_limit` with the same params), model loads and load seconds per Python worker (timed inside the UDF with
`harness.timing` and handed back through a Spark accumulator; for `pyfunc_udf`, whose loading is inside MLflow,
one load timed by a probe task), and the peak resident memory of the Spark Python worker processes (psutil,
sampled every 0.2 s during the case; reused workers keep what earlier cases imported).

Streaming (`inference.streaming`): a Structured Streaming query from the `rate` source, or from a folder that a
thread fills with Parquet files at the same rate (`source=files`), joins each row to its features, scores it
with the same predict (`predict_batch_udf`; `transform` for MLlib) and ends in `foreachBatch`, which folds each
micro-batch into counts per 10 ms of event time, the checksum and the largest difference from the reference.
It runs at `input_rate` rows/s with a `trigger_ms` trigger for `warmup_s` and then `duration_s` seconds.
The case's samples are the end-to-end latencies (event time to the completion of its micro-batch, seconds) of
each micro-batch's median row in the measured window, lower is better: a throughput sample would equal the
input rate whenever the query keeps up, so it could not show a slower pipeline below the knee. Extras: latency
p50/p95/p99 over every row of the window, the sustained rows/s, the query's own inputRowsPerSecond and
processedRowsPerSecond (progress events), utilisation (time busy in triggers / window), `kept_up`, backlog at
the end, and the highest input rate that kept up among this run's streaming cases of the same params (the knee
the report marks). The query is stopped at the end (and on any failure); its checkpoint and input folders live
in `RUN/work/inference/streaming/` and go with a clean stop; `spark.streams.active` must be empty afterwards.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import isolation, timing
from ..registry import experiment
from ..spark import session_conf
from ..spec import Axis
from ..workload import CheckFailed, Measurement, SelfTimed, Workload

EXP = experiment("inference", "scoring a DataFrame with a registered model: MLflow pyfunc vs predict_batch_udf vs "
                              "pandas_udf vs MLlib transform vs the no-Spark limit; streaming latency vs input rate")

WORKER = "harness.experiments._inference_worker"
FRAMEWORKS = ("torch", "tensorflow", "mllib")
TASKS = ("co2", "tabular_cls", "images")
# the training experiment's models per task; MLlib has no MLP regressor and no convolution
TASK_MODELS = {"co2": ("linear", "mlp"), "tabular_cls": ("linear", "mlp"), "images": ("cnn", "mlp")}
MLLIB_MODELS = {"co2": ("linear",), "tabular_cls": ("linear", "mlp"), "images": ("mlp",)}
STYLE_FRAMEWORKS = {
    "local_limit": FRAMEWORKS,
    "pyfunc_udf": ("torch", "tensorflow"),  # an MLlib pyfunc would start a SparkSession inside each Python worker
    "predict_batch_udf": ("torch", "tensorflow"),
    "pandas_udf_iter": ("torch", "tensorflow"),
    "mllib_transform": ("mllib",),
}
# what each style is judged against (the report's speedup and limit columns): MLflow's pyfunc UDF is the book's
# pattern, so the other Python styles are held against it; every style against the no-Spark limit
ROLES = {"pyfunc_udf": {"limit": "local_limit"},
         "predict_batch_udf": {"reference": "pyfunc_udf", "limit": "local_limit"},
         "pandas_udf_iter": {"reference": "pyfunc_udf", "limit": "local_limit"},
         "mllib_transform": {"limit": "local_limit"}}
ARROW_STYLES = ("pyfunc_udf", "predict_batch_udf", "pandas_udf_iter")
BATCHED_STYLES = ("predict_batch_udf", "pandas_udf_iter", "local_limit")  # the ones with a `batch_size`

TRAIN_ROWS = 5000  # generated rows the model is trained on (the test split is what gets scored)
IMAGE_SIZE = 32
EPOCHS, TRAIN_BATCH, LR = 5, 256, 0.01
TOLERANCE = 1e-4  # max |prediction - reference| allowed, times max(1, max |reference|): float32 round-off
PARTITIONS_PER_CORE = 2
MODELS_EXPERIMENT = "harness-inference-models"
BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"
PROGRESS_KEY = "spark.sql.streaming.numRecentProgressUpdates"
RSS_INTERVAL_S = 0.2
FILE_INTERVAL_S = 0.2  # source=files: one Parquet file this often
STOP_MARGIN_S = 30.0  # a streaming case's warm-up + duration must leave this much of its timeout
BUCKETS_PER_S = 100  # event times are counted per 10 ms: the latency percentiles' resolution

MODEL_AXES = {
    "framework": Axis("framework", FRAMEWORKS, str, choices=FRAMEWORKS, help="torch, tensorflow or mllib"),
    "model": Axis("model", ("linear",), str, choices=("linear", "mlp", "cnn"),
                  help="the training experiment's architectures (cnn on images only)"),
    "task": Axis("task", ("co2",), str, choices=TASKS, help="co2 regression, tabular_cls, or images (32x32)"),
}
ROWS_AXIS = {"rows": Axis("rows", (200_000,), int, help="rows scored (the task's test rows, cycled)")}
BATCH_AXIS = {"batch_size": Axis("batch_size", (1024,), int, help="rows per model call")}
ARROW_AXIS = {"max_records_per_batch": Axis("max_records_per_batch", (10_000,), int,
                                            help=f"{BATCH_KEY}: rows per Arrow batch sent to Python")}
STREAM_AXES = {
    "source": Axis("source", ("rate",), str, choices=("rate", "files"),
                   help="streaming input: the rate source, or Parquet files written into a folder at input_rate"),
    "input_rate": Axis("input_rate", (16000, 64000, 256000), int, help="streaming rows per second offered"),
    "trigger_ms": Axis("trigger_ms", (1000,), int, help="streaming micro-batch trigger interval"),
    "duration_s": Axis("duration_s", (20.0,), float, help="streaming: seconds measured after the warm-up"),
    "warmup_s": Axis("warmup_s", (10.0,), float, help="streaming: seconds run before measuring"),
}


def _valid_model(p: dict[str, Any]) -> bool:
    models = MLLIB_MODELS if p["framework"] == "mllib" else TASK_MODELS
    return p["model"] in models[p["task"]] and all(p.get(k, 1) >= 1 for k in (
        "rows", "batch_size", "max_records_per_batch", "input_rate", "trigger_ms")) \
        and p.get("duration_s", 1) > 0 and p.get("warmup_s", 0) >= 0


def _valid_for(style: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p["framework"] in STYLE_FRAMEWORKS[style] and _valid_model(p)


# ---------------------------------------------------------------------------------------------- the model

@dataclass
class Served:
    """A trained, logged and registered model of this run, and the reference rows it is checked on."""

    key: str
    task: str
    framework: str
    model: str
    kind: str  # "regression" | "classification"
    input_shape: tuple
    n_outputs: int
    uri: str  # models:/<name>/<version>
    path: str  # the registered version's local copy (MLlib: its parameters as .npz) that predictors load
    pool_x: str  # .npy of the reference rows (the task's test split), flattened features
    ref_path: str  # .npy of the model's own predictions for them (rows x outputs)
    ref: Any  # that array
    store: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def out_type(self) -> str:
        return "double" if self.kind == "regression" else "array<float>"

    @property
    def tolerance(self) -> float:
        import numpy as np

        return TOLERANCE * max(1.0, float(np.abs(self.ref).max()))


def model_store(ctx) -> dict[str, Any]:
    """Where models are registered: the run's tracking URI when the case can learn it (a `tracking_uri` on the
    context, else MLFLOW_TRACKING_URI) and it answers, else an SQLite store in this run's work folder."""
    from ..masking import mask_text
    from ..sinks.mlflow import MlflowUnavailable, check_reachable

    uri = getattr(ctx, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    note = None
    if uri:
        try:
            check_reachable(uri)
        except MlflowUnavailable as e:
            note, uri = f"{e}: models registered in the run's work folder instead", None
    artifacts = None
    if not uri:
        folder = ctx.work_dir / "inference" / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        artifacts = (folder / "mlartifacts").resolve().as_uri()
    elif uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return {"uri": uri, "artifacts": artifacts, "experiment": MODELS_EXPERIMENT, "note": note,
            "shown": mask_text(uri)}


@contextlib.contextmanager
def _mlflow_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to `uri` for a block. MLflow keeps them in globals and
    also writes them to MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, so both are put back afterwards (else this
    process's next `model_store` would take the block's URI for the user's)."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # None: back to the environment (MLflow's own "unset")
        mlflow.set_registry_uri(None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def served(ctx, task: str, framework: str, model: str) -> Served:
    """The model of (task, framework, model) for this run: trained, logged, registered once, then shared."""
    return ctx.memo(("inference.served", task, framework, model), lambda: _serve(ctx, task, framework, model))


def _serve(ctx, task: str, framework: str, model: str) -> Served:
    import numpy as np

    from . import training

    s = training.shared(ctx, task, TRAIN_ROWS, IMAGE_SIZE)
    key = f"{task}-{framework}-{model}-{s.key}"
    base = ctx.work_dir / "inference" / "models" / key
    base.mkdir(parents=True, exist_ok=True)
    store = model_store(ctx)
    name = f"harness-inference-{task}-{framework}-{model}"
    tags = {"harness.run_id": ctx.run_id, "harness.experiment": "inference", "task": task, "framework": framework,
            "model": model}
    ref_path = base / "reference.npy"
    if framework == "mllib":
        info = _serve_mllib(ctx, s, model, store, name, tags, base, ref_path)
    else:
        spec, _ = training.materialize(ctx, s, "pandas")  # the training rows as .npy, as training's feeders have them
        threads = training.framework_threads(ctx)
        info = isolation.run_function(f"{WORKER}:train_and_register", dict(
            framework=framework, model=model, kind=s.kind, input_shape=list(s.input_shape), n_outputs=s.n_outputs,
            train_x=spec["x"], train_y=spec["y"], test_x=str(s.test_x), test_y=str(s.test_y), pool_x=str(s.test_x),
            epochs=EPOCHS, batch_size=TRAIN_BATCH, lr=LR, seed=ctx.seed, threads=threads, store=store, name=name,
            tags=tags, model_dir=str(base / "registered"), ref_out=str(ref_path)),
            ctx.timeout_s, env=training.child_env(threads))
    path = info.pop("local_path")
    info.update({"model_registry": store["shown"], "reference_rows": s.rows_test, "data": s.source,
                 **({"model_registry_note": store["note"]} if store["note"] else {})})
    return Served(key=key, task=task, framework=framework, model=model, kind=s.kind,
                  input_shape=tuple(s.input_shape), n_outputs=s.n_outputs, uri=info["model_uri"], path=path,
                  pool_x=str(s.test_x), ref_path=str(ref_path), ref=np.load(ref_path), store=store, info=info)


def _mllib_estimator(kind: str, model: str, n_in: int, n_out: int, seed: int):
    """The training experiment's MLlib estimator for (kind, model)."""
    from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier
    from pyspark.ml.regression import LinearRegression

    if kind == "regression":
        return LinearRegression(solver="normal", regParam=0.0)
    if model == "linear":
        return LogisticRegression(family="multinomial", maxIter=100, regParam=0.0)
    return MultilayerPerceptronClassifier(layers=[n_in, 64, 64, n_out], maxIter=100, seed=seed, solver="l-bfgs")


def _serve_mllib(ctx, s, model: str, store: dict, name: str, tags: dict, base: Path, ref_path: Path) -> dict:
    """Fits MLlib's estimator in this driver, logs it with mlflow.spark, registers it, and keeps its fitted
    parameters as .npz for the no-Spark limit; the reference is those parameters evaluated by NumPy."""
    import mlflow
    import mlflow.spark
    import numpy as np
    import pyspark
    from pyspark.ml import PipelineModel
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.functions import array_to_vector

    from ._inference_worker import PREDICT_CHUNK, experiment_id, load_predictor, predict_all

    n_in = 1
    for d in s.input_shape:
        n_in *= int(d)
    train = s.train.select(array_to_vector("features").alias("features"), "label")
    clock = timing.Stopwatch()
    fitted = _mllib_estimator(s.kind, model, n_in, s.n_outputs, ctx.seed).fit(train)
    train_s = clock.lap()
    pipeline = PipelineModel(stages=[fitted])
    test = s.test.select(array_to_vector("features").alias("features"), "label")
    metric = "test_r2" if s.kind == "regression" else "test_accuracy"
    evaluator = RegressionEvaluator(metricName="r2") if s.kind == "regression" else \
        MulticlassClassificationEvaluator(metricName="accuracy")
    value = float(evaluator.evaluate(pipeline.transform(test)))
    clock.lap()
    with _mlflow_uri(store["uri"]), mlflow.start_run(experiment_id=experiment_id(store), run_name=name,
                                                     tags=tags) as run:
        info = mlflow.spark.log_model(pipeline, "model", registered_model_name=name,
                                      dfs_tmpdir=str(base / "dfs-tmp"),
                                      pip_requirements=[f"pyspark=={pyspark.__version__}"])
    log_s = clock.lap()
    params_path = base / "mllib-parameters.npz"
    np.savez(params_path, **_mllib_parameters(fitted))
    pool = np.load(s.test_x)
    np.save(ref_path, predict_all(load_predictor("mllib", str(params_path), 1), pool, PREDICT_CHUNK)
            .astype(np.float32))
    version = str(info.registered_model_version)
    return {"model_uri": f"models:/{name}/{version}", "registered_model": name, "model_version": version,
            "local_path": str(params_path), "mlflow_run_id": run.info.run_id, "flavour": "mlflow.spark",
            "train_s": round(train_s, 4), "log_register_s": round(log_s, 4), f"model_{metric}": value,
            "train_rows": s.rows_train, "solver": type(fitted).__name__}


def _mllib_parameters(fitted) -> dict[str, Any]:
    import numpy as np

    name = type(fitted).__name__
    if name == "LinearRegressionModel":
        return {"kind": "linear", "coefficients": fitted.coefficients.toArray(), "intercept": fitted.intercept}
    if name == "LogisticRegressionModel":
        return {"kind": "logistic", "coefficient_matrix": fitted.coefficientMatrix.toArray(),
                "intercept_vector": fitted.interceptVector.toArray()}
    return {"kind": "mlp", "layers": np.array(fitted.getLayers()), "weights": fitted.weights.toArray()}


# ---------------------------------------------------------------------------------------------- data

def pool_frame(ctx, srv: Served):
    """The reference rows as a cached DataFrame (pool_id, features, ref): what every scoring row is made of."""
    def make():
        import numpy as np
        import pandas as pd

        pool = np.load(srv.pool_x).astype(np.float32)
        n = len(pool)
        ref = srv.ref[:, 0].astype(np.float64) if srv.kind == "regression" else list(srv.ref.astype(np.float32))
        pdf = pd.DataFrame({"pool_id": np.arange(n, dtype=np.int64), "features": list(pool.reshape(n, -1)),
                            "ref": ref})
        df = ctx.spark.createDataFrame(pdf, f"pool_id long, features array<float>, ref {srv.out_type}").cache()
        df.count()
        return df

    return ctx.memo(("inference.pool", srv.key), make, release=lambda df: df.unpersist())


def scoring_frame(ctx, srv: Served, rows: int):
    """`rows` scoring rows (id, features, ref), row i being reference row i % n; cached, 2 partitions per core.
    One scoring frame is cached at a time."""
    from pyspark.sql import functions as F

    key = ("inference.scoring", srv.key, rows)
    ctx.forget(lambda k: k[0] == "inference.scoring" and k != key)

    def make():
        pool = pool_frame(ctx, srv)
        n = len(srv.ref)
        ids = ctx.spark.range(0, rows, 1, PARTITIONS_PER_CORE * ctx.cores)
        df = ids.select("id", (F.col("id") % n).alias("pool_id")).join(F.broadcast(pool), "pool_id") \
            .select("id", "features", "ref").cache()
        df.count()  # materialised here, untimed
        return df

    return ctx.memo(key, make, release=lambda df: df.unpersist())


def expected_checksum(srv: Served, rows: int) -> float:
    """The sum of every reference score over `rows` cycled rows."""
    import numpy as np

    n = len(srv.ref)
    counts = np.full(n, rows // n, dtype=np.float64)
    counts[: rows % n] += 1
    return float((counts * srv.ref.astype(np.float64).reshape(n, -1).sum(axis=1)).sum())


# ---------------------------------------------------------------------------------------------- measuring helpers

def _task_threads(ctx) -> int:
    """Framework threads per Python worker: the cores Spark gives each task."""
    return int(ctx.spark.sparkContext.getConf().get("spark.task.cpus", "1"))


def _worker_env(threads: int) -> dict[str, str]:
    """Thread pools of a Python worker that imports a framework for MLflow's UDF (read at import)."""
    t = str(threads)
    return {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "TF_NUM_INTRAOP_THREADS": t, "TF_NUM_INTEROP_THREADS": t,
            "TF_CPP_MIN_LOG_LEVEL": "2"}


class ListParam:
    """A Spark accumulator's parameter (Spark only calls these two methods): each model load in a Python worker
    adds [pid, seconds] to a list."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        a.extend(b)
        return a


class LoadTimes:
    """Model loads timed inside the Python workers (harness.timing) and sent back with each task's result."""

    def __init__(self, spark):
        self.acc = spark.sparkContext.accumulator([], ListParam())

    def summary(self, runs: int) -> dict[str, Any]:
        loads = list(self.acc.value)
        if not loads:
            return {"model_loads": 0}
        seconds = [s for _, s in loads]
        return {"model_loads": len(loads), "model_loads_per_run": len(loads) / max(runs, 1),
                "model_load_s": statistics.median(seconds), "model_load_max_s": max(seconds),
                "model_loading_processes": len({pid for pid, _ in loads})}


class WorkerMemory:
    """Peak resident memory of Spark's Python worker processes on this machine (psutil, sampled by a thread).

    They are the JVM's descendants running pyspark (its daemon and the workers it forks); forked workers share
    pages with the daemon, so the total over-counts and the per-process peak is the figure to compare."""

    def __init__(self, spark):
        self.jvm = _jvm_pid(spark)
        self.peak_one = self.peak_total = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inference-worker-rss", daemon=True)
        if self.jvm is not None:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        import psutil

        total = 0
        try:
            children = psutil.Process(self.jvm).children(recursive=True)
        except psutil.Error:
            return
        for p in children:
            try:
                if p.pid not in self.pids and "pyspark" not in " ".join(p.cmdline()):
                    continue
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            self.pids.add(p.pid)
            total += rss
            self.peak_one = max(self.peak_one, rss)
        self.peak_total = max(self.peak_total, total)

    def stop(self) -> dict[str, Any]:
        if self.jvm is None:
            return {}
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()
        if not self.pids:
            return {}
        mb = 1024.0 * 1024.0
        return {"python_worker_peak_rss_mb": round(self.peak_one / mb, 1),
                "python_workers_peak_total_rss_mb": round(self.peak_total / mb, 1),
                "python_worker_processes_seen": len(self.pids)}


def _jvm_pid(spark) -> int | None:
    try:  # the JVM runs on this machine in local mode; elsewhere its workers are not ours to sample
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # noqa: BLE001
        return None


def fold(pred_df, kind: str):
    """The one aggregate every style ends in: rows, non-null predictions, checksum (sum of every score) and
    the largest |score - reference|."""
    from pyspark.sql import functions as F

    p, ref = F.col("p"), F.col("ref")
    if kind == "regression":
        value, diff = p, F.abs(p - ref)
    else:
        value = F.aggregate(p, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double"))
        diff = F.array_max(F.zip_with(p, ref, lambda a, b: F.abs(a - b)))
    return pred_df.agg(F.count(F.lit(1)).alias("rows"), F.count(p).alias("scored"),
                       F.sum(value).alias("checksum"), F.max(diff).alias("max_abs_diff"))


def force(agg_df) -> dict[str, Any]:
    row = agg_df.collect()[0]  # one aggregate row: nothing big leaves the executors
    return {"rows": int(row["rows"]), "scored": int(row["scored"]), "checksum": float(row["checksum"] or 0.0),
            "max_abs_diff": float("nan") if row["max_abs_diff"] is None else float(row["max_abs_diff"])}


def check(got: dict[str, Any], srv: Served, rows: int, what: str) -> dict[str, Any]:
    """Raises CheckFailed unless every row was scored and matches the reference; returns the check's figures."""
    tol = srv.tolerance
    expected = expected_checksum(srv, rows)
    if got["rows"] != rows or got.get("scored", rows) != rows:
        raise CheckFailed(f"{what}: {got.get('scored', got['rows'])} of {got['rows']} rows scored, expected {rows}")
    diff = got["max_abs_diff"]
    if not diff <= tol:  # NaN fails too
        raise CheckFailed(f"{what}: a prediction differs from the model's own (local) prediction by {diff:.3g}, "
                          f"more than the tolerance {tol:.3g}")
    budget = tol * rows * srv.n_outputs
    if not abs(got["checksum"] - expected) <= budget:
        raise CheckFailed(f"{what}: checksum {got['checksum']!r} differs from the reference {expected!r} by more "
                          f"than {budget:.3g}")
    return {"checksum": got["checksum"], "checksum_reference": expected, "max_abs_diff": diff, "tolerance": tol}


def _best_median(ctx, case: str, params: dict[str, Any]) -> float | None:
    """The fastest median of `case` recorded ok in this run with every param both have equal to `params`."""
    best = None
    for r in ctx.results.values():
        if r.experiment != EXP.id or r.case != case or r.status != "ok":
            continue
        if any(r.params[k] != params[k] for k in set(r.params) & set(params)):
            continue
        m = (r.stats or {}).get("median")
        if isinstance(m, (int, float)) and m > 0:
            best = m if best is None else min(best, m)
    return best


def _speed(ctx, style: str, params: dict[str, Any], samples: list[float], rows: int) -> dict[str, Any]:
    """rows_per_s, and the speed against the style's reference (pyfunc_udf) and limit (local_limit) where they
    ran earlier in this run."""
    if not samples:
        return {}
    median = statistics.median(samples)
    out: dict[str, Any] = {"rows_per_s": rows / median if median > 0 else None}
    roles = ROLES.get(style, {})
    if roles.get("reference") and (ref := _best_median(ctx, roles["reference"], params)):
        out[f"speedup_vs_{roles['reference']}"] = ref / median
    if roles.get("limit") and (limit := _best_median(ctx, roles["limit"], params)):
        out[f"slowdown_vs_{roles['limit']}"] = median / limit
    return out


def _model_extra(srv: Served) -> dict[str, Any]:
    return {"model_uri": srv.uri, "input_shape": list(srv.input_shape), "n_outputs": srv.n_outputs,
            "output": srv.out_type, **srv.info}


# ---------------------------------------------------------------------------------------------- styles

def _predict_fn(srv: Served, threads: int, loads: LoadTimes) -> Callable[[], Callable]:
    """predict_batch_udf's `make_predict_fn`: loads the model (timed, reported through the accumulator)."""
    framework, path, regression, acc = srv.framework, srv.path, srv.kind == "regression", loads.acc

    def make_predict_fn():
        import os

        import numpy as np

        from harness.experiments._inference_worker import load_predictor
        from harness.timing import Stopwatch

        clock = Stopwatch()
        predict = load_predictor(framework, path, threads)
        acc.add([[os.getpid(), clock.elapsed()]])
        if regression:
            return lambda x: predict(x)[:, 0].astype(np.float64)
        return lambda x: predict(x).astype(np.float32)

    return make_predict_fn


def _out_spark_type(srv: Served):
    from pyspark.sql.types import ArrayType, DoubleType, FloatType

    return DoubleType() if srv.kind == "regression" else ArrayType(FloatType())


def style_pyfunc(ctx, srv: Served, knobs: dict, loads: LoadTimes) -> Callable:
    import mlflow.pyfunc

    with _mlflow_uri(srv.store["uri"]):
        udf = mlflow.pyfunc.spark_udf(ctx.spark, srv.uri, result_type=srv.out_type, env_manager="local",
                                      extra_env=_worker_env(_task_threads(ctx)))
    return udf


def style_predict_batch(ctx, srv: Served, knobs: dict, loads: LoadTimes) -> Callable:
    from pyspark.ml.functions import predict_batch_udf

    return predict_batch_udf(_predict_fn(srv, _task_threads(ctx), loads), return_type=_out_spark_type(srv),
                             batch_size=knobs["batch_size"], input_tensor_shapes=[list(srv.input_shape)])


def style_pandas_iter(ctx, srv: Served, knobs: dict, loads: LoadTimes) -> Callable:
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    framework, path, shape, acc = srv.framework, srv.path, tuple(srv.input_shape), loads.acc
    regression, batch_size, threads = srv.kind == "regression", knobs["batch_size"], _task_threads(ctx)

    def predict_batches(batches):
        import os

        import numpy as np

        from harness.experiments._inference_worker import load_predictor, predict_all
        from harness.timing import Stopwatch

        clock = Stopwatch()
        predict = load_predictor(framework, path, threads)  # once per task (partition), not per batch
        acc.add([[os.getpid(), clock.elapsed()]])
        for s in batches:
            if len(s) == 0:
                yield pd.Series([], dtype="float64" if regression else "object")
                continue
            out = predict_all(predict, np.stack(s.to_numpy()).reshape((-1, *shape)), batch_size)
            yield pd.Series(out[:, 0].astype(np.float64)) if regression else pd.Series(list(out.astype(np.float32)))

    # real classes, not this module's postponed string hints: pandas_udf reads them to pick the UDF type
    predict_batches.__annotations__ = {"batches": Iterator[pd.Series], "return": Iterator[pd.Series]}
    return pandas_udf(predict_batches, srv.out_type)


def _mllib_model(ctx, srv: Served):
    """The registered PipelineModel, loaded in the driver (timed apart: the JVM ships it with each task)."""
    import mlflow.spark

    clock = timing.Stopwatch()
    with _mlflow_uri(srv.store["uri"]):
        model = mlflow.spark.load_model(srv.uri, dfs_tmpdir=str(ctx.work_dir / "inference" / "dfs-tmp"))
    return model, clock.elapsed()


def mllib_scores(model, srv: Served, df, keep: tuple[str, ...]):
    """`transform` of the MLlib model over a frame with `features` (array): p = prediction or rawPrediction."""
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    scored = model.transform(df.withColumn("features", array_to_vector("features")))
    p = F.col("prediction") if srv.kind == "regression" else vector_to_array("rawPrediction", "float32")
    return scored.select(p.alias("p"), *keep)


STYLES: dict[str, Callable] = {
    "pyfunc_udf": style_pyfunc,
    "predict_batch_udf": style_predict_batch,
    "pandas_udf_iter": style_pandas_iter,
}


def _probe_pyfunc_load(ctx, srv: Served) -> float | None:
    """One mlflow.pyfunc.load_model of the model's local copy, timed inside a Python worker (spark_udf's own
    loading, once per task, cannot be timed from outside MLflow)."""
    path, env = srv.path, _worker_env(_task_threads(ctx))

    def probe(_):
        import os

        from harness.timing import Stopwatch

        for k, v in env.items():
            os.environ.setdefault(k, v)
        import mlflow.pyfunc

        clock = Stopwatch()
        mlflow.pyfunc.load_model(path)
        return clock.elapsed()

    try:
        return float(ctx.spark.sparkContext.parallelize([0], 1).map(probe).collect()[0])
    except Exception:  # noqa: BLE001 - a figure we could not take is left out, the case still measures
        return None


# ---------------------------------------------------------------------------------------------- batch cases

def build_batch(ctx, style: str, params: dict[str, Any]) -> Workload:
    srv = served(ctx, params["task"], params["framework"], params["model"])
    rows = params["rows"]
    df = scoring_frame(ctx, srv, rows)
    loads = LoadTimes(ctx.spark)
    settings = {BATCH_KEY: str(params["max_records_per_batch"])} if style in ARROW_STYLES else {}
    restore = session_conf(ctx.spark, settings)
    extra: dict[str, Any] = {"rows": rows, "partitions": df.rdd.getNumPartitions(), **_model_extra(srv)}
    try:
        if style == "mllib_transform":
            model, load_s = _mllib_model(ctx, srv)
            extra["driver_model_load_s"] = round(load_s, 4)

            def query():
                return fold(mllib_scores(model, srv, df, ("ref",)), srv.kind)
        else:
            udf = STYLES[style](ctx, srv, params, loads)
            extra.update(worker_threads=_task_threads(ctx), arrow_max_records_per_batch=params["max_records_per_batch"])
            if style == "pyfunc_udf":
                extra.update(env_manager="local", model_load_s=_probe_pyfunc_load(ctx, srv),
                             model_loads_per_run=df.rdd.getNumPartitions(),
                             model_load_note="spark_udf loads once per task; model_load_s is one load timed by a "
                                             "probe task in a Python worker")
            else:
                extra["batch_size"] = params["batch_size"]

            def query():
                # a fresh DataFrame per call: running one DataFrame again would skip its finished stages
                return fold(df.select(udf("features").alias("p"), "ref"), srv.kind)
        query()  # a style that cannot build its query fails here, in setup
    except BaseException:
        restore()
        raise
    memory = WorkerMemory(ctx.spark) if style != "mllib_transform" else None

    def after(out: dict, samples: list[float], warmup: list[float] | None = None) -> dict[str, Any]:
        figures = check(out, srv, rows, f"inference.{style} {srv.framework} {srv.model} {srv.task}")
        if style in ("predict_batch_udf", "pandas_udf_iter"):
            figures.update(loads.summary(len(samples) + len(warmup or [])))
        if memory is not None:
            figures.update(memory.stop())
        return {**figures, **_speed(ctx, style, params, samples, rows)}

    def teardown() -> None:
        if memory is not None:
            memory.stop()
        restore()

    return Workload(run=lambda: force(query()), after=after, teardown=teardown,
                    extra={k: v for k, v in extra.items() if v is not None})


def build_local_limit(ctx, params: dict[str, Any]) -> SelfTimed:
    from . import training

    srv = served(ctx, params["task"], params["framework"], params["model"])
    rows, threads = params["rows"], training.framework_threads(ctx)

    def measure(warmup: int, repeats: int, timeout_s: float) -> Measurement:
        out = isolation.run_function(f"{WORKER}:local_limit", dict(
            framework=srv.framework, path=srv.path, input_shape=list(srv.input_shape), pool_x=srv.pool_x,
            ref=srv.ref_path, rows=rows, batch_size=params["batch_size"], threads=threads, warmup=warmup,
            repeats=repeats), timeout_s, env=training.child_env(threads))
        got = {"rows": out["rows"], "scored": out["rows"] - out["nulls"], "checksum": out["checksum"],
               "max_abs_diff": out["max_abs_diff"]}
        figures = check(got, srv, rows, f"inference.local_limit {srv.framework} {srv.model} {srv.task}")
        med = statistics.median(out["samples"]) if out["samples"] else None
        extra = {**figures, "rows": rows, "batch_size": params["batch_size"], "threads": threads,
                 "model_load_s": out["model_load_s"], "model_loads_per_run": 0, "peak_rss_mb": out["peak_rss_mb"],
                 "rows_per_s": rows / med if med else None, "slowdown_vs_local_limit": 1.0, **_model_extra(srv)}
        return Measurement(samples=out["samples"], warmup=out["warmup"], extra=extra)

    return SelfTimed(measure=measure)


def _register_batch(style: str, doc: str) -> None:
    axes = {**MODEL_AXES, **ROWS_AXIS}
    if style in BATCHED_STYLES:
        axes.update(BATCH_AXIS)
    if style in ARROW_STYLES:
        axes.update(ARROW_AXIS)

    def build(ctx, **params):
        return build_local_limit(ctx, params) if style == "local_limit" else build_batch(ctx, style, params)

    build.__doc__ = doc
    EXP.case(style, axes, valid=_valid_for(style), spark=True, **ROLES.get(style, {}))(build)


# registration order is run order: local_limit first, so every style finds it for its slowdown
for _style, _doc in (
    ("local_limit", "the same model's predict over the same rows in one process without Spark"),
    ("pyfunc_udf", "mlflow.pyfunc.spark_udf over models:/<name>/<version> (env_manager=local)"),
    ("predict_batch_udf", "pyspark.ml.functions.predict_batch_udf: model loaded once per Python worker"),
    ("pandas_udf_iter", "a hand-written iterator pandas_udf: model loaded once per task"),
    ("mllib_transform", "the registered MLlib PipelineModel's transform (JVM only)"),
):
    _register_batch(_style, _doc)


# ---------------------------------------------------------------------------------------------- streaming

def _wall() -> float:
    """Wall-clock seconds since the epoch: event timestamps are wall-clock times, so latency needs this clock."""
    import time

    return time.time()


class FileFeed:
    """source=files: a thread writing Parquet files of (event_time, seq) into `folder` at `rate` rows/s, one file
    every FILE_INTERVAL_S; each file is written under a hidden name and renamed into place, so the stream never
    reads half a file. A file's rows carry the time it was written as their event time."""

    def __init__(self, folder: Path, rate: int):
        self.folder, self.rate = folder, rate
        self.rows = self.files = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inference-file-feed", daemon=True)
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> "FileFeed":
        self._thread.start()
        return self

    def _loop(self) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        start, owed = timing.clock(), 0.0
        try:
            while not self._stop.is_set():
                owed = self.rate * (timing.clock() - start) - self.rows
                n = int(owed)
                if n > 0:
                    stamp = int(_wall() * 1e6)
                    table = pa.table({"event_time": pa.array(np.full(n, stamp), pa.timestamp("us", tz="UTC")),
                                      "seq": pa.array(np.arange(self.rows, self.rows + n), pa.int64())})
                    tmp = self.folder / f".part-{self.files:06d}.parquet"
                    pq.write_table(table, tmp)
                    tmp.rename(self.folder / f"part-{self.files:06d}.parquet")
                    self.rows += n
                    self.files += 1
                self._stop.wait(FILE_INTERVAL_S)
        except BaseException as e:  # noqa: BLE001 - reported by the case
            self.error = e

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


@dataclass
class BatchFigures:
    """What foreachBatch saw of one micro-batch."""

    batch_id: int
    done: float  # wall-clock completion
    rows: int
    checksum: float
    ref_sum: float
    max_abs_diff: float
    min_seq: int | None
    max_seq: int | None
    buckets: list[tuple[int, int]]  # (event time in 10 ms units, rows)

    def latencies(self) -> list[tuple[float, int]]:
        return [(self.done - (b + 0.5) / BUCKETS_PER_S, n) for b, n in self.buckets]


def _sink(batches: list[BatchFigures], kind: str):
    """foreachBatch: one job per micro-batch folding it into per-10 ms counts, checksum and largest difference."""
    def on_batch(batch_df, batch_id: int) -> None:
        from pyspark.sql import functions as F

        p, ref = F.col("p"), F.col("ref")
        if kind == "regression":
            value, ref_value, diff = p, ref, F.abs(p - ref)
        else:
            def total(c):
                return F.aggregate(c, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double"))
            value, ref_value = total(p), total(ref)
            diff = F.array_max(F.zip_with(p, ref, lambda a, b: F.abs(a - b)))
        bucket = F.floor(F.col("event_time").cast("double") * BUCKETS_PER_S).alias("bucket")
        groups = batch_df.groupBy(bucket).agg(
            F.count(p).alias("n"), F.sum(value).alias("s"), F.sum(ref_value).alias("r"), F.max(diff).alias("d"),
            F.min("seq").alias("lo"), F.max("seq").alias("hi")).collect()
        done = _wall()
        diffs = [g["d"] for g in groups]
        batches.append(BatchFigures(
            batch_id=batch_id, done=done, rows=sum(g["n"] for g in groups), checksum=sum(g["s"] or 0.0 for g in groups),
            ref_sum=sum(g["r"] or 0.0 for g in groups),
            max_abs_diff=float("nan") if any(d is None for d in diffs) else max(diffs, default=0.0),
            min_seq=min((g["lo"] for g in groups), default=None), max_seq=max((g["hi"] for g in groups), default=None),
            buckets=[(int(g["bucket"]), int(g["n"])) for g in groups]))

    return on_batch


def _percentiles(pairs: list[tuple[float, int]], qs: tuple[float, ...]) -> list[float | None]:
    """Weighted percentiles of (value, count) pairs."""
    pairs = sorted(p for p in pairs if p[1] > 0)
    total = sum(n for _, n in pairs)
    if not total:
        return [None for _ in qs]
    out = []
    for q in qs:
        target, seen = q * total, 0
        for value, n in pairs:
            seen += n
            if seen >= target:
                out.append(value)
                break
    return out


def _progress_time(p: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()


def streaming_figures(batches: list[BatchFigures], progress: list[dict], start: float, stop: float,
                      input_rate: int) -> dict[str, Any]:
    """Throughput, latency and whether the query kept up, over the window [start, stop] (wall clock)."""
    window = [b for b in batches if b.done >= start and b.rows]
    seconds = max(stop - start, 1e-9)
    rows = sum(b.rows for b in window)
    p50, p95, p99 = _percentiles([x for b in window for x in b.latencies()], (0.5, 0.95, 0.99))
    events = [p for p in progress if _progress_time(p) >= start]
    busy = sum(p["durationMs"].get("triggerExecution", 0) for p in events) / 1000.0
    sustained = rows / seconds
    utilisation = busy / seconds
    newest = max((b / BUCKETS_PER_S for x in window for b, _ in x.buckets), default=None)
    thirds = max(len(window) // 3, 1)
    early = [_percentiles(b.latencies(), (0.5,))[0] for b in window[:thirds]]
    late = [_percentiles(b.latencies(), (0.5,))[0] for b in window[-thirds:]]

    trend = (statistics.median(late) / statistics.median(early)
             if early and late and statistics.median(early) else None)

    def rate(key: str) -> float | None:
        vals = [float(p[key]) for p in events if isinstance(p.get(key), (int, float)) and p["numInputRows"]]
        return statistics.median(vals) if vals else None

    return {
        "input_rate": input_rate, "window_s": round(seconds, 3), "window_batches": len(window), "window_rows": rows,
        "sustained_rows_per_s": sustained, "capacity_rows_per_s": rows / busy if busy > 0 else None,
        "input_rows_per_s_median": rate("inputRowsPerSecond"),
        "processed_rows_per_s_median": rate("processedRowsPerSecond"), "utilisation": utilisation,
        "latency_p50_s": p50, "latency_p95_s": p95, "latency_p99_s": p99,
        "latency_trend": trend,
        "backlog_s": stop - newest if newest is not None else None,
        "kept_up": kept_up(sustained, input_rate, trend) if window else False,
    }


def kept_up(sustained: float, input_rate: float, trend: float | None) -> bool:
    """Whether a query kept up with its input: the window's rows came through at (nearly) the offered rate (10%
    left for the rows of one micro-batch more or less at either end of the window) and its latency did not grow
    (the median latency of the window's last third of micro-batches at most 1.5x that of its first third). A query
    busy all the time may still keep up: each micro-batch then takes all that arrived during the last one, and
    as long as the rows' own cost stays below the trigger's fixed cost, batches do not grow. One that falls behind
    takes ever bigger batches, ever later: its rows/s stay below the offered rate and its latency climbs."""
    return sustained >= 0.9 * input_rate and (trend is None or trend <= 1.5)


def _max_sustained(ctx, params: dict[str, Any], this: dict[str, Any]) -> int | None:
    """The highest input_rate that kept up among this run's streaming cases with otherwise equal params."""
    rates = [params["input_rate"]] if this.get("kept_up") else []
    for r in ctx.results.values():
        if r.experiment == EXP.id and r.case == "streaming" and r.status == "ok" and r.extra.get("kept_up") \
                and all(r.params.get(k) == v for k, v in params.items() if k != "input_rate"):
            rates.append(r.params["input_rate"])
    return max(rates) if rates else None


def build_streaming(ctx, framework: str, model: str, task: str, source: str, input_rate: int, trigger_ms: int,
                    duration_s: float, warmup_s: float, batch_size: int, max_records_per_batch: int) -> SelfTimed:
    """Structured Streaming at `input_rate` rows/s through the same predict: end-to-end latency per micro-batch."""
    from pyspark.sql import functions as F

    params = dict(framework=framework, model=model, task=task, source=source, input_rate=input_rate,
                  trigger_ms=trigger_ms, duration_s=duration_s, warmup_s=warmup_s, batch_size=batch_size,
                  max_records_per_batch=max_records_per_batch)
    spark = ctx.spark
    srv = served(ctx, task, framework, model)
    pool = pool_frame(ctx, srv)
    n_pool = len(srv.ref)
    loads = LoadTimes(spark)
    extra: dict[str, Any] = {"source": source, "trigger_ms": trigger_ms, **_model_extra(srv)}
    if framework == "mllib":
        model_obj, load_s = _mllib_model(ctx, srv)
        extra.update(predict="MLlib transform", driver_model_load_s=round(load_s, 4))

        def score(df, keep):
            return mllib_scores(model_obj, srv, df, keep)
    else:
        udf = style_predict_batch(ctx, srv, params, loads)
        extra.update(predict="predict_batch_udf", batch_size=batch_size, worker_threads=_task_threads(ctx),
                     arrow_max_records_per_batch=max_records_per_batch)

        def score(df, keep):
            return df.select(udf("features").alias("p"), *keep)

    folder = ctx.work_dir / "inference" / "streaming" / f"{task}-{framework}-{model}-{uuid.uuid4().hex[:8]}"
    restore = session_conf(spark, {BATCH_KEY: str(max_records_per_batch), PROGRESS_KEY: "100000"})
    state: dict[str, Any] = {"query": None, "feed": None}
    memory = None
    try:
        # every Python worker loads the model before the clock: the warm-up then measures a warm pipeline
        force(fold(score(pool.repartition(PARTITIONS_PER_CORE * ctx.cores), ("ref",)), srv.kind))
        memory = WorkerMemory(spark) if framework != "mllib" else None
    except BaseException:
        restore()
        raise

    def stop_stream() -> None:
        query, feed = state["query"], state["feed"]
        if query is not None:
            query.stop()
        if feed is not None:
            feed.stop()

    def measure(warmup: int, repeats: int, timeout_s: float) -> Measurement:
        if warmup_s + duration_s + STOP_MARGIN_S > timeout_s:
            raise ValueError(f"inference.streaming runs warmup_s + duration_s = {warmup_s + duration_s:g} s, which "
                             f"with {STOP_MARGIN_S:g} s to start and stop does not fit the {timeout_s:.0f} s left of "
                             "its timeout: raise --timeout or lower duration_s / warmup_s")
        batches: list[BatchFigures] = []
        if source == "rate":
            src = (spark.readStream.format("rate").option("rowsPerSecond", input_rate)
                   .option("numPartitions", ctx.cores).load()
                   .select(F.col("timestamp").alias("event_time"), F.col("value").alias("seq")))
        else:
            state["feed"] = FileFeed(folder / "input", input_rate)
            src = spark.readStream.schema("event_time timestamp, seq long").parquet(str(folder / "input"))
        keyed = src.withColumn("pool_id", F.col("seq") % n_pool).join(F.broadcast(pool), "pool_id")
        scored = score(keyed, ("ref", "event_time", "seq"))
        writer = (scored.writeStream.foreachBatch(_sink(batches, srv.kind))
                  .trigger(processingTime=f"{trigger_ms} milliseconds")
                  .option("checkpointLocation", str(folder / "checkpoint")))
        planned = warmup_s + duration_s
        # a query far behind may finish no micro-batch in the window: it then runs on, up to duration_s more
        # (within the timeout), until one finishes; the record says how long (window_extended_s)
        latest = planned + max(0.0, min(duration_s, timeout_s - planned - STOP_MARGIN_S))
        clock = timing.Stopwatch()
        started = _wall()
        if state["feed"] is not None:
            state["feed"].start()
        state["query"] = query = writer.start()
        try:
            while True:
                elapsed = clock.elapsed()
                if elapsed >= latest or (elapsed >= planned and any(
                        b.rows and b.done >= started + warmup_s for b in batches)):
                    break
                if query.awaitTermination(0.25):
                    raise RuntimeError(f"the streaming query stopped early: {query.exception()}")
                feed = state["feed"]
                if feed is not None and feed.error is not None:
                    raise RuntimeError(f"the Parquet file feed failed: {feed.error}")
            stopped = _wall()
            extra["window_extended_s"] = round(max(0.0, clock.elapsed() - planned), 3)
            progress = list(query.recentProgress)
        finally:
            stop_stream()
        active = len(spark.streams.active)
        if active:
            raise CheckFailed(f"{active} streaming quer(y/ies) still active after stop")
        figures = streaming_figures(batches, progress, started + warmup_s, stopped, input_rate)
        _check_stream(batches, srv, figures)
        samples = [_percentiles(b.latencies(), (0.5,))[0] for b in batches if b.rows and b.done >= started + warmup_s]
        warm = [_percentiles(b.latencies(), (0.5,))[0] for b in batches if b.rows and b.done < started + warmup_s]
        if not samples:
            raise CheckFailed(f"no micro-batch finished in the measured window ({duration_s:g} s, extended by "
                              f"{extra['window_extended_s']:g} s; {len(batches)} in all): the query fell too far "
                              "behind its input; lower input_rate or raise duration_s")
        extra.update(figures, streams_active_after=active, batches_total=len(batches),
                     rows_total=sum(b.rows for b in batches), samples_are="end-to-end latency (s) of each "
                     "micro-batch's median row in the measured window")
        if state["feed"] is not None:
            extra.update(files_written=state["feed"].files, rows_written=state["feed"].rows)
        if loads.acc.value:  # the loads of the workers' warm-up job before the stream, and any during it
            extra.update({k: v for k, v in loads.summary(1).items() if k != "model_loads_per_run"})
        if memory is not None:
            extra.update(memory.stop())
        extra["max_sustained_input_rate"] = _max_sustained(ctx, params, figures)
        return Measurement(samples=samples, warmup=warm, extra={k: v for k, v in extra.items() if v is not None})

    def teardown() -> None:
        import shutil

        stop_stream()
        if memory is not None:
            memory.stop()
        restore()
        if not spark.streams.active:  # a clean stop: nothing will read the checkpoint again
            shutil.rmtree(folder, ignore_errors=True)

    return SelfTimed(measure=measure, teardown=teardown)


def _check_stream(batches: list[BatchFigures], srv: Served, figures: dict[str, Any]) -> None:
    """Every row the query took was scored exactly once and matches the reference."""
    scored = [b for b in batches if b.rows]
    if not scored:
        return
    tol = srv.tolerance
    diff = max(b.max_abs_diff for b in scored)
    if not diff <= tol:
        raise CheckFailed(f"inference.streaming: a prediction differs from the reference by {diff:.3g} "
                          f"(tolerance {tol:.3g})")
    rows = sum(b.rows for b in scored)
    checksum, ref_sum = sum(b.checksum for b in scored), sum(b.ref_sum for b in scored)
    if not abs(checksum - ref_sum) <= tol * rows * srv.n_outputs:
        raise CheckFailed(f"inference.streaming: checksum {checksum!r} differs from the reference {ref_sum!r}")
    lo, hi = min(b.min_seq for b in scored), max(b.max_seq for b in scored)
    if lo != 0 or hi - lo + 1 != rows:
        raise CheckFailed(f"inference.streaming: {rows} rows scored for sequence numbers {lo}..{hi}: rows were "
                          "lost or scored twice")
    figures.update(checksum=checksum, checksum_reference=ref_sum, max_abs_diff=diff, tolerance=tol)


EXP.case("streaming", {**MODEL_AXES, "framework": Axis("framework", ("torch",), str, choices=FRAMEWORKS),
                       **STREAM_AXES, **BATCH_AXIS, **ARROW_AXIS},
         valid=_valid_model, metric="latency_s", unit="s", better="lower", spark=True)(build_streaming)
