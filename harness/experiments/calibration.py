"""Calibration: cases with known ground truth that the runner, reports and regression gate are checked against.

Timed: `sleep` sleeps `ms` milliseconds; `spin` runs a pure-Python loop whose time grows linearly with
`iterations`; `spark_noop` writes `spark.range(rows)` to the `noop` sink (per-job Spark overhead).
Not timed: nothing to set up beyond the run's SparkSession.
"""
from __future__ import annotations

import time

from ..registry import experiment
from ..workload import CheckFailed, Workload

EXP = experiment("calibration", "known-answer cases that check the runner, reports and regression gate")


@EXP.case("sleep", {"ms": [10]})
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


@EXP.case("spin", {"iterations": [200_000]})
def spin(ctx, iterations: int) -> Workload:
    """A pure-Python loop of `iterations` steps."""
    expected = spin_loop(min(iterations, 1000))

    def after(out, samples):
        # a wrong answer means the loop was not the loop we meant to time
        if iterations <= 1000 and out != expected:
            raise CheckFailed(f"spin returned {out}, expected {expected}")
        return {"iterations": iterations}

    return Workload(run=lambda: spin_loop(iterations), after=after)


@EXP.case("spark_noop", {"rows": [1_000_000]}, spark=True)
def spark_noop(ctx, rows: int) -> Workload:
    """spark.range(rows) written to the noop sink: one Spark job, no Python, no I/O."""
    df = ctx.spark.range(rows)

    def run():
        df.write.format("noop").mode("overwrite").save()

    return Workload(run=run, extra={"rows": rows, "partitions": df.rdd.getNumPartitions()})
