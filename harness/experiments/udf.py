"""UDF styles: the same transformation as a Spark SQL expression and as every kind of Python UDF.

The question: for my transformation and data shape, which Python UDF style should I use, and what does
leaving the JVM cost? One case per style (`native`, `row_udf`, `arrow_udf`, `pandas_udf`, `pandas_udf_iter`,
`pandas_agg`, `apply_in_pandas`, `map_in_pandas`, and the Arrow-native styles that hand Python `pyarrow` data
instead of pandas: `map_in_arrow`, `apply_in_arrow` (Spark >= 4.0), `arrow_array_udf`, `arrow_array_udf_iter`,
`arrow_array_agg` (`pyspark.sql.functions.arrow_udf`, Spark >= 4.1); on an older pyspark those are
`unavailable` with the version they need); axis `workload` picks the transformation. A style that cannot express
a workload does not expand (`STYLES` below says which can).

Timed: building the style's query (a fresh DataFrame each run, see `build_case`) and the one Spark job that
runs its transformation over every row and folds the output into one aggregate row (count, weighted
checksum), so every style is forced the same way and nothing big is collected.
Not timed: generating and caching the input DataFrame (shared by every case of the same data), reading the
image files into it, computing the reference checksum (the `native` case's, or the driver's for images),
setting and restoring the Spark conf.

Every style's checksum must match the reference within `REL_TOL` of the output's magnitude; a mismatch is a
`CheckFailed` (an `error` record), so a fast wrong answer never looks like a win.
"""
import io
import math
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlparse

from ..registry import experiment
from ..spark import app_id, partition_count, session_conf
from ..spec import Axis
from ..workload import CheckFailed, Workload
from ._requires import need_spark

EXP = experiment("udf", "native SQL vs row/Arrow/pandas UDF styles: what leaving the JVM costs per workload")

NUMERIC = ("plus_one", "cdf", "subtract_mean")
IMAGE = ("image_size", "grayscale")
WORKLOADS = NUMERIC + IMAGE
ROW_WISE = ("plus_one", "cdf", "image_size", "grayscale")

# Which style can express which workload. Spark SQL cannot decode a JPEG, so `native` has no image
# workloads (their reference is computed in the driver). `pandas_agg` returns one value per group, so it
# only serves `subtract_mean` (the group means, joined back). Series->Series styles and mapInPandas see Arrow
# batches that cut across groups, so they cannot subtract a group's mean; row-at-a-time UDFs can, over one
# collect_list array per group (the row-at-a-time version of the well-known Databricks comparison).
STYLES = {
    "native": ("plus_one", "cdf", "subtract_mean"),
    "row_udf": WORKLOADS,
    "arrow_udf": WORKLOADS,
    "pandas_udf": ROW_WISE,
    "pandas_udf_iter": ROW_WISE,
    "pandas_agg": ("subtract_mean",),
    "apply_in_pandas": WORKLOADS,
    "map_in_pandas": ROW_WISE,
    "map_in_arrow": ROW_WISE,
    "apply_in_arrow": WORKLOADS,
    "arrow_array_udf": ROW_WISE,
    "arrow_array_udf_iter": ROW_WISE,
    "arrow_array_agg": ("subtract_mean",),
}
ARROW_STYLES = ("arrow_udf", "pandas_udf", "pandas_udf_iter", "pandas_agg", "apply_in_pandas", "map_in_pandas",
                "map_in_arrow", "apply_in_arrow", "arrow_array_udf", "arrow_array_udf_iter", "arrow_array_agg")
# the pyspark (major, minor) that first has a style's API; styles not named here run on every supported Spark
SINCE = {"apply_in_arrow": (4, 0), "arrow_array_udf": (4, 1), "arrow_array_udf_iter": (4, 1),
         "arrow_array_agg": (4, 1)}

# Relative to sum(|output * weight|): float sums in another order (shuffles, batches) differ by ~N*eps.
REL_TOL = 1e-8
# One generated JPEG per row: past this the tree would be gigabytes; --data folders are not limited.
MAX_IMAGE_ROWS = 20_000
IMAGE_KB = 25  # the ingestion experiment's default file size
PY_ARROW_KEY = "spark.sql.execution.pythonUDF.arrow.enabled"
BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"
INV_SQRT2 = 1.0 / math.sqrt(2.0)

AXES = {
    "workload": Axis("workload", ("plus_one", "cdf", "subtract_mean"), str, choices=WORKLOADS,
                     help="transformation; image_size/grayscale read generated JPEGs (one per row)"),
    "rows": Axis("rows", (1_000_000,), int,
                 help=f"input rows; for image workloads the number of JPEG files (at most {MAX_IMAGE_ROWS})"),
    "groups": Axis("groups", (100,), int, help="distinct keys of the group column (image workloads: classes)"),
}
BATCH_AXIS = {"max_records_per_batch": Axis("max_records_per_batch", (10_000,), int,
                                            help=f"{BATCH_KEY}: rows per Arrow batch sent to Python")}


# ---- kernels: the per-value logic every Python style shares (module-level, so workers import them) ----

def plus_one(v: float) -> float:
    return v + 1.0


def cdf(v: float) -> float:
    """Standard normal CDF in closed form; exact to double precision, no per-call library overhead."""
    return 0.5 * math.erfc(-v * INV_SQRT2)


def image_pixels(content: bytes) -> float:
    """Width x height from the JPEG header (PIL reads the size without decoding the pixels)."""
    from PIL import Image

    with Image.open(io.BytesIO(content)) as im:
        w, h = im.size
    return float(w * h)


def grayscale_png(content: bytes) -> bytes:
    """Decodes the JPEG, converts it to 8-bit grey and re-encodes it as PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(content)) as im:
        grey = im.convert("L")
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    return buf.getvalue()


def centre(values) -> list:
    """One group's values minus their mean (row-at-a-time styles get a group as one array)."""
    values = list(values)
    mean = sum(values) / len(values)
    return [float(v - mean) for v in values]


ROW_KERNELS: dict[str, Callable] = {
    "plus_one": plus_one, "cdf": cdf, "image_size": image_pixels, "grayscale": grayscale_png,
    "subtract_mean": centre,
}


def vec_plus_one(s):
    return s + 1.0


def vec_cdf(s):
    from scipy.special import erfc  # the same closed form as `cdf`, vectorised

    return 0.5 * erfc(-s * INV_SQRT2)


def vec_image_pixels(s):
    return s.map(image_pixels).astype("float64")


def vec_grayscale(s):
    return s.map(grayscale_png)


def vec_subtract_mean(s):
    return s - s.mean()


VEC_KERNELS: dict[str, Callable] = {
    "plus_one": vec_plus_one, "cdf": vec_cdf, "image_size": vec_image_pixels, "grayscale": vec_grayscale,
    "subtract_mean": vec_subtract_mean,
}


def arrow_plus_one(a):
    import pyarrow.compute as pc

    return pc.add(a, 1.0)


def arrow_cdf(a):
    import pyarrow as pa

    return pa.array(vec_cdf(a.to_numpy(zero_copy_only=False)))  # pyarrow.compute has no erf


def arrow_image_pixels(a):
    import pyarrow as pa

    return pa.array([image_pixels(b) for b in a.to_pylist()], pa.float64())


def arrow_grayscale(a):
    import pyarrow as pa

    return pa.array([grayscale_png(b) for b in a.to_pylist()], pa.binary())


def arrow_subtract_mean(a):
    import pyarrow.compute as pc

    return pc.subtract(a, pc.mean(a))


# pyarrow Array (or ChunkedArray) -> pyarrow Array: the Arrow-native styles' kernels
ARROW_KERNELS: dict[str, Callable] = {
    "plus_one": arrow_plus_one, "cdf": arrow_cdf, "image_size": arrow_image_pixels, "grayscale": arrow_grayscale,
    "subtract_mean": arrow_subtract_mean,
}


def iter_setup(workload: str) -> Callable:
    """The one-off per-partition setup of `pandas_udf_iter`: load the libraries and bind the kernel.

    These workloads need little setup (imports are cached in a reused Python worker); a model load or a
    connection would be paid here once per partition instead of once per batch.
    """
    if workload == "cdf":
        import scipy.special  # noqa: F401 - loaded once, before the first batch
    elif workload in IMAGE:
        from PIL import Image

        Image.init()  # registers every codec plugin up front
    return VEC_KERNELS[workload]


def out_type(workload: str) -> str:
    return "binary" if workload == "grayscale" else "double"


# ---- the Python side of a native cdf: Spark SQL has no erf, so the rational approximation of Hart (1968),
# as given by West (2005), in Column arithmetic; its error against math.erfc is ~1e-16 ----

_HART_NUM = (3.52624965998911e-02, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
             221.213596169931, 220.206867912376)
_HART_DEN = (8.83883476483184e-02, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
             637.333633378831, 793.826512519948, 440.413735824752)


def _horner(coefficients, x):
    acc = None
    for c in coefficients:
        acc = c if acc is None else acc * x + c
    return acc


def native_cdf(col):
    """Standard normal CDF of a Column as a Spark SQL expression (no Python involved)."""
    from pyspark.sql import functions as F

    a = F.abs(col)
    e = F.exp(-a * a / 2.0)
    near = e * _horner(_HART_NUM, a) / _horner(_HART_DEN, a)
    far = e / (a + 1.0 / (a + 2.0 / (a + 3.0 / (a + 4.0 / (a + 0.65))))) / 2.506628274631
    tail = F.when(a > 37.0, F.lit(0.0)).when(a < 7.07106781186547, near).otherwise(far)
    return F.when(col > 0, 1.0 - tail).otherwise(tail)


# ---- input data: one cached DataFrame per data shape, shared by every style ----

def _cached(ctx, kind: str, key: Any, make: Callable):
    """The run's cached input DataFrame of this kind and shape; one per kind stays cached (a new shape releases
    the old one), made and counted here, untimed."""
    memo_key = ("udf.input", kind, key)
    ctx.forget(lambda k: k[:2] == ("udf.input", kind) and k != memo_key)
    return ctx.memo(memo_key, lambda: _materialised(make), release=lambda df: df.unpersist())


def _materialised(make: Callable):
    df = make().cache()
    df.count()
    return df


def numeric_frame(ctx, rows: int, groups: int):
    """Columns w (checksum weight), group, x ~ N(0, 1); cached, 2 partitions per core."""
    from pyspark.sql import functions as F

    spark = ctx.spark
    parts = max(2, 2 * ctx.cores)
    key = (app_id(spark), rows, groups, ctx.seed, parts)

    def make():
        ids = spark.range(0, rows, 1, parts)
        return ids.select(((F.col("id") % 13) + 1).cast("double").alias("w"),
                          (F.col("id") % groups).alias("group"),
                          F.randn(ctx.seed).alias("x"))

    return _cached(ctx, "numeric", key, make), key


def image_frame(ctx, rows: int, groups: int):
    """Columns w, group (class folder), x (the JPEG bytes), path; cached. Returns (df, key, files)."""
    from pyspark.sql import functions as F

    from ..data.images import image_tree, scan_tree

    if ctx.data is None and rows > MAX_IMAGE_ROWS:
        raise ValueError(f"image workloads read one generated JPEG (~{IMAGE_KB} KB) per row: rows={rows} exceeds "
                         f"{MAX_IMAGE_ROWS}; run them with --set rows=N (N <= {MAX_IMAGE_ROWS}), separately from "
                         "the numeric workloads, or pass a real image folder with --data")
    root = Path(image_tree(ctx, rows, IMAGE_KB, n_classes=groups)).absolute()
    info = scan_tree(root)  # corrupt or unlabelled JPEGs in a --data folder are left out, as ingestion does
    if not info.files:
        raise ValueError(f"{root}: no readable JPEG inside a class folder; pass a folder of class folders")
    spark = ctx.spark
    key = (app_id(spark), str(root), len(info.files), info.total_bytes)
    depth = len(root.parts) + 1  # "file:/a/b/root/label/f.jpg".split("/")[depth - 1] is the label

    def make():
        raw = spark.read.format("binaryFile").load([str(p) for p in info.files])
        label = F.element_at(F.split(F.col("path"), "/"), depth)
        return raw.select(((F.crc32(F.col("path")) % 13) + 1).cast("double").alias("w"),
                          F.crc32(label).alias("group"), F.col("content").alias("x"), "path")

    return _cached(ctx, "image", key, make), key, len(info.files)


# ---- styles: each returns a DataFrame (w, out) computing the workload over df (w, group, x) ----

def _build_native(df, workload: str):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    x = F.col("x")
    if workload == "plus_one":
        out = x + 1.0
    elif workload == "cdf":
        out = native_cdf(x)
    else:
        out = x - F.avg(x).over(Window.partitionBy("group"))
    return df.select("w", out.alias("out"))


def _build_row(df, workload: str, use_arrow: bool):
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, BinaryType, DoubleType

    kernel = ROW_KERNELS[workload]
    if workload == "subtract_mean":
        centred = F.udf(kernel, ArrayType(DoubleType()), useArrow=use_arrow)
        per_group = df.groupBy("group").agg(F.collect_list(F.struct("w", "x")).alias("rows"))
        exploded = per_group.select("rows", F.posexplode(centred(F.col("rows.x"))).alias("pos", "out"))
        return exploded.select(F.col("rows")[F.col("pos")]["w"].alias("w"), "out")
    rtype = BinaryType() if workload == "grayscale" else DoubleType()
    fn = F.udf(kernel, rtype, useArrow=use_arrow)
    return df.select("w", fn("x").alias("out"))


def _build_pandas(df, workload: str):
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    kernel = VEC_KERNELS[workload]

    def series(s: pd.Series) -> pd.Series:
        return kernel(s)

    return df.select("w", pandas_udf(series, out_type(workload))("x").alias("out"))


def _build_pandas_iter(df, workload: str):
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def batches(it: Iterator[pd.Series]) -> Iterator[pd.Series]:
        kernel = iter_setup(workload)  # once per partition, not per batch
        for s in it:
            yield kernel(s)

    return df.select("w", pandas_udf(batches, out_type(workload))("x").alias("out"))


def _build_pandas_agg(df, workload: str):
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    def mean(s: pd.Series) -> float:
        return float(s.mean())

    means = df.groupBy("group").agg(pandas_udf(mean, "double")("x").alias("mean"))
    # group means are small: broadcast them rather than shuffle the rows a second time
    joined = df.join(F.broadcast(means), "group")
    return joined.select("w", (F.col("x") - F.col("mean")).alias("out"))


def _build_apply(df, workload: str):
    import pandas as pd

    kernel = VEC_KERNELS[workload]

    def per_group(pdf: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"w": pdf["w"], "out": kernel(pdf["x"])})

    return df.groupBy("group").applyInPandas(per_group, f"w double, out {out_type(workload)}")


def _build_map(df, workload: str):
    import pandas as pd

    kernel = VEC_KERNELS[workload]

    def per_batch(it):
        for pdf in it:
            yield pd.DataFrame({"w": pdf["w"], "out": kernel(pdf["x"])})

    return df.select("w", "x").mapInPandas(per_batch, f"w double, out {out_type(workload)}")


def _build_map_arrow(df, workload: str):
    import pyarrow as pa

    kernel = ARROW_KERNELS[workload]

    def per_batch(it):
        for rb in it:
            yield pa.RecordBatch.from_arrays([rb.column("w"), kernel(rb.column("x"))], names=["w", "out"])

    return df.select("w", "x").mapInArrow(per_batch, f"w double, out {out_type(workload)}")


def _build_apply_arrow(df, workload: str):
    import pyarrow as pa

    kernel = ARROW_KERNELS[workload]

    def per_group(table: pa.Table) -> pa.Table:
        return pa.table({"w": table.column("w"), "out": kernel(table.column("x"))})

    return df.groupBy("group").applyInArrow(per_group, f"w double, out {out_type(workload)}")


def _build_arrow_array(df, workload: str):
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    kernel = ARROW_KERNELS[workload]

    def arrays(x: pa.Array) -> pa.Array:  # the type hints pick arrow_udf's Arrays -> Arrays form
        return kernel(x)

    return df.select("w", arrow_udf(arrays, out_type(workload))("x").alias("out"))


def _build_arrow_array_iter(df, workload: str):
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    def batches(it: Iterator[pa.Array]) -> Iterator[pa.Array]:
        iter_setup(workload)  # the same once-per-partition setup as pandas_udf_iter
        kernel = ARROW_KERNELS[workload]
        for x in it:
            yield kernel(x)

    return df.select("w", arrow_udf(batches, out_type(workload))("x").alias("out"))


def _build_arrow_agg(df, workload: str):
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F
    from pyspark.sql.functions import arrow_udf

    def mean(x: pa.Array) -> float:  # Arrays -> scalar: a grouped aggregate
        return pc.mean(x).as_py()

    means = df.groupBy("group").agg(arrow_udf(mean, "double")("x").alias("mean"))
    joined = df.join(F.broadcast(means), "group")
    return joined.select("w", (F.col("x") - F.col("mean")).alias("out"))


BUILDERS: dict[str, Callable] = {
    "native": _build_native,
    "row_udf": lambda df, w: _build_row(df, w, use_arrow=False),
    "arrow_udf": lambda df, w: _build_row(df, w, use_arrow=True),
    "pandas_udf": _build_pandas,
    "pandas_udf_iter": _build_pandas_iter,
    "pandas_agg": _build_pandas_agg,
    "apply_in_pandas": _build_apply,
    "map_in_pandas": _build_map,
    "map_in_arrow": _build_map_arrow,
    "apply_in_arrow": _build_apply_arrow,
    "arrow_array_udf": _build_arrow_array,
    "arrow_array_udf_iter": _build_arrow_array_iter,
    "arrow_array_agg": _build_arrow_agg,
}


# ---- forcing, checksums, reference ----

def fold(out_df, workload: str):
    """The one aggregate every style ends in: rows, sum(value * w), sum(|value * w|) (the scale).

    The value is the output itself, or the CRC-32 of the PNG bytes for `grayscale`.
    """
    from pyspark.sql import functions as F

    value = F.crc32(F.col("out")).cast("double") if workload == "grayscale" else F.col("out")
    weighted = out_df.select((value * F.col("w")).alias("p"))
    return weighted.agg(F.count(F.lit(1)).alias("rows"), F.sum("p").alias("checksum"),
                        F.sum(F.abs("p")).alias("scale"))


def force(agg_df) -> dict:
    row = agg_df.collect()[0]  # a single aggregate row: nothing big leaves the executors
    return {"rows": int(row["rows"]), "checksum": float(row["checksum"] or 0.0), "scale": float(row["scale"] or 0.0)}


def check(got: dict, ref: dict, rows: int, what: str) -> float:
    """Raises CheckFailed unless row count and checksum match the reference; returns the relative difference."""
    if got["rows"] != rows:
        raise CheckFailed(f"{what}: {got['rows']} output rows, expected {rows}")
    scale = max(ref["scale"], got["scale"], 1e-300)
    rel = abs(got["checksum"] - ref["checksum"]) / scale
    if rel > REL_TOL:
        raise CheckFailed(f"{what}: checksum {got['checksum']!r} differs from the reference {ref['checksum']!r} "
                          f"({ref['source']}) by {rel:.3g} of the output's magnitude (tolerance {REL_TOL:g})")
    return rel


def image_reference(df, workload: str) -> dict:
    """Checksum of the workload computed in the driver with PIL, straight from the files (untimed)."""
    kernel = ROW_KERNELS[workload]
    checksum = scale = 0.0
    rows = 0
    for r in df.select("path", "w").toLocalIterator():
        with open(unquote(urlparse(r["path"]).path), "rb") as f:
            value = kernel(f.read())
        if workload == "grayscale":
            value = float(zlib.crc32(value))
        checksum += value * r["w"]
        scale += abs(value * r["w"])
        rows += 1
    return {"rows": rows, "checksum": checksum, "scale": scale, "source": "driver, PIL over the files"}


def reference(ctx, df, key, workload: str, params: dict) -> dict:
    """The checksum every style must match: `native`'s (its record in this run, else computed here); once per
    input and workload in the run."""

    def compute() -> dict:
        if workload in IMAGE:
            return image_reference(df, workload)
        native = ctx.find("udf", "native", _base(params))
        if native is not None and native.status == "ok" and "checksum" in native.extra:
            return {"checksum": native.extra["checksum"], "scale": native.extra["checksum_scale"],
                    "source": "native case of this run"}
        return {**force(fold(_build_native(df, workload), workload)), "source": "native expression"}

    return ctx.memo(("udf.reference", key, workload), compute)


def _base(params: dict) -> dict:
    """The params of the reference cases (`native`, `row_udf`), which have no Arrow batch axis."""
    return {k: v for k, v in params.items() if k in AXES}


def relative(ctx, style: str, params: dict, samples: list[float] | None, rows: int) -> dict:
    """rows_per_s, and speed against the style's reference (row_udf) and limit (native), when they ran earlier
    in this run (both registered with the case)."""
    if not samples:
        return {}
    import statistics

    median = statistics.median(samples)
    out: dict[str, Any] = {"rows_per_s": rows / median if median > 0 else None}
    roles = EXP.cases[style].roles
    for ref_style, key, invert in ((roles.get("reference"), "speedup_vs_", False),
                                   (roles.get("limit"), "slowdown_vs_", True)):
        if not ref_style:
            continue
        key += ref_style
        if ref_style == style:
            out[key] = 1.0
            continue
        ref = ctx.find("udf", ref_style, _base(params))
        if ref is not None and ref.status == "ok" and ref.stats.get("median"):
            out[key] = median / ref.stats["median"] if invert else ref.stats["median"] / median
    return out


def build_case(ctx, style: str, params: dict) -> Workload:
    """The Workload of one style and workload over the shared cached input, with its reference checksum."""
    workload, rows, groups = params["workload"], params["rows"], params["groups"]
    if rows < 1 or groups < 1:
        raise ValueError(f"rows and groups must be >= 1, got rows={rows}, groups={groups}")
    if workload in IMAGE:
        df, key, rows = image_frame(ctx, rows, groups)
    else:
        df, key = numeric_frame(ctx, rows, groups)
    ref = reference(ctx, df, key, workload, params)
    settings = {}
    if style == "row_udf":
        settings[PY_ARROW_KEY] = "false"  # plain @udf must stay pickled row-at-a-time, whatever the defaults
    if style in ARROW_STYLES:
        settings[BATCH_KEY] = str(params["max_records_per_batch"])
    restore = session_conf(ctx.spark, settings)

    def job():
        # a fresh DataFrame per run: running one DataFrame again reuses its shuffle files, which skips the
        # stage with the UDF in it (repeats of 1M row-at-a-time rows in 0.2 s)
        return fold(BUILDERS[style](df, workload), workload)

    try:
        job()  # a style that cannot build its query fails here, in setup
    except Exception:
        restore()
        raise
    conf = ctx.spark.conf
    extra = {
        "rows": rows, "partitions": partition_count(df), "output": out_type(workload),
        "arrow": "off" if style in ("native", "row_udf") else "on",
        "python_udf_arrow_enabled": conf.get(PY_ARROW_KEY, "false") if style == "row_udf" else
        ("true (useArrow=True)" if style == "arrow_udf" else "n/a"),
        "arrow_max_records_per_batch": int(conf.get(BATCH_KEY)) if style in ARROW_STYLES else None,
        "input": "images" if workload in IMAGE else "generated N(0,1)",
    }
    if workload in IMAGE and ctx.data is None:
        extra["image_kb"] = IMAGE_KB
    extra = {k: v for k, v in extra.items() if v is not None}

    def after(out: dict, samples: list[float] | None = None, warmup: list[float] | None = None) -> dict:
        # rows_per_s and the speed ratios need this case's own samples (without them, only the check and the
        # checksum are recorded)
        rel = check(out, ref, rows, f"udf.{style} {workload}")
        return {"checksum": out["checksum"], "checksum_scale": out["scale"], "checksum_reference": ref["checksum"],
                "checksum_rel_diff": rel, "reference": ref["source"],
                **relative(ctx, style, params, samples, rows)}

    return Workload(run=lambda: force(job()), after=after, teardown=restore, extra=extra)


def _register(style: str, doc: str) -> None:
    axes = dict(AXES)
    if style in ARROW_STYLES:
        axes.update(BATCH_AXIS)
    supported = STYLES[style]

    def build(ctx, **params) -> Workload:
        return build_case(ctx, style, params)

    build.__doc__ = doc
    EXP.case(style, axes, valid=lambda p: p["workload"] in supported, spark=True, reference="row_udf",
             limit="native")(build)


def _register_newer(style: str, doc: str) -> None:
    """A style whose API a newer pyspark added: `unavailable` with the version it needs on an older one (checked
    before any data is made)."""
    axes = {**AXES, **BATCH_AXIS}
    supported, since = STYLES[style], SINCE.get(style)

    def build(ctx, **params) -> Workload:
        if since:
            need_spark(since, f"udf.{style}")
        return build_case(ctx, style, params)

    build.__doc__ = doc
    EXP.case(style, axes, valid=lambda p: p["workload"] in supported, spark=True, reference="row_udf",
             limit="native")(build)


# registration order is run order: the references (native, row_udf) run before the styles compared to them
for _style, _doc in (
    ("native", "the workload as a Spark SQL expression: the no-Python limit"),
    ("row_udf", "@udf, pickled row at a time (Arrow explicitly off)"),
    ("arrow_udf", "@udf(useArrow=True): row-at-a-time Python over Arrow batches"),
    ("pandas_udf", "pandas_udf Series -> Series"),
    ("pandas_udf_iter", "pandas_udf Iterator[Series] -> Iterator[Series], setup once per partition"),
    ("pandas_agg", "pandas_udf Series -> scalar in groupBy().agg(), joined back"),
    ("apply_in_pandas", "groupBy().applyInPandas(): one pandas DataFrame per group"),
    ("map_in_pandas", "mapInPandas(): an iterator of pandas DataFrames per partition"),
):
    _register(_style, _doc)
for _style, _doc in (
    ("map_in_arrow", "mapInArrow(): an iterator of pyarrow RecordBatches per partition"),
    ("apply_in_arrow", "groupBy().applyInArrow(): one pyarrow Table per group (Spark >= 4.0)"),
    ("arrow_array_udf", "@arrow_udf pyarrow Array -> Array (Spark >= 4.1)"),
    ("arrow_array_udf_iter", "@arrow_udf Iterator[Array] -> Iterator[Array], setup once per partition (Spark >= 4.1)"),
    ("arrow_array_agg", "@arrow_udf Array -> scalar in groupBy().agg(), joined back (Spark >= 4.1)"),
):
    _register_newer(_style, _doc)
