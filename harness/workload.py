"""What an experiment's case builder hands the worker.

An experiment never calls a clock. It builds a `Workload` (the worker times `run`, a zero-argument closure,
after all setup is done) or, where figures must be taken in other processes (Horovod ranks, framework
processes), a `SelfTimed` whose `measure` returns samples taken there with `harness.timing`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class Unavailable(Exception):
    """A dependency or capability this case needs is missing here; the record says which and why."""


class CheckFailed(Exception):
    """The workload ran but its result is wrong (row count, checksum, quality): an `error` record."""


@dataclass
class Workload:
    run: Callable[[], Any]  # the timed call; setup belongs in the builder, not here
    # after(last_return_value, samples, warmup) -> extras; checks the result (raise CheckFailed) and may relate
    # its own samples to a reference case's record (ctx.find) for speedups and rows_per_s
    after: Callable[[Any, list[float], list[float]], dict[str, Any]] | None = None
    # before(phase) runs untimed before every call, warm-ups included ("warmup" / "repeat"): e.g. dropping the
    # page cache before a cold read
    before: Callable[[str], None] | None = None
    teardown: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # static figures (rows, bytes, settings)


@dataclass
class Measurement:
    samples: list[float]
    warmup: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelfTimed:
    """A case measured in other processes: `measure(warmup, repeats, timeout_s)` returns the samples."""

    measure: Callable[[int, int, float], Measurement]
    teardown: Callable[[], None] | None = None
