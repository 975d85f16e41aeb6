"""What a case builder gets: the run's settings, folders and the lazily started SparkSession."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """Generated data sets are reused across cases and runs, keyed by their parameters."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "spark-ml-harness"))


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    master: str | None = None
    conf: dict[str, str] = field(default_factory=dict)
    data: Path | None = None  # --data: a real image folder or CSV file replacing generated data
    cache_dir: Path = field(default_factory=default_cache_dir)
    seed: int = 42
    timeout_s: float = 900.0
    _spark: Any = None
    spark_info: dict[str, Any] | None = None
    results: dict[str, Any] = field(default_factory=dict)  # identity -> Result, filled by the runner

    def find(self, experiment: str, case: str, params: dict[str, Any]):
        """The Result already recorded in this run for that identity (e.g. a reference case), or None."""
        from .record import identity

        return self.results.get(identity(experiment, case, params))

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
            self.spark_info = describe(self._spark, startup_s)
        return self._spark

    @property
    def spark_started(self) -> bool:
        return self._spark is not None

    @property
    def cores(self) -> int:
        """Cores Spark runs tasks on (local[N] or the cluster's default parallelism)."""
        if self._spark is not None:
            return self._spark.sparkContext.defaultParallelism
        return os.cpu_count() or 1

    def stop(self) -> None:
        if self._spark is not None:
            self._spark.stop()
            self._spark = None
