"""The harness's one timing helper. The worker process uses it for every case, and so does code that must time
inside another process (Horovod ranks, per-epoch quality curves), which then hands the samples back."""
from __future__ import annotations

import time
from typing import Any, Callable

clock = time.perf_counter


def measure(fn: Callable[[], Any], warmup: int, repeats: int,
            on_sample: Callable[[str, int, float], None] | None = None,
            before: Callable[[str], None] | None = None) -> tuple[list[float], list[float], Any]:
    """Calls fn warmup + repeats times; returns (warmup_samples, samples, last return value).

    `before(phase)` runs untimed before every call; `on_sample(phase, i, seconds)` after the clock stopped
    (it may raise to stop the loop, e.g. on a cancel).
    """
    warm, samples, out = [], [], None
    for phase, n, into in (("warmup", warmup, warm), ("repeat", repeats, samples)):
        for i in range(n):
            if before is not None:
                before(phase)
            t0 = clock()
            out = fn()
            t1 = clock()
            into.append(t1 - t0)
            if on_sample:
                on_sample(phase, i, t1 - t0)
    return warm, samples, out


class Stopwatch:
    """Accumulates laps for code that times phases of its own loop (e.g. epochs in a child process)."""

    def __init__(self) -> None:
        self.start = clock()
        self.laps: list[float] = []
        self._last = self.start

    def lap(self) -> float:
        now = clock()
        self.laps.append(now - self._last)
        self._last = now
        return self.laps[-1]

    def elapsed(self) -> float:
        return clock() - self.start
