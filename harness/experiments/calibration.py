"""Calibration: cases with known ground truth that the runner, reports and regression gate are checked against.

Timed: `sleep` sleeps `ms` milliseconds; `spin` runs a pure-Python loop whose time grows linearly with
`iterations`; `spark_noop` writes `spark.range(rows)` to the `noop` sink (per-job Spark overhead);
`spark_spin` runs the same loop inside every partition of one Spark job (Python workers), so its time is a fixed
per-job cost plus a part linear in `iterations`: Spark ground truth for the regression gate.
Not timed: nothing to set up beyond the run's SparkSession.
"""
from __future__ import annotations

import time

from ..registry import experiment
from ..spark import partition_count
from ..spec import Axis
from ..workload import CheckFailed, Workload

EXP = experiment("calibration", "known-answer cases that check the runner, reports and regression gate")


@EXP.case("sleep", {"ms": Axis("ms", (10,), int, help="milliseconds each sample sleeps")})
def sleep(ctx, ms: int) -> Workload:
    """time.sleep(ms): the median must be ms/1000 s (plus the OS's wake-up latency)."""
    seconds = ms / 1000.0
    return Workload(run=lambda: time.sleep(seconds), extra={"expected_s": seconds})


def spin_loop(iterations: int) -> int:
    """CPU-bound and allocation-free, so its time is linear in `iterations`."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) & 0xFFFFFFFF
    return acc


@EXP.case("spin", {"iterations": Axis("iterations", (200_000,), int,
                                      help="steps of the spin loop (its time is linear in them)")})
def spin(ctx, iterations: int) -> Workload:
    """A pure-Python loop of `iterations` steps."""
    expected = spin_loop(min(iterations, 1000))

    def after(out, samples, warmup):
        # a wrong answer means the loop was not the loop we meant to time
        if iterations <= 1000 and out != expected:
            raise CheckFailed(f"spin returned {out}, expected {expected}")
        return {"iterations": iterations}

    return Workload(run=lambda: spin_loop(iterations), after=after)


@EXP.case("spark_noop", {"rows": Axis("rows", (1_000_000,), int, help="rows written to the noop sink")}, spark=True)
def spark_noop(ctx, rows: int) -> Workload:
    """spark.range(rows) written to the noop sink: one Spark job, no Python, no I/O."""
    df = ctx.spark.range(rows)

    def run():
        df.write.format("noop").mode("overwrite").save()

    return Workload(run=run, extra={"rows": rows, "partitions": partition_count(df)})


def _spin_partition(iterations: int):
    """mapPartitions body: ignores the partition's rows and spins; module-level so workers unpickle it by name."""
    def spin_here(_rows):
        yield spin_loop(iterations)
    return spin_here


@EXP.case("spark_spin", {"iterations": [1_000_000], "partitions": [2]}, spark=True)
def spark_spin(ctx, iterations: int, partitions: int) -> Workload:
    """One Spark job whose `partitions` tasks each spin `iterations` steps in a Python worker."""
    rdd = ctx.spark.sparkContext.parallelize(range(partitions), partitions)
    expected = spin_loop(iterations) * partitions  # untimed: the answer every sample must give

    def run():
        return rdd.mapPartitions(_spin_partition(iterations)).sum()

    def after(out, samples, warmup):
        if out != expected:
            raise CheckFailed(f"spark_spin summed {out}, expected {expected}: the tasks did not run the loop")
        return {"iterations": iterations, "partitions": partitions}

    return Workload(run=run, after=after, extra={"tasks": partitions})
