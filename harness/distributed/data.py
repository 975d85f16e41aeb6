"""`data=parquet` for the scaling ranks: random image tensors written once by Spark as Parquet (cached by their
parameters), read back on every rank through the Arrow feeder (harness.feeders.arrow), sharded by rank.

Writing happens in the case builder (untimed); reading happens inside the ranks' timed steps, which is the point
of the axis: the input pipeline's cost shows up in throughput.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

COLUMNS = ["features", "label"]


def prepare(spark, cache_dir: Path, input_shape: tuple, classes: int, rows: int, seed: int) -> Path:
    """A Parquet folder of `rows` (features array<float> of prod(input_shape), label bigint); made once."""
    shape = "x".join(str(s) for s in input_shape)
    folder = Path(cache_dir) / "scaling" / f"tensors-{shape}-k{classes}-n{rows}-s{seed}"
    if (folder / "_SUCCESS").exists():
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

    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    df = spark.range(0, rows, numPartitions=max(1, min(8, rows // 256))).mapInArrow(
        generate, "features array<float>, label bigint")
    df.write.mode("overwrite").parquet(str(tmp))
    try:
        os.replace(tmp, folder)  # atomic: a concurrent run sees the whole folder or none
    except OSError:
        if not (folder / "_SUCCESS").exists():
            raise
    return folder


def feeder(cfg: dict, rank: int, world: int):
    """This rank's ArrowFeeder over the prepared folder (equal shards, whole batches only)."""
    import numpy as np

    from ..feeders.arrow import ArrowFeeder

    f = ArrowFeeder(cfg["parquet"], COLUMNS, cfg["batch"], rank=rank, world_size=world,
                    shapes={"features": tuple(cfg["input_shape"])},
                    dtypes={"features": np.float32, "label": np.int64}, drop_last=True)
    if len(f) == 0:
        raise ValueError(f"rank {rank} of {world} gets {f.rows} rows of {cfg['parquet']}, fewer than one "
                         f"batch of {cfg['batch']}: use a smaller batch_size or fewer workers")
    return f


def parquet_batches(cfg: dict, rank: int, world: int):
    """Endless (features, label) NumPy batches for this rank, epoch after epoch."""
    f = feeder(cfg, rank, world)
    while True:
        for batch in f.epoch():
            yield batch["features"], batch["label"]


def tf_dataset(cfg: dict, rank: int, world: int):
    """The feeder's tf.data adapter for this rank, repeated."""
    from ..feeders.arrow import to_tf_dataset

    return to_tf_dataset(feeder(cfg, rank, world)).repeat()
