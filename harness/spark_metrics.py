"""Spark's own figures per case (tasks, executor and GC time, bytes read and shuffled, spill, skew), read from
Spark's event log, which the worker keeps in the run folder (`spark-events/`, see spark.event_log_conf).

The worker marks where the log ends when a case is built and tags every job it starts (local properties, which
the log keeps with each job) with the case (CASE_PROPERTY, a random hex id: Spark's redaction never hides it, as
it may hide a job group whose name holds a word like `token`) and the sample (SAMPLE_PROPERTY): `setup`,
`warmup:I`, `repeat:I` or `checks`. After the case, `CaseMetrics.collect` waits for Spark's listener bus to drain
(the log is flushed at every job's end), reads what the log gained, keeps the case's jobs (and untagged jobs
outside any job group: threads of the case's own, since one case runs at a time) and sums their tasks per
sample. The record's `extra.spark` then holds the median per timed sample (`scope`), each figure per
timed sample (`per_sample`), and totals for the warm-ups and for the untimed setup and checks. A case timed in
one call of its own (SelfTimed) cannot be split by sample: its figures are the whole case's.

Python worker time: Spark 3.5 reports no time spent in Python workers; its Python UDF operators report only the
bytes sent to and returned from them (`python_data_*_bytes`). Executor run time includes the wait for them, and
executor CPU time counts JVM threads only, so the gap between the two bounds the Python side from above.

Under Spark Connect (`--remote`) the jobs run in the server's JVM, whose event log this client neither configures
nor reads: the record says so (`ConnectMetrics`) instead of carrying figures.
"""
from __future__ import annotations

import json
import statistics
import uuid
from pathlib import Path
from typing import Any

CASE_PROPERTY = "harness.case"  # local properties, carried into each job's properties in the event log
SAMPLE_PROPERTY = "harness.sample"
BUS_WAIT_MS = 15_000  # how long to wait for Spark's listener bus (and so the event log) to catch up
PYTHON_TIME = ("not reported by Spark {version}: its Python UDF operators report bytes only (python_data_*_bytes); "
               "executor_run_time_s includes the wait for Python workers, executor_cpu_time_s counts JVM threads only")

# Task Metrics fields of a SparkListenerTaskEnd event -> (figure, scale to the figure's unit)
_TASK_FIGURES = {
    ("Executor Run Time",): ("executor_run_time_s", 1e-3),  # ms
    ("Executor CPU Time",): ("executor_cpu_time_s", 1e-9),  # ns
    ("JVM GC Time",): ("jvm_gc_time_s", 1e-3),
    ("Input Metrics", "Bytes Read"): ("input_bytes", 1),
    ("Input Metrics", "Records Read"): ("input_records", 1),
    ("Shuffle Read Metrics", "Remote Bytes Read"): ("shuffle_read_bytes", 1),
    ("Shuffle Read Metrics", "Local Bytes Read"): ("shuffle_read_bytes", 1),
    ("Shuffle Write Metrics", "Shuffle Bytes Written"): ("shuffle_write_bytes", 1),
    ("Memory Bytes Spilled",): ("memory_spill_bytes", 1),
    ("Disk Bytes Spilled",): ("disk_spill_bytes", 1),
}
# SQL metrics of Spark's Python UDF operators (task accumulables) -> figure
_PYTHON_FIGURES = {"data sent to Python workers": "python_data_sent_bytes",
                   "data returned from Python workers": "python_data_returned_bytes"}
FIGURES = ("jobs", "stages", "tasks", "executor_run_time_s", "executor_cpu_time_s", "jvm_gc_time_s", "input_bytes",
           "input_records", "shuffle_read_bytes", "shuffle_write_bytes", "memory_spill_bytes", "disk_spill_bytes",
           "task_max_s", "task_median_s", "task_skew", *_PYTHON_FIGURES.values())


class _Bucket:
    """Jobs and tasks of one sample (or phase)."""

    def __init__(self) -> None:
        self.jobs = 0
        self.stages: set[tuple[int, int]] = set()
        self.durations: list[float] = []
        self.sums: dict[str, float] = {}

    def add_task(self, event: dict[str, Any]) -> None:
        info, metrics = event.get("Task Info") or {}, event.get("Task Metrics") or {}
        self.stages.add((event.get("Stage ID"), event.get("Stage Attempt ID")))
        if info.get("Finish Time") and info.get("Launch Time"):
            self.durations.append((info["Finish Time"] - info["Launch Time"]) / 1000.0)
        for path, (name, scale) in _TASK_FIGURES.items():
            value: Any = metrics
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, (int, float)):
                self.sums[name] = self.sums.get(name, 0) + value * scale
        for acc in info.get("Accumulables") or ():
            name = _PYTHON_FIGURES.get(acc.get("Name"))
            if name and acc.get("Update") is not None:
                self.sums[name] = self.sums.get(name, 0) + float(acc["Update"])

    def merge(self, other: "_Bucket") -> None:
        self.jobs += other.jobs
        self.stages |= other.stages
        self.durations += other.durations
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0) + v

    def figures(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"jobs": self.jobs, "stages": len(self.stages), "tasks": len(self.durations)}
        for name, _ in _TASK_FIGURES.values():
            value = self.sums.get(name, 0)
            out[name] = round(value, 4) if name.endswith("_s") else int(value)
        if self.durations:  # skew: the longest task against the median one
            med = statistics.median(self.durations)
            out.update(task_max_s=round(max(self.durations), 4), task_median_s=round(med, 4),
                       task_skew=round(max(self.durations) / med, 2) if med > 0 else None)
        out.update({k: int(v) for k, v in self.sums.items() if k in _PYTHON_FIGURES.values()})
        return out


def event_log_path(spark) -> Path | None:
    """The running application's event log file, or None when Spark writes none (or not to a local file)."""
    conf = spark.sparkContext.getConf()
    if conf.get("spark.eventLog.enabled", "false").lower() != "true":
        return None
    folder = conf.get("spark.eventLog.dir", "/tmp/spark-events")
    if folder.startswith("file:"):
        folder = folder[len("file:"):]
        while folder.startswith("//"):
            folder = folder[1:]
    elif "://" in folder:
        return None  # HDFS, S3...: not read here
    app = spark.sparkContext.applicationId
    for name in (f"{app}.inprogress", app):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def wait_for_listeners(spark, timeout_ms: int = BUS_WAIT_MS) -> bool:
    """Waits until Spark's listeners (the event log among them) have seen every event posted so far."""
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)
        return True
    except Exception:  # noqa: BLE001 - a timeout (py4j wraps it) or another Spark: read what is there
        return False


CONNECT_REASON = ("not available through Spark Connect: the case's jobs run in the Connect server's JVM, whose "
                  "event log and job properties this client neither sets nor reads")


def for_session(spark, connect: bool = False):
    """The per-case figure collector for a session: CaseMetrics, or ConnectMetrics for a Connect client."""
    return ConnectMetrics(spark) if connect else CaseMetrics(spark)


class ConnectMetrics:
    """CaseMetrics' interface for a Spark Connect session: no figures, the reason instead."""

    def __init__(self, spark):
        self.spark = spark
        self.split = True

    def phase(self, name: str | None) -> None:
        pass

    def untag(self) -> None:
        pass

    def collect(self) -> dict[str, Any]:
        return {"unavailable": CONNECT_REASON, "connect": True}


class CaseMetrics:
    """One case's Spark figures: made when the case is built, `phase` before each sample, `collect` at its end."""

    def __init__(self, spark):
        self.spark = spark
        self.path = event_log_path(spark)
        self.offset = _complete_size(self.path) if self.path else 0
        self.split = True  # False for a case timed in one call (SelfTimed): no per-sample attribution
        self.case_id = uuid.uuid4().hex[:16]
        spark.sparkContext.setLocalProperty(CASE_PROPERTY, self.case_id)
        self.phase("setup")

    def phase(self, name: str | None) -> None:
        """Tags the jobs started from now on in this thread with a sample or phase."""
        self.spark.sparkContext.setLocalProperty(SAMPLE_PROPERTY, name)

    def untag(self) -> None:
        for key in (CASE_PROPERTY, SAMPLE_PROPERTY):
            self.spark.sparkContext.setLocalProperty(key, None)

    def collect(self) -> dict[str, Any]:
        """The case's figures for `extra.spark` (its unit in each key)."""
        self.untag()
        if self.path is None:
            return {"unavailable": "Spark's event log is off or not a local file (spark.eventLog.enabled, "
                                   "spark.eventLog.dir); the worker of `harness run` turns it on"}
        complete = wait_for_listeners(self.spark)
        try:
            buckets = self._read()
        except (OSError, ValueError) as e:
            return {"unavailable": f"cannot read Spark's event log {self.path}: {e} (a compressed or rolling "
                                   "event log is not read: leave spark.eventLog.compress and .rolling off)"}
        out: dict[str, Any] = {"event_log": f"{self.path.parent.name}/{self.path.name.removesuffix('.inprogress')}"}
        repeats = sorted((k for k in buckets if k.startswith("repeat:")), key=lambda k: int(k.split(":")[1]))
        if self.split and repeats:
            per_sample = [buckets[k].figures() for k in repeats]
            out["scope"] = "median per timed sample"
            out.update({k: _median([s.get(k) for s in per_sample]) for k in FIGURES if k in per_sample[0]})
            out["per_sample"] = {k: [s.get(k) for s in per_sample] for k in FIGURES if k in per_sample[0]}
            warm, untimed = _Bucket(), _Bucket()
            for k, b in buckets.items():
                if not k.startswith("repeat:"):
                    (warm if k.startswith("warmup:") else untimed).merge(b)
            out["warmup"] = warm.figures()
            out["untimed"] = untimed.figures()  # setup (caching, data generation) and checks
        else:
            whole = _Bucket()
            for b in buckets.values():
                whole.merge(b)
            out["scope"] = ("whole case: its samples are timed in one call of its own, so warm-ups, setup and checks "
                            "are included" if not self.split else "whole case: no Spark job ran in a timed sample")
            out.update(whole.figures())
        out["python_worker_time"] = PYTHON_TIME.format(version=self.spark.version)
        if not complete:
            out["incomplete"] = "Spark's listener bus did not drain in time: the last jobs may be missing"
        return out

    def _read(self) -> dict[str, _Bucket]:
        """The case's jobs and tasks in the log since `start`, per SAMPLE_PROPERTY value."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]  # a line still being written is left out
        stage_phase: dict[int, str] = {}
        buckets: dict[str, _Bucket] = {}
        for line in data.splitlines():
            if b'"SparkListenerJobStart"' not in line and b'"SparkListenerTaskEnd"' not in line:
                continue  # most events; parsing only these two keeps reading a long log cheap
            event = _parse(line)
            if event.get("Event") == "SparkListenerJobStart":
                props = event.get("Properties") or {}
                case = props.get(CASE_PROPERTY)
                if case != self.case_id and (case is not None or "spark.jobGroup.id" in props):
                    continue  # not this case's (a job without tags or group comes from a thread of the case's)
                name = props.get(SAMPLE_PROPERTY) or "untagged"
                buckets.setdefault(name, _Bucket()).jobs += 1
                for sid in event.get("Stage IDs") or ():
                    stage_phase[sid] = name  # in log order: a stage a later job skips keeps its tasks' job
            elif event.get("Event") == "SparkListenerTaskEnd":
                name = stage_phase.get(event.get("Stage ID"))
                if name is not None:
                    buckets.setdefault(name, _Bucket()).add_task(event)
        return buckets


def _parse(line: bytes) -> dict[str, Any]:
    """One event; {} for a line cut at the start of the window (a mark taken inside a very long line)."""
    try:
        return json.loads(line)
    except ValueError:
        return {}


def _complete_size(path: Path) -> int:
    """The log's size up to its last complete line (a buffer may have flushed half a line)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 65536))
        tail = f.read()
    cut = tail.rfind(b"\n")
    return size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail))


def _median(values: list) -> float | int | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    if not nums:
        return None
    med = statistics.median(nums)
    return int(med) if all(isinstance(v, int) for v in nums) and med == int(med) else round(med, 4)
