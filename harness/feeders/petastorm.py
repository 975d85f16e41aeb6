"""The `petastorm` feeder: `make_spark_converter(df)` once, then `make_torch_dataloader` / `make_tf_dataset`.

The converter materialises the DataFrame as Parquet under a cache folder (Petastorm's own layout). It is a
plain object of (cache URL, file URLs, row count), so `spec()` / `from_spec()` carry it to the framework's
own process, where the loaders are opened, one reader per epoch (`num_epochs=1`).

Petastorm 0.13.1's thread pool can end an epoch early, usually with zero rows: `ThreadPool.get_results` asks
"are all workers done?" and only then "has the ventilator queued everything?". The ventilator thread starts last
and can queue every item between those two reads, so the pool sees nothing in flight and everything ventilated at
once and reports the end of the epoch. `_fix_end_of_epoch_race` makes the first question include the second, read
first, so "done" can only be answered after ventilation has finished. The feed cases check row counts regardless.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..workload import Unavailable


def _import():
    from importlib import util

    if util.find_spec("petastorm") is None:
        import pyarrow

        raise Unavailable(f"petastorm is not installed in this stack (it needs pyarrow < 15, this stack has "
                          f"{pyarrow.__version__}); the Spark 3.5 stack (.venv, `make setup`) has it")
    try:
        from petastorm.spark import SparkDatasetConverter, make_spark_converter
    except Exception as e:  # noqa: BLE001 - any import failure means the feeder cannot run here
        raise Unavailable(f"petastorm cannot be imported ({type(e).__name__}: {e}); it needs pyarrow < 15 "
                          "(pyarrow.filesystem) - see docs/DESIGN.md's dependency table") from None
    _fix_end_of_epoch_race()
    return SparkDatasetConverter, make_spark_converter


def _fix_end_of_epoch_race() -> None:
    """Orders ThreadPool's end-of-epoch check: ventilation complete first, then every worker idle (idempotent)."""
    from petastorm.workers_pool.thread_pool import ThreadPool

    original = ThreadPool.all_workers_done
    if getattr(original, "harness_fixed", False):
        return

    def all_workers_done(self) -> bool:
        # read "everything ventilated" BEFORE the per-worker counters: once it is true no item can be added,
        # so counters that then show every item processed really mean the epoch is over
        if self._ventilator is not None and not self._ventilator.completed():
            return False
        return original(self)

    all_workers_done.harness_fixed = True
    ThreadPool.all_workers_done = all_workers_done


def converter(spark, df, cache_dir: Path):
    """Materialises `df` for Petastorm under `cache_dir` (floats as float32); returns the converter."""
    SparkDatasetConverter, make_spark_converter = _import()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, Path(cache_dir).resolve().as_uri())
    return make_spark_converter(df, dtype="float32")


def spec(conv) -> dict[str, Any]:
    """JSON-able description of a converter, to rebuild it in another process."""
    return {"cache_dir_url": conv.cache_dir_url, "file_urls": list(conv.file_urls), "dataset_size": len(conv)}


def from_spec(d: dict[str, Any]):
    """The converter described by `spec()` (no Spark needed)."""
    SparkDatasetConverter, _ = _import()
    return SparkDatasetConverter(d["cache_dir_url"], d["file_urls"], d["dataset_size"])


def torch_loader(conv, batch_size: int, workers_count: int):
    """Context manager yielding a loader of dict batches {column: tensor}, one epoch."""
    return conv.make_torch_dataloader(batch_size=batch_size, num_epochs=1, workers_count=workers_count)


def tf_dataset(conv, batch_size: int, workers_count: int):
    """Context manager yielding a tf.data.Dataset of namedtuple batches, one epoch."""
    return conv.make_tf_dataset(batch_size=batch_size, num_epochs=1, workers_count=workers_count)
