"""The `toarrow` feeder (Spark >= 4.0): `DataFrame.toArrow()` once into the driver, then batches as Arrow views.

`collect` is the feeder's one-time cost (`materialize_s`): Spark sends the DataFrame to the driver as Arrow
record batches and pyarrow assembles one Table, with no pandas step (Spark 3.5 has only `toPandas()`, the
`pandas` feeder). The Table then reaches the framework's process the way the `pandas` feeder's arrays do, through
a file that is not the feeder's cost: one uncompressed Arrow IPC file in the `ipc` feeder's layout
(`ipc.write_table`), which `ipc.IpcFeeder` maps once and serves as zero-copy batches, with the same checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

NEEDS = (4, 0)  # DataFrame.toArrow() first shipped in pyspark 4.0


def collect(df, features: str = "features", label: str = "label"):
    """`df`'s features (as array<float>) and label as one driver-side pyarrow Table, via `toArrow()`."""
    from pyspark.sql import functions as F

    return df.select(F.col(features).cast("array<float>").alias(features), F.col(label)).toArrow()


def write(table, folder: str | Path, width: int, **expected) -> dict[str, Any]:
    """The Table in the ipc feeder's layout under `folder` (see `harness.feeders.ipc.write_table`)."""
    from . import ipc

    return ipc.write_table(table, folder, width, **expected)
