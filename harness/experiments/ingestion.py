"""Ingestion: many small JPEG files vs the same images compacted into Parquet, and the book's image pipeline.

Timed (each call starts from the path, so file listing and footer reading are part of every read):
- `small_files`: Spark's `binaryFile` read (`pathGlobFilter`, `recursiveFileLookup`) forced through
  `count(*)` and `sum(length(content))`, so every byte of every file is read.
- `compact`: the compaction job: the same read, `repartition(target_files)`, Parquet with `row_group_mb`
  row groups and `compression`.
- `compacted`: reading the compacted Parquet, forced the same way as `small_files`.
- `pyarrow_limit`: the same Parquet read by pyarrow alone (streamed batches, `ctx.cores` threads): the
  no-Spark reference for what the bytes cost.
- `pipeline_small_files` / `pipeline_compacted`: label by `regexp_extract`, image size by a `pandas_udf`
  with PIL, resize to `image_size` (RGB bytes), written to the `noop` sink.

Not timed: generating (or scanning) the image tree, compacting when a read case needs Parquet that is not
there yet, dropping the page cache, and the checks: row and byte totals must equal what a scan of the tree
found (so `small_files`, `compacted` and `pyarrow_limit` agree with each other), else the case is an error.

The first call of a case is its warm-up sample and is the cold read. `cold=drop_caches` (or `auto` where
`/proc/sys/vm/drop_caches` is writable) empties the page cache just before it (the workload's untimed `before`),
so it is truly cold; otherwise it is only the first read (JVM and listing cold, files possibly cached).
`cold_mode` says which.
"""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..registry import experiment
from ..spark import is_connect_session, partition_count, session_conf
from ..spec import Axis
from ..workload import CheckFailed, Unavailable, Workload

EXP = experiment("ingestion", "many small image files vs compacted Parquet (Spark, pyarrow), and the book's "
                              "image preprocessing from each")

MB = 1024 * 1024
N_CLASSES = 10
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
CODECS = {"none": "uncompressed", "snappy": "snappy"}

TREE = {"n_files": [2000], "file_kb": [25]}
SPARK_FILES = {"max_partition_mb": [128], "open_cost_mb": [4]}  # Spark's defaults
COMPACT = {"target_files": [4], "row_group_mb": [32],
           "compression": Axis("compression", ("none",), str, choices=tuple(CODECS))}
COLD = {"cold": Axis("cold", ("auto",), str, choices=("auto", "first_read", "drop_caches"))}
IMAGE = {"image_size": [224]}


def _valid(params: dict[str, Any]) -> bool:
    """Compaction can't make more non-empty files than there are images."""
    return params.get("target_files", 1) <= params["n_files"] and params["n_files"] >= 1 \
        and params["file_kb"] >= 1 and params.get("target_files", 1) >= 1


# ---------------------------------------------------------------------------------------------- data

@dataclass
class Source:
    """The image tree a case reads and the ground truth the reads are checked against."""

    root: Path
    key: str  # names compaction output: generated tree key, or the --data folder
    files: int
    bytes: int
    classes: int
    excluded: list[str]  # Spark `path` values to drop: corrupt JPEGs, JPEGs outside class folders
    label_regex: str
    extra: dict[str, Any]


def _spark_path(p: Path) -> str:
    # binaryFile's `path` column is the Hadoop path string: `file:` + the absolute path, not URI-encoded
    return "file:" + str(p)


def source(ctx, n_files: int, file_kb: int) -> Source:
    """Generates (cached) or validates the tree and scans it once per run."""
    from ..data.images import image_tree

    root = image_tree(ctx, n_files, file_kb, N_CLASSES)
    return ctx.memo(("ingestion.source", str(root)), lambda: _scan(ctx, root, n_files, file_kb))


def _scan(ctx, root: Path, n_files: int, file_kb: int) -> Source:
    from ..data.images import generation_figures, scan_tree, tree_key

    info = scan_tree(root)
    if not info.files:
        from ..data.images import DataError
        raise DataError(f"--data {root}: no readable JPEG inside a class folder ({len(info.corrupt)} corrupt, "
                        f"{info.ignored} ignored); expected <root>/<class>/<image>.jpg")
    extra: dict[str, Any] = {"files": len(info.files), "bytes": info.total_bytes, "classes": len(info.classes),
                             "corrupt_files": len(info.corrupt), "ignored_files": info.ignored,
                             "mean_file_kb": round(info.total_bytes / len(info.files) / 1024, 2)}
    if ctx.data is not None:
        extra["data"] = str(root)
        key = "data-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(root)).strip("_")[-80:]
    else:
        key = tree_key(n_files, file_kb, N_CLASSES, ctx.seed)
        gen = generation_figures(root) or {}
        if gen.get("images_per_s"):
            extra["generator_images_per_s"] = gen["images_per_s"]
    return Source(root=root, key=key, files=len(info.files), bytes=info.total_bytes, classes=len(info.classes),
                  excluded=[_spark_path(p) for p in info.excluded],
                  label_regex="^" + re.escape(_spark_path(root)) + "/([^/]+)/", extra=extra)


# ---------------------------------------------------------------------------------------------- spark


def _file_conf(max_partition_mb: int, open_cost_mb: int) -> dict[str, str]:
    if max_partition_mb < 1 or open_cost_mb < 0:
        raise ValueError(f"max_partition_mb must be >= 1 and open_cost_mb >= 0, got {max_partition_mb}, "
                         f"{open_cost_mb}")
    return {"spark.sql.files.maxPartitionBytes": str(max_partition_mb * MB),
            "spark.sql.files.openCostInBytes": str(open_cost_mb * MB)}


def read_small_files(spark, src: Source):
    """The binaryFile DataFrame of every image of the tree (listing happens here)."""
    from pyspark.sql import functions as F

    from ..data.images import JPEG_GLOB

    df = (spark.read.format("binaryFile").option("pathGlobFilter", JPEG_GLOB)
          .option("recursiveFileLookup", "true").load(str(src.root)))
    if src.excluded:
        df = df.where(~F.col("path").isin(src.excluded))
    return df


def _totals(df) -> tuple[int, int]:
    """(rows, bytes of content): needs every content byte, returns two numbers."""
    from pyspark.sql import functions as F

    row = df.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.length("content")).alias("bytes")).collect()[0]
    return int(row["rows"]), int(row["bytes"] or 0)


def _check_totals(what: str, rows: int, nbytes: int, src: Source) -> None:
    if rows != src.files or nbytes != src.bytes:
        raise CheckFailed(f"{what} read {rows} rows / {nbytes} bytes, but the tree {src.root} holds "
                          f"{src.files} images / {src.bytes} bytes: the read lost or invented data")


def _group_jobs(spark, group: str | None) -> set[int]:
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup(group)) if group else set()


def _tasks(spark, jobs: set[int]) -> int | None:
    """Tasks Spark ran for these jobs (with adaptive execution one query runs several jobs)."""
    tracker = spark.sparkContext.statusTracker()
    total = 0
    for j in jobs:
        info = tracker.getJobInfo(j)
        for s in (info.stageIds if info else []):
            stage = tracker.getStageInfo(s)
            total += stage.numTasks if stage else 0
    return total or None


def compact_dir(ctx, src: Source, target_files: int, row_group_mb: int, compression: str) -> Path:
    return ctx.work_dir / "compacted" / f"{src.key}-t{target_files}-rg{row_group_mb}-{compression}"


def write_compacted(spark, src: Source, out: Path, target_files: int, row_group_mb: int, compression: str) -> None:
    """The compaction job (what `compact` times)."""
    (read_small_files(spark, src).repartition(target_files).write.mode("overwrite")
     .option("compression", CODECS[compression])
     .option("parquet.block.size", str(row_group_mb * MB))
     .parquet(str(out)))


def parquet_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.parquet") if not p.name.startswith(("_", ".")))


def ensure_compacted(ctx, src: Source, target_files: int, row_group_mb: int, compression: str) -> Path:
    """The Parquet a read case needs; made here (untimed) when `compact` has not left a finished one."""
    out = compact_dir(ctx, src, target_files, row_group_mb, compression)
    if not (out / "_SUCCESS").is_file():
        write_compacted(ctx.spark, src, out, target_files, row_group_mb, compression)
    return out


def _parquet_figures(out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    files = parquet_files(out)
    groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)
    return {"output_files": len(files), "output_bytes": sum(f.stat().st_size for f in files),
            "row_groups": groups}


# ---------------------------------------------------------------------------------------------- timing

def drop_page_cache() -> None:
    os.sync()  # only clean pages are dropped
    DROP_CACHES.write_text("1\n")


def _cold_mode(cold: str) -> str:
    """Which cold mode will run; raises Unavailable when drop_caches is asked for and impossible."""
    can_drop = os.access(DROP_CACHES, os.W_OK)
    if cold == "drop_caches" and not can_drop:
        raise Unavailable(f"cold=drop_caches needs a writable {DROP_CACHES} (root on a VM or bare metal, not "
                          "an unprivileged container); use cold=first_read or cold=auto")
    return "drop_caches" if cold in ("drop_caches", "auto") and can_drop else "first_read"


def _reference(ctx, case: str, params: dict[str, Any]):
    """The `case` record of this run with the same values on every axis the two cases share."""
    spec = EXP.cases[case]
    wanted = {n: params.get(n, a.default[0]) for n, a in spec.axes.items()}
    found = ctx.find(EXP.id, case, wanted)
    if found is not None:
        return found
    shared = set(spec.axes) & set(params)
    for r in ctx.results.values():
        if r.experiment == EXP.id and r.case == case and r.status == "ok" \
                and all(r.params.get(k) == params[k] for k in shared):
            return r
    return None


def _speedups(ctx, ref_case: str, params: dict, warm: list[float], samples: list[float]) -> dict[str, Any]:
    ref = _reference(ctx, ref_case, params)
    if ref is None or ref.status != "ok" or not ref.samples or not samples:
        return {}
    out = {f"speedup_vs_{ref_case}": round(statistics.median(ref.samples) / statistics.median(samples), 3)}
    if ref.warmup and warm:
        out[f"cold_speedup_vs_{ref_case}"] = round(ref.warmup[0] / warm[0], 3)
    return out


def timed(ctx, case: str, params: dict, run: Callable[[], Any], after: Callable[[Any], dict],
          extra: dict, cold: str, teardown: Callable | None = None) -> Workload:
    """The read as a Workload: the worker times `run`; the page cache is dropped (untimed) before the first
    call when that call is a warm-up, so the cold sample is truly cold and never mixed into the statistics."""
    mode = _cold_mode(cold)
    ref_case = EXP.cases[case].roles.get("reference")  # its speedups are over this case (registered with it)
    spark = ctx.spark if ctx.spark_started else None
    # the worker puts each case's Spark jobs in a job group; its jobs from the first call on are the timed calls
    # (through Spark Connect there is no job group or status tracker here: no task counts)
    group = spark.sparkContext.getLocalProperty("spark.jobGroup.id") if spark and not is_connect_session(spark) \
        else None
    calls = 0
    jobs_before: set[int] = set()

    def before(phase: str) -> None:
        nonlocal calls, jobs_before
        if calls == 0:
            jobs_before = _group_jobs(spark, group)
            if mode == "drop_caches" and phase == "warmup":
                drop_page_cache()
        calls += 1

    def after_all(out, samples: list[float], warm: list[float]) -> dict:
        figures: dict[str, Any] = {"cold_mode": mode if warm else "none (no warm-up run)"}
        if group and calls:
            tasks = _tasks(spark, _group_jobs(spark, group) - jobs_before)
            if tasks:
                figures["tasks"] = round(tasks / calls)
        figures.update(after(out) or {})
        med = statistics.median(samples) if samples else None
        if med and "files" in extra:
            figures["files_per_s"] = round(extra["files"] / med, 1)
            figures["mb_per_s"] = round(extra["bytes"] / MB / med, 2)
        if ref_case:
            figures.update(_speedups(ctx, ref_case, params, warm, samples))
        return figures

    return Workload(run=run, before=before, after=after_all, teardown=teardown, extra=extra)


# ---------------------------------------------------------------------------------------------- cases

@EXP.case("small_files", {**TREE, **SPARK_FILES, **COLD}, valid=_valid, spark=True)
def small_files(ctx, n_files, file_kb, max_partition_mb, open_cost_mb, cold):
    """binaryFile read of every image file, forced to read every byte."""
    src = source(ctx, n_files, file_kb)
    spark = ctx.spark
    restore = session_conf(spark, _file_conf(max_partition_mb, open_cost_mb))
    partitions = partition_count(read_small_files(spark, src))

    def after(out):
        _check_totals("small_files", *out, src)
        return {"rows": out[0]}

    params = dict(n_files=n_files, file_kb=file_kb, max_partition_mb=max_partition_mb, open_cost_mb=open_cost_mb,
                  cold=cold)
    return timed(ctx, "small_files", params, lambda: _totals(read_small_files(spark, src)), after,
                 {**src.extra, "input_partitions": partitions}, cold, teardown=restore)


@EXP.case("compact", {**TREE, **COMPACT, **SPARK_FILES, **COLD}, valid=_valid, spark=True)
def compact(ctx, n_files, file_kb, target_files, row_group_mb, compression, max_partition_mb, open_cost_mb, cold):
    """The compaction job: repartition to target_files, write Parquet."""
    src = source(ctx, n_files, file_kb)
    spark = ctx.spark
    restore = session_conf(spark, _file_conf(max_partition_mb, open_cost_mb))
    out = compact_dir(ctx, src, target_files, row_group_mb, compression)
    partitions = partition_count(read_small_files(spark, src))

    def after(_):
        figures = _parquet_figures(out)
        expected = min(target_files, src.files)
        if figures["output_files"] != expected:
            raise CheckFailed(f"compaction wrote {figures['output_files']} Parquet files into {out}, expected "
                              f"target_files={expected}")
        rows, nbytes = _totals(spark.read.parquet(str(out)))
        _check_totals("compacted output", rows, nbytes, src)
        return {**figures, "rows": rows}

    params = dict(n_files=n_files, file_kb=file_kb, max_partition_mb=max_partition_mb, open_cost_mb=open_cost_mb,
                  cold=cold)
    return timed(ctx, "compact", params,
                 lambda: write_compacted(spark, src, out, target_files, row_group_mb, compression), after,
                 {**src.extra, "input_partitions": partitions, "target_files": target_files}, cold,
                 teardown=restore)


@EXP.case("compacted", {**TREE, **COMPACT, **SPARK_FILES, **COLD}, valid=_valid, spark=True,
          reference="small_files", limit="pyarrow_limit")
def compacted(ctx, n_files, file_kb, target_files, row_group_mb, compression, max_partition_mb, open_cost_mb, cold):
    """Spark reading the compacted Parquet, forced to read every content byte."""
    src = source(ctx, n_files, file_kb)
    spark = ctx.spark
    out = ensure_compacted(ctx, src, target_files, row_group_mb, compression)
    restore = session_conf(spark, _file_conf(max_partition_mb, open_cost_mb))
    partitions = partition_count(spark.read.parquet(str(out)))

    def after(res):
        _check_totals("compacted", *res, src)
        return {"rows": res[0]}

    params = dict(n_files=n_files, file_kb=file_kb, max_partition_mb=max_partition_mb, open_cost_mb=open_cost_mb,
                  cold=cold)
    return timed(ctx, "compacted", params, lambda: _totals(spark.read.parquet(str(out)).select("content")), after,
                 {**src.extra, **_parquet_figures(out), "input_partitions": partitions}, cold, teardown=restore)


def _pyarrow_totals(out: Path) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    rows = nbytes = 0
    # streamed batches keep memory flat however large the data set is
    for batch in ds.dataset(str(out), format="parquet").to_batches(columns=["content"]):
        col = batch.column(0)
        rows += len(col)
        nbytes += pc.sum(pc.binary_length(col)).as_py() or 0
    return rows, nbytes


@EXP.case("pyarrow_limit", {**TREE, **COMPACT, **COLD}, valid=_valid, spark=True, reference="small_files")
def pyarrow_limit(ctx, n_files, file_kb, target_files, row_group_mb, compression, cold):
    """pyarrow alone reading the compacted Parquet: the no-Spark reference."""
    import pyarrow as pa

    src = source(ctx, n_files, file_kb)
    out = ensure_compacted(ctx, src, target_files, row_group_mb, compression)  # made by Spark, untimed
    before = pa.cpu_count()
    threads = max(1, min(ctx.cores, os.cpu_count() or 1))  # as many threads as Spark has cores here
    pa.set_cpu_count(threads)

    def after(res):
        _check_totals("pyarrow_limit", *res, src)
        return {"rows": res[0]}

    params = dict(n_files=n_files, file_kb=file_kb, cold=cold)
    return timed(ctx, "pyarrow_limit", params, lambda: _pyarrow_totals(out), after,
                 {**src.extra, **_parquet_figures(out), "threads": threads}, cold,
                 teardown=lambda: pa.set_cpu_count(before))


def preprocess(df, label_regex: str, image_size: int):
    """The book's preprocessing: label from the path, image size by pandas_udf, resize to image_size."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    size = int(image_size)

    # the UDFs import inside so that they pickle by value and run on workers without the harness installed
    def image_dims(content):
        import io

        from PIL import Image

        widths, heights = [], []
        for data in content:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    widths.append(im.width)
                    heights.append(im.height)
            except (OSError, ValueError, SyntaxError):  # not decodable: null size, counted below
                widths.append(None)
                heights.append(None)
        return pd.DataFrame({"width": pd.array(widths, dtype="Int32"), "height": pd.array(heights, dtype="Int32")})

    def resize(content):
        import io

        from PIL import Image

        out = []
        for data in content:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    out.append(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).tobytes())
            except (OSError, ValueError, SyntaxError):
                out.append(None)
        return pd.Series(out, dtype=object)

    # real type objects, not the strings `from __future__ import annotations` would make of local names
    image_dims.__annotations__ = {"content": pd.Series, "return": pd.DataFrame}
    resize.__annotations__ = {"content": pd.Series, "return": pd.Series}
    image_dims = pandas_udf(image_dims, "width int, height int")
    resize = pandas_udf(resize, "binary")

    return (df.withColumn("label", F.regexp_extract("path", label_regex, 1))
              .withColumn("dims", image_dims("content"))
              .select("path", "label", F.col("dims.width").alias("width"), F.col("dims.height").alias("height"),
                      resize("content").alias("image")))


def _pipeline_run(df_fn: Callable[[], Any], label_regex: str, image_size: int):
    """One timed call: build, observe and write to noop; returns the observed totals."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    obs = Observation("ingestion_pipeline")
    out = preprocess(df_fn(), label_regex, image_size).observe(
        obs, F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("label") == "", 1).otherwise(0)).alias("unlabelled"),
        F.sum(F.when(F.col("image").isNull(), 1).otherwise(0)).alias("undecodable"),
        F.sum(F.length("image")).alias("output_bytes"),
        F.min("width").alias("min_width"), F.max("width").alias("max_width"))
    out.write.format("noop").mode("overwrite").save()
    return obs.get


def _pipeline_after(src: Source, image_size: int):
    def after(m: dict) -> dict:
        rows, undecodable = int(m["rows"]), int(m["undecodable"] or 0)
        if rows != src.files:
            raise CheckFailed(f"pipeline produced {rows} rows, the tree {src.root} holds {src.files} images")
        if m["unlabelled"]:
            raise CheckFailed(f"{m['unlabelled']} rows got no label from regexp_extract (regex {src.label_regex})")
        expected = (rows - undecodable) * image_size * image_size * 3
        if int(m["output_bytes"] or 0) != expected:
            raise CheckFailed(f"resized images hold {m['output_bytes']} bytes, expected {expected} "
                              f"({rows - undecodable} images of {image_size}x{image_size} RGB)")
        return {"rows": rows, "undecodable": undecodable, "min_width": m["min_width"],
                "max_width": m["max_width"]}

    return after


@EXP.case("pipeline_small_files", {**TREE, **IMAGE, **SPARK_FILES, **COLD}, valid=_valid, spark=True)
def pipeline_small_files(ctx, n_files, file_kb, image_size, max_partition_mb, open_cost_mb, cold):
    """The book's preprocessing (label, size, resize) from the small files, to the noop sink."""
    src = source(ctx, n_files, file_kb)
    spark = ctx.spark
    restore = session_conf(spark, _file_conf(max_partition_mb, open_cost_mb))
    partitions = partition_count(read_small_files(spark, src))
    params = dict(n_files=n_files, file_kb=file_kb, image_size=image_size, max_partition_mb=max_partition_mb,
                  open_cost_mb=open_cost_mb, cold=cold)
    return timed(ctx, "pipeline_small_files", params,
                 lambda: _pipeline_run(lambda: read_small_files(spark, src), src.label_regex, image_size),
                 _pipeline_after(src, image_size),
                 {**src.extra, "input_partitions": partitions}, cold, teardown=restore)


@EXP.case("pipeline_compacted", {**TREE, **COMPACT, **IMAGE, **SPARK_FILES, **COLD}, valid=_valid, spark=True,
          reference="pipeline_small_files")
def pipeline_compacted(ctx, n_files, file_kb, target_files, row_group_mb, compression, image_size,
                       max_partition_mb, open_cost_mb, cold):
    """The same preprocessing from the compacted Parquet, to the noop sink."""
    src = source(ctx, n_files, file_kb)
    spark = ctx.spark
    out = ensure_compacted(ctx, src, target_files, row_group_mb, compression)
    restore = session_conf(spark, _file_conf(max_partition_mb, open_cost_mb))
    partitions = partition_count(spark.read.parquet(str(out)))
    params = dict(n_files=n_files, file_kb=file_kb, image_size=image_size, max_partition_mb=max_partition_mb,
                  open_cost_mb=open_cost_mb, cold=cold)
    return timed(ctx, "pipeline_compacted", params,
                 lambda: _pipeline_run(lambda: spark.read.parquet(str(out)), src.label_regex, image_size),
                 _pipeline_after(src, image_size),
                 {**src.extra, **_parquet_figures(out), "input_partitions": partitions}, cold, teardown=restore)
