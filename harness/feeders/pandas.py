"""The `pandas` feeder: `toPandas()` (Arrow-enabled) once, then batches sliced from in-memory arrays.

The one-time `toPandas()` pulls the whole DataFrame into the driver's memory (its cost and footprint are the
price); after that an epoch costs what slicing in-memory tensors costs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def to_numpy(df, columns: Sequence[str] = ("features", "label"), shapes: dict | None = None) -> dict[str, np.ndarray]:
    """Collects `df` with `toPandas()`; array columns are stacked into 2-D (or `shapes[col]`) float arrays."""
    pdf = df.select(*columns).toPandas()
    out = {}
    for c in columns:
        values = pdf[c].to_numpy()
        if values.dtype == object:  # array<float> arrives as one ndarray per row
            if len(values) == 0:
                raise ValueError(f"column {c!r} is empty: nothing to feed")
            values = np.stack(values)
            if shapes and c in shapes:
                values = values.reshape((len(values), *shapes[c]))
        out[c] = np.ascontiguousarray(values)
    return out


class TorchBatches:
    """Iterable of tuples of torch tensors sliced from in-memory arrays; one epoch per iteration."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, columns: Sequence[str] = ("features", "label")):
        import torch

        self.tensors = [torch.from_numpy(np.ascontiguousarray(arrays[c])) for c in columns]
        self.batch_size = batch_size
        self.rows = int(self.tensors[0].shape[0])

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self):
        bs = self.batch_size
        for i in range(0, self.rows, bs):
            yield tuple(t[i:i + bs] for t in self.tensors)


def tf_dataset(arrays: dict[str, np.ndarray], batch_size: int, columns: Sequence[str] = ("features", "label")):
    """`tf.data.Dataset.from_tensor_slices(...).batch(batch_size)`; iterate once per epoch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(tuple(arrays[c] for c in columns))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
