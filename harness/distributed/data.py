"""`data=parquet` / `data=ipc` for the scaling ranks: random image tensors written once by Spark (cached by their
parameters), read back on every rank through a feeder, sharded by rank: Parquet through the Arrow feeder
(harness.feeders.arrow, decoded every epoch) or Arrow IPC files through the IPC feeder (harness.feeders.ipc,
memory-mapped once per rank).

Writing happens in the case builder (untimed); reading happens inside the ranks' timed steps, which is the point
of the axis: the input pipeline's cost shows up in throughput.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

COLUMNS = ["features", "label"]
FORMATS = ("parquet", "ipc")


def prepare(spark, cache_dir: Path, input_shape: tuple, classes: int, rows: int, seed: int,
            fmt: str = "parquet") -> Path:
    """A folder of `rows` (features: prod(input_shape) floats, label bigint) as Parquet or IPC; made once."""
    from ..feeders import ipc

    shape = "x".join(str(s) for s in input_shape)
    folder = Path(cache_dir) / "scaling" / f"tensors-{shape}-k{classes}-n{rows}-s{seed}{'-ipc' if fmt == 'ipc' else ''}"
    if (folder / ("_SUCCESS" if fmt == "parquet" else ipc.MANIFEST)).exists():
        return folder
    flat = 1
    for s in input_shape:
        flat *= int(s)

    def generate(batches):
        import numpy as np
        import pyarrow as pa

        for b in batches:
            ids = b.column("id").to_numpy()
            if not len(ids):
                continue
            # seeded by the first row id: the same rows whatever the partitioning or the run
            rng = np.random.default_rng(seed * 1_000_003 + int(ids[0]))
            values = pa.array(rng.standard_normal(len(ids) * flat, dtype=np.float32))
            offsets = pa.array(np.arange(0, (len(ids) + 1) * flat, flat, dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [pa.ListArray.from_arrays(offsets, values), pa.array(rng.integers(0, classes, len(ids)))],
                names=COLUMNS)

    df = spark.range(0, rows, numPartitions=max(1, min(8, rows // 256))).mapInArrow(
        generate, "features array<float>, label bigint")
    if fmt == "ipc":
        ipc.write(df, folder, flat, expected_rows=rows)  # checked, and swapped into place whole
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    df.write.mode("overwrite").parquet(str(tmp))
    try:
        os.replace(tmp, folder)  # atomic: a concurrent run sees the whole folder or none
    except OSError:
        if not (folder / "_SUCCESS").exists():
            raise
    return folder


def feeder(cfg: dict, rank: int, world: int):
    """This rank's feeder over the prepared folder (equal shards, whole batches only)."""
    import numpy as np

    if cfg["data"] == "ipc":
        from ..feeders.ipc import IpcFeeder

        f = IpcFeeder(cfg["data_path"], cfg["batch"], rank=rank, world_size=world, drop_last=True,
                      shape=tuple(cfg["input_shape"]))
    else:
        from ..feeders.arrow import ArrowFeeder

        f = ArrowFeeder(cfg["data_path"], COLUMNS, cfg["batch"], rank=rank, world_size=world,
                        shapes={"features": tuple(cfg["input_shape"])},
                        dtypes={"features": np.float32, "label": np.int64}, drop_last=True)
    if len(f) == 0:
        raise ValueError(f"rank {rank} of {world} gets {f.rows} rows of {cfg['data_path']}, fewer than one "
                         f"batch of {cfg['batch']}: use a smaller batch_size or fewer workers")
    return f


def batches(cfg: dict, rank: int, world: int):
    """Endless (features, label) NumPy batches for this rank, epoch after epoch (IPC: read-only views)."""
    import warnings

    f = feeder(cfg, rank, world)
    # the ranks wrap batches with torch.from_numpy and never write them in place (see harness.feeders.ipc)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    while True:
        if cfg["data"] == "ipc":
            yield from f.epoch()
        else:
            for batch in f.epoch():
                yield batch["features"], batch["label"]


def tf_dataset(cfg: dict, rank: int, world: int):
    """The feeder's tf.data adapter for this rank, repeated."""
    if cfg["data"] == "ipc":
        from ..feeders.ipc import to_tf_dataset
    else:
        from ..feeders.arrow import to_tf_dataset

    return to_tf_dataset(feeder(cfg, rank, world)).repeat()
