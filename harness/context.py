"""What a case builder gets: the run's settings, folders, the lazily started SparkSession and run-scoped memos.

In `harness run` the context lives in the worker process (harness.worker); everything it holds (the
SparkSession, cached DataFrames, scanned data sets) goes when the worker stops or is replaced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable


def default_cache_dir() -> Path:
    """Generated data sets are reused across cases and runs, keyed by their parameters."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "spark-ml-harness"))


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    master: str | None = None  # a master URL, or an sc:// URL: a Spark Connect server (--remote)
    conf: dict[str, str] = field(default_factory=dict)
    data: Path | None = None  # --data: a real image folder or CSV file replacing generated data
    cache_dir: Path = field(default_factory=default_cache_dir)
    seed: int = 42
    timeout_s: float = 900.0
    tracking_uri: str | None = None  # the run's MLflow store (None: --no-mlflow), where cases register models
    _spark: Any = None
    spark_info: dict[str, Any] | None = None
    results: dict[str, Any] = field(default_factory=dict)  # identity -> Result of this run, for ctx.find
    _memos: dict[Hashable, tuple[Any, Callable[[Any], None] | None]] = field(default_factory=dict, repr=False)

    def find(self, experiment: str, case: str, params: dict[str, Any]):
        """The Result already recorded in this run for that identity (e.g. a reference case), or None."""
        from .record import identity

        return self.results.get(identity(experiment, case, params))

    def memo(self, key: Hashable, factory: Callable[[], Any], release: Callable[[Any], None] | None = None) -> Any:
        """A value made once and shared by the run's cases (a cached DataFrame, a scanned tree, a reference).

        `release(value)` frees it when the context closes or `forget` drops it. Keys are tuples starting with
        the owner's name, e.g. ("udf.input", kind, shape).
        """
        if key not in self._memos:
            self._memos[key] = (factory(), release)
        return self._memos[key][0]

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Releases and drops every memo whose key matches (e.g. to keep one cached input per kind)."""
        for key in [k for k in self._memos if match(k)]:
            value, release = self._memos.pop(key)
            if release is not None:
                try:
                    release(value)
                except Exception:  # noqa: BLE001 - e.g. its SparkSession already stopped: nothing left to free
                    pass

    @property
    def work_dir(self) -> Path:
        """Scratch space for this run (compaction output, Parquet for feeders)."""
        d = self.run_dir / "work"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def spark(self):
        """The run's one SparkSession, started on first use (its start-up is recorded once)."""
        if self._spark is None:
            from .spark import create_session, describe

            self._spark, startup_s = create_session(self.master, self.conf, app_name=f"harness-{self.run_id}")
            self.spark_info = describe(self._spark, startup_s, remote=self.remote)
        return self._spark

    @property
    def remote(self) -> str | None:
        """The Spark Connect URL when Spark is reached through a Connect server, else None."""
        from .spark import is_remote

        return self.master if is_remote(self.master) else None

    @property
    def spark_started(self) -> bool:
        return self._spark is not None

    @property
    def cores(self) -> int:
        """Cores Spark runs tasks on (local[N] or the cluster's default parallelism)."""
        if self._spark is not None and self.remote:  # no SparkContext: what the server's master says
            return (self.spark_info or {}).get("default_parallelism") or os.cpu_count() or 1
        if self._spark is not None:
            return self._spark.sparkContext.defaultParallelism
        return os.cpu_count() or 1

    def close(self) -> None:
        """Releases every memo; the SparkSession stays (tests share one)."""
        self.forget(lambda key: True)

    def stop(self) -> None:
        self.close()
        if self._spark is not None:
            self._spark.stop()
            self._spark = None
