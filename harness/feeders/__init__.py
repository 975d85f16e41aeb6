"""Feeders: a prepared Spark DataFrame -> batches for PyTorch and TensorFlow.

- `arrow`: Spark writes Parquet once; each epoch reads it with `pyarrow.dataset` into NumPy, prefetched in a
  background thread, sharded by (rank, world_size) for data-parallel training.
- `petastorm`: `make_spark_converter` once; each epoch `make_torch_dataloader` / `make_tf_dataset`.
- `pandas`: `toPandas()` (Arrow) once; each epoch slices in-memory tensors.

Each module imports its heavy dependencies inside its functions, so importing the package is cheap.
"""

FEEDERS = ("petastorm", "arrow", "pandas")
