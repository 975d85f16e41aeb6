"""Feeders: a prepared Spark DataFrame -> batches for PyTorch and TensorFlow.

- `arrow`: Spark writes Parquet once; each epoch reads it with `pyarrow.dataset` into NumPy, prefetched in a
  background thread, sharded by (rank, world_size) for data-parallel training.
- `petastorm`: `make_spark_converter` once; each epoch `make_torch_dataloader` / `make_tf_dataset`.
- `ipc`: Spark writes one uncompressed Arrow IPC file per partition once (`mapInArrow`); readers memory-map them
  for the feeder's lifetime and hand out views (torch) or one copy per batch (TensorFlow), sharded by rank.
- `pandas`: `toPandas()` (Arrow) once; each epoch slices in-memory tensors.
- `toarrow` (Spark >= 4.0): `DataFrame.toArrow()` once into the driver; each epoch serves zero-copy views of
  that Table through the `ipc` readers (`unavailable` on an older pyspark).

Each module imports its heavy dependencies inside its functions, so importing the package is cheap.
"""

FEEDERS = ("petastorm", "arrow", "ipc", "pandas", "toarrow")
