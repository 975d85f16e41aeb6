"""Training: Spark MLlib vs TensorFlow vs PyTorch on the same prepared data and model, and what feeding costs.

Cases
- `mllib`: Spark MLlib's own estimator and solver (LinearRegression `normal`, multinomial LogisticRegression
  `l-bfgs`, MultilayerPerceptronClassifier `l-bfgs`) in the run's SparkSession; `cnn` is `unavailable`
  (MLlib has no convolution) and so is `mlp` for regression (MLlib has no MLP regressor).
- `torch` / `tensorflow`: the same architecture (`harness.models`), loss, optimizer (Adam), batch size and
  epochs, each in its own process (`harness.isolation.run_function`), fed by the `feeder` axis.
- `feed_petastorm` / `feed_arrow` / `feed_ipc` / `feed_pandas` / `feed_toarrow` / `feed_limit`: epochs of the same
  training batches delivered to `framework` over one open feeder, with a minimal consumer (a sum over every
  feature value, a row count and a label checksum, checked every epoch; a feature checksum from one more, untimed
  epoch); the warm-up epochs are the cold ones; `feed_limit` iterates the same batches already in memory as
  framework tensors: the ceiling.

Timed: framework cases, the training epochs (feeding included) of a fresh model per sample, measured inside
the framework's process with `harness.timing`; mllib, `fit()`; feed cases, one epoch of batches per sample.
Not timed: data generation, the shared Spark preprocessing (once per run and task, then reused by every case),
each feeder's one-time materialisation (Spark -> Parquet, Petastorm's converter, `toPandas()`, `toArrow()`:
recorded as `materialize_s`), process start-up and framework import, and the per-epoch test evaluation that
gives the quality-over-time series `quality_series` ([train_s, metric] per epoch) and `time_to_target_s`.

Fairness: one preprocessing and one seeded split for all frameworks; threads equal (`threads` = Spark's cores,
intra- and inter-op pools set to it in TF and PyTorch; recorded); the final test metric (R^2 or accuracy)
is recorded beside every time, so a fast wrong answer shows.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import isolation, timing
from ..feeders import FEEDERS
from ..models import MODELS
from ..registry import experiment
from ..spec import Axis
from ..workload import Measurement, SelfTimed, Unavailable, Workload
from ._requires import need_spark

EXP = experiment("training", "Spark MLlib vs TensorFlow vs PyTorch on the same data and model; Spark -> framework "
                             "feeders (petastorm, arrow, ipc, pandas, toarrow) against the in-memory limit")

TASKS = ("co2", "tabular_cls", "images")
# the test metric a model must reach for time_to_target_s: R^2 for co2, accuracy for the classification tasks
TARGETS = {"co2": 0.95, "tabular_cls": 0.8, "images": 0.5}
TASK_MODELS = {"co2": ("linear", "mlp"), "tabular_cls": ("linear", "mlp"), "images": ("cnn", "mlp")}
WORKER = "harness.experiments._training_worker"
IMAGE_FILE_KB = 8
IMAGE_CLASSES = 10

DATA = {"task": Axis("task", ("co2",), str, choices=TASKS), "rows": [20000], "image_size": [32]}
MODEL = {"model": Axis("model", ("linear",), str, choices=MODELS)}
FIT = {"epochs": [10], "batch_size": [256], "lr": [0.01]}
FEEDER = {"feeder": Axis("feeder", ("arrow",), str, choices=FEEDERS)}
FRAMEWORK = {"framework": Axis("framework", ("torch", "tensorflow"), str, choices=("torch", "tensorflow"))}


def _valid_model(p: dict[str, Any]) -> bool:
    return p["model"] in TASK_MODELS[p["task"]] and p["rows"] >= 50 and p.get("epochs", 1) >= 1 \
        and p.get("batch_size", 1) >= 1 and p["image_size"] >= 4


def _valid_feed(p: dict[str, Any]) -> bool:
    return p["rows"] >= 50 and p["batch_size"] >= 1 and p["image_size"] >= 4


# ---------------------------------------------------------------------------------------------- data

@dataclass
class Shared:
    """The preprocessed data of one task in this run, shared by every case and framework."""

    key: str
    base: Path
    train: Any  # cached Spark DataFrame read back from the prepared Parquet
    test: Any
    kind: str
    input_shape: tuple
    n_outputs: int
    rows_train: int
    rows_test: int
    label_sum: float  # of the training labels: the feed cases' checksum
    test_x: Path
    test_y: Path
    source: str
    preprocess_s: float
    info: dict[str, Any]
    feeders: dict[str, tuple[dict, float]] = field(default_factory=dict)  # feeder -> (spec, materialize_s)



def _source(ctx, task: str, rows: int) -> tuple[Path, str]:
    """The file or folder a task reads: --data where it fits the task, else generated data."""
    from ..data import tabular

    data = Path(ctx.data) if ctx.data else None
    if task == "images":
        from ..data.images import cached_tree, check_folder

        if data is not None and data.is_dir():
            check_folder(data)
            return data, str(data)
        return cached_tree(ctx.cache_dir, rows, IMAGE_FILE_KB, IMAGE_CLASSES, ctx.seed), "generated"
    if data is not None and not data.exists():
        raise ValueError(f"--data {data}: no such file; pass a CSV file (or leave --data out)")
    # a CSV serves the task it fits (the other table task, and an image folder, leave it generated data:
    # the record's `data` extra says which was used)
    if data is not None and data.is_file():
        cols = tabular.csv_columns(data)
        if (tabular.co2_label(cols) if task == "co2" else tabular.class_label(cols)):
            return data, str(data)
        if not tabular.co2_label(cols) and not tabular.class_label(cols):
            raise ValueError(f"--data {data}: fits no training task: the co2 task needs a CO2 column, "
                             f"tabular_cls a class column ({', '.join(tabular.CLASS_COLUMNS)}); "
                             f"its columns are {cols}")
    if task == "co2":
        return tabular.co2_csv(ctx, rows), "generated"
    return tabular.classes_csv(ctx, rows), "generated"


def _prepare_images(spark, root: Path, size: int, seed: int):
    """binaryFile read, label = class folder, decoded + resized to size x size RGB in [0, 1] by a pandas_udf."""
    import re

    import pandas as pd
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from ..data.images import JPEG_GLOB
    from ..data.tabular import Prepared, seeded_order, seeded_split

    root = Path(root).resolve()
    files = (spark.read.format("binaryFile").option("pathGlobFilter", JPEG_GLOB)
             .option("recursiveFileLookup", "true").load(str(root)))
    labelled = files.select("path", "content",
                            F.regexp_extract("path", re.escape(str(root)) + r"/([^/]+)/", 1).alias("_label"))
    labelled = labelled.where(F.col("_label") != "")

    def decode_images(content):
        import io

        import numpy as np
        from PIL import Image

        def one(b: bytes):
            img = Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0

        return pd.Series([one(b) for b in content])

    # real classes, not this module's postponed string hints: pandas_udf reads them to pick the UDF type
    decode_images.__annotations__ = {"content": pd.Series, "return": pd.Series}
    decode = pandas_udf(decode_images, "array<float>")

    train, test = seeded_split(labelled.select("path", "_label"), seed, 0.2)
    indexer = StringIndexer(inputCol="_label", outputCol="_idx", stringOrderType="alphabetAsc",
                            handleInvalid="skip").fit(train)
    content = labelled.select("path", "content")

    def finish(part):
        joined = part.join(content, "path")
        if part is train:
            joined = seeded_order(joined, seed, ["path"])
        out = indexer.transform(joined)
        return out.select(decode("content").alias("features"), F.col("_idx").cast("int").alias("label"))

    classes = list(indexer.labels)
    return Prepared(train=finish(train), test=finish(test), kind="classification",
                    input_shape=(size, size, 3), n_outputs=len(classes), rows_train=0, rows_test=0,
                    source=str(root), info={"classes": classes, "label_column": "class folder"})


def shared(ctx, task: str, rows: int, image_size: int) -> Shared:
    """Preprocesses a task's data once per run (Spark), caches it there and writes the test set as .npy."""
    src, origin = _source(ctx, task, rows)
    key_parts = (str(ctx.run_dir), task, str(src), image_size if task == "images" else 0, ctx.seed)
    return ctx.memo(("training.shared", key_parts), lambda: _prepare(ctx, task, src, origin, image_size, key_parts),
                    release=_unpersist)


def _unpersist(s: Shared) -> None:
    s.train.unpersist()
    s.test.unpersist()


def _prepare(ctx, task: str, src: Path, origin: str, image_size: int, key_parts: tuple) -> Shared:
    import numpy as np
    from pyspark.sql import functions as F

    from ..data import tabular
    from ..feeders import pandas as pandas_feeder

    # one data set cached in Spark at a time: an older task's is released (and prepared again if needed)
    ctx.forget(lambda k: k[0] == "training.shared")
    key = hashlib.sha1(repr(key_parts).encode()).hexdigest()[:12]
    base = ctx.work_dir / "training" / f"{task}-{key}"
    spark = ctx.spark
    clock = timing.Stopwatch()
    if task == "images":
        prep = _prepare_images(spark, src, image_size, ctx.seed)
    else:
        prep = tabular.prepare_tabular(spark, src, task, ctx.seed)
    # cached once: every framework and feeder starts from the same materialised rows, in the same order
    train, test = prep.train.cache(), prep.test.cache()
    agg = train.agg(F.count("*").alias("n"), F.sum(F.col("label").cast("double")).alias("s")).first()
    n_train, label_sum = int(agg["n"]), float(agg["s"] or 0.0)
    arrays = pandas_feeder.to_numpy(test)
    n_test = len(arrays["label"])
    preprocess_s = clock.elapsed()
    base.mkdir(parents=True, exist_ok=True)
    if task != "images":
        prep.input_shape = tuple(arrays["features"].shape[1:])
    if n_train < 10 or n_test < 5:
        raise ValueError(f"{src}: only {n_train} training / {n_test} test rows after preprocessing; "
                         "use more rows (--set rows=...) or a bigger file")
    test_x, test_y = base / "test_x.npy", base / "test_y.npy"
    np.save(test_x, arrays["features"].astype(np.float32))
    np.save(test_y, arrays["label"])
    s = Shared(key=key, base=base, train=train, test=test, kind=prep.kind, input_shape=tuple(prep.input_shape),
               n_outputs=prep.n_outputs, rows_train=n_train, rows_test=n_test, label_sum=label_sum,
               test_x=test_x, test_y=test_y, source=origin if origin != "generated" else f"generated ({src.name})",
               preprocess_s=preprocess_s, info=prep.info)
    return s


def materialize(ctx, s: Shared, feeder: str) -> tuple[dict[str, Any], float]:
    """A feeder's one-time Spark-side step (once per run and task); returns (spec for the child, seconds)."""
    import numpy as np

    if feeder in s.feeders:
        return s.feeders[feeder]
    clock = timing.Stopwatch()
    if feeder == "arrow":
        path = s.base / "arrow"
        s.train.write.mode("overwrite").parquet(str(path))
        spec: dict[str, Any] = {"kind": "arrow", "path": str(path)}
    elif feeder == "petastorm":
        from ..feeders import petastorm

        conv = petastorm.converter(ctx.spark, s.train, s.base / "petastorm")
        spec = {"kind": "petastorm", "converter": petastorm.spec(conv), "workers_count": framework_threads(ctx)}
    elif feeder == "ipc":
        from ..feeders import ipc

        path = s.base / "ipc"
        ipc.write(s.train, path, _width(s), expected_rows=s.rows_train, expected_label_sum=s.label_sum)
        spec = {"kind": "ipc", "path": str(path)}
    elif feeder == "toarrow":
        from ..feeders import toarrow

        table = toarrow.collect(s.train)
        seconds = clock.elapsed()
        # as with pandas' .npy files, the file only carries the Table into the framework's process: not timed
        path = s.base / "toarrow"
        toarrow.write(table, path, _width(s), expected_rows=s.rows_train, expected_label_sum=s.label_sum)
        s.feeders[feeder] = ({"kind": "toarrow", "path": str(path)}, seconds)
        return s.feeders[feeder]
    elif feeder in ("pandas", "limit"):
        from ..feeders import pandas as pandas_feeder

        arrays = pandas_feeder.to_numpy(s.train)
        seconds = clock.elapsed()
        # the .npy hop only carries the arrays into the framework's process; it is not the feeder's cost
        x, y = s.base / "train_x.npy", s.base / "train_y.npy"
        np.save(x, arrays["features"].astype(np.float32))
        np.save(y, arrays["label"])
        for name in ("pandas", "limit"):
            s.feeders[name] = ({"kind": name, "x": str(x), "y": str(y)}, seconds)
        return s.feeders[feeder]
    else:
        raise ValueError(f"unknown feeder {feeder!r}")
    s.feeders[feeder] = (spec, clock.elapsed())
    return s.feeders[feeder]


def feeder_available(feeder: str) -> None:
    """Raises Unavailable, before any data is prepared, when this stack's pyspark lacks the feeder's API."""
    if feeder == "toarrow":
        from ..feeders import toarrow

        need_spark(toarrow.NEEDS, "the toarrow feeder (DataFrame.toArrow())")


def _width(s: Shared) -> int:
    """Feature values per row."""
    n = 1
    for d in s.input_shape:
        n *= int(d)
    return n


def features_sumsq(ctx, s: Shared) -> float:
    """The sum of squares of every training feature value, computed by Spark: the feed cases' feature checksum."""
    from pyspark.sql import functions as F

    def compute() -> float:
        square_sum = F.aggregate("features", F.lit(0.0).cast("double"), lambda acc, v: acc + v.cast("double") ** 2)
        return float(s.train.agg(F.sum(square_sum)).first()[0] or 0.0)

    return ctx.memo(("training.features_sumsq", s.key), compute)


def framework_threads(ctx) -> int:
    """One thread count for every framework: Spark's cores, capped by this machine's (children run here)."""
    return max(1, min(ctx.cores, os.cpu_count() or 1))


def child_env(threads: int) -> dict[str, str]:
    """Environment of a framework's process: OpenMP / MKL pools follow the same thread count; TF's C++ start-up
    chatter stays out of error tails."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONHASHSEED": "0"}


def _data_extra(s: Shared) -> dict[str, Any]:
    return {"data": s.source, "rows_train": s.rows_train, "rows_test": s.rows_test, "input_shape": list(s.input_shape),
            "n_outputs": s.n_outputs, "preprocess_s": round(s.preprocess_s, 4),
            **{k: v for k, v in s.info.items() if k in ("dropped_columns", "label_column", "classes")}}


# ---------------------------------------------------------------------------------------------- cases

def _framework_case(framework: str):
    def build(ctx, task: str, model: str, feeder: str, rows: int, image_size: int, epochs: int, batch_size: int,
              lr: float) -> SelfTimed:
        feeder_available(feeder)
        s = shared(ctx, task, rows, image_size)
        spec, materialize_s = materialize(ctx, s, feeder)
        threads = framework_threads(ctx)
        target = TARGETS[task]
        metric = "r2" if s.kind == "regression" else "accuracy"

        def measure(warmup: int, repeats: int, timeout_s: float) -> Measurement:
            out = isolation.run_function(f"{WORKER}:train", dict(
                framework=framework, feeder=spec, model=model, kind=s.kind, input_shape=list(s.input_shape),
                n_outputs=s.n_outputs, test_x=str(s.test_x), test_y=str(s.test_y), epochs=epochs,
                batch_size=batch_size, lr=lr, threads=threads, target=target, seed=ctx.seed, warmup=warmup,
                repeats=repeats), timeout_s, env=child_env(threads))
            extra = {**out["extra"], "framework": framework, "feeder": feeder, "materialize_s": round(materialize_s, 4),
                     "target_metric": metric, "target": target, "spark_cores": ctx.cores, "batch_size": batch_size,
                     "loss": "mse" if s.kind == "regression" else "cross_entropy", **_data_extra(s)}
            extra["reached_target"] = extra.get("time_to_target_s") is not None
            return Measurement(samples=out["samples"], warmup=out["warmup"], extra=extra)

        return SelfTimed(measure=measure)

    build.__doc__ = (f"{'PyTorch' if framework == 'torch' else 'TensorFlow'}: train `model` on `task` for `epochs`, "
                     f"fed by `feeder` (own process)")
    return build


for _fw in ("torch", "tensorflow"):
    EXP.case(_fw, {**DATA, **MODEL, **FEEDER, **FIT}, valid=_valid_model, spark=True)(_framework_case(_fw))


@EXP.case("mllib", {**DATA, **MODEL, "max_iter": [100]}, valid=_valid_model, spark=True)
def mllib(ctx, task: str, model: str, rows: int, image_size: int, max_iter: int) -> Workload:
    """Spark MLlib: its own estimator and solver for `model` on `task` (cnn: unavailable)."""
    if model == "cnn":
        raise Unavailable("Spark MLlib has no convolutional layers (no CNN estimator); its counterpart for "
                          "images is model=mlp on flattened pixels (MultilayerPerceptronClassifier)")
    if task == "co2" and model == "mlp":
        raise Unavailable("Spark MLlib has no MLP regressor (MultilayerPerceptronClassifier only classifies); "
                          "its regression row is model=linear")
    from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression

    s = shared(ctx, task, rows, image_size)
    n_in = 1
    for d in s.input_shape:
        n_in *= d
    train = s.train.select(array_to_vector("features").alias("features"), "label").cache()
    test = s.test.select(array_to_vector("features").alias("features"), "label").cache()
    train.count(), test.count()
    if s.kind == "regression":
        est = LinearRegression(solver="normal", regParam=0.0, maxIter=max_iter)
        solver = "LinearRegression(solver=normal: weighted least squares, exact)"
        evaluator = RegressionEvaluator(metricName="r2")
    elif model == "linear":
        est = LogisticRegression(family="multinomial", maxIter=max_iter, regParam=0.0)
        solver = f"LogisticRegression(multinomial, l-bfgs, maxIter={max_iter})"
        evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    else:
        layers = [n_in, 64, 64, s.n_outputs]
        est = MultilayerPerceptronClassifier(layers=layers, maxIter=max_iter, seed=ctx.seed, solver="l-bfgs")
        solver = f"MultilayerPerceptronClassifier(layers={layers}, l-bfgs, maxIter={max_iter})"
        evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    target = TARGETS[task]
    metric = "r2" if s.kind == "regression" else "accuracy"

    def after(fitted, samples: list[float], warmup: list[float]) -> dict[str, Any]:
        value = float(evaluator.evaluate(fitted.transform(test)))
        med = sorted(samples)[len(samples) // 2] if samples else float("nan")
        reached = med if value >= target else None
        extra = {"framework": "mllib", "solver": solver, "train_wall_s": med,
                 "samples_per_s": s.rows_train / med if med and med > 0 else None,
                 "time_to_target_s": reached, "reached_target": reached is not None, f"test_{metric}": value,
                 "quality_series": [[med, value]], "iterations": _iterations(fitted), "max_iter": max_iter,
                 "threads": ctx.cores, "spark_cores": ctx.cores, "target_metric": metric, "target": target,
                 "peak_rss_mb": _jvm_peak_rss_mb(ctx), **_data_extra(s)}
        return extra

    def teardown():
        train.unpersist()
        test.unpersist()

    return Workload(run=lambda: est.fit(train), after=after, teardown=teardown)


def _iterations(fitted) -> int | None:
    try:
        return int(fitted.summary.totalIterations)
    except Exception:  # noqa: BLE001 - some models (MLP) or solvers (normal) have no iteration summary
        return None


def _jvm_peak_rss_mb(ctx) -> float | None:
    """Peak resident memory (VmHWM) of the Spark JVM, where it runs on this machine (local mode)."""
    try:
        pid = int(ctx.spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except Exception:  # noqa: BLE001 - a remote driver or no /proc: the figure is simply not known
        return None
    return None


def _feed_case(feeder: str):
    def build(ctx, framework: str, task: str, rows: int, image_size: int, batch_size: int) -> SelfTimed:
        feeder_available(feeder)
        s = shared(ctx, task, rows, image_size)
        spec, materialize_s = materialize(ctx, s, feeder)
        threads = framework_threads(ctx)
        sumsq = features_sumsq(ctx, s)

        def measure(warmup: int, repeats: int, timeout_s: float) -> Measurement:
            out = isolation.run_function(f"{WORKER}:feed", dict(
                framework=framework, feeder=spec, input_shape=list(s.input_shape), batch_size=batch_size,
                threads=threads, expected_rows=s.rows_train, expected_label_sum=s.label_sum,
                expected_features_sumsq=sumsq, warmup=warmup,
                repeats=repeats), timeout_s, env=child_env(threads))
            extra = {**out["extra"], "framework": framework, "feeder": feeder, "spark_cores": ctx.cores,
                     "materialize_s": round(materialize_s, 4),
                     "materialize_rows_per_s": s.rows_train / materialize_s if materialize_s > 0 else None,
                     **_data_extra(s)}
            return Measurement(samples=out["samples"], warmup=out["warmup"], extra=extra)

        return SelfTimed(measure=measure)

    what = {"limit": "the same batches already in memory as framework tensors (the ceiling)",
            "pandas": "toPandas() once, then slices of in-memory tensors",
            "arrow": "Spark-written Parquet read by pyarrow.dataset, prefetched",
            "ipc": "Spark-written Arrow IPC files, memory-mapped once, batches as views",
            "toarrow": "DataFrame.toArrow() once (Spark >= 4.0), then batches as views of that Table",
            "petastorm": "Petastorm's make_spark_converter loaders"}[feeder]
    build.__doc__ = f"Epochs of batches over one open feeder into `framework`: {what}"
    return build


for _fd in ("petastorm", "arrow", "ipc", "pandas", "toarrow", "limit"):
    EXP.case(f"feed_{_fd}", {**FRAMEWORK, "task": DATA["task"], "rows": DATA["rows"], "image_size": DATA["image_size"],
                             "batch_size": [256]}, valid=_valid_feed, spark=True, limit="feed_limit")(_feed_case(_fd))
