"""The messages between the coordinator and a worker process: one JSON object per line, over pipes.

Requests go one at a time, each with an `id` and an `op`:

    start    {version, settings: {run_id, run_dir, master, conf, data, cache_dir, seed, timeout_s}}
    spark    start the run's SparkSession (its start-up is recorded apart, never charged to a case)
    build    {target, params, group, results: [records of this run the worker has not seen yet]}
    samples  {warmup, repeats, timeout_s}: one {op: sample, phase, i, value} per timed call, then the reply
    finish   after() and teardown of the built case -> {extra}
    abort    tear down the case left open by a cancel, wait for Spark to go idle -> {spark_busy}
    stop     release the run's state and exit

Each request ends with exactly one final reply carrying its id: {op: ok, ...}, {op: failed, status, error}
or {op: cancelled}. A cancel, {op: cancel, id}, travels on a pipe of its own that a control thread of the
worker reads, so it reaches a worker whose main thread is busy inside a sample.
VERSION changes whenever a message changes; a worker of another version is refused at `start`.
"""
from __future__ import annotations

import json
import os
import select
import time
from typing import Any

VERSION = 1
FINAL = ("ok", "failed", "cancelled")
IDLE_WAIT_S = 5.0  # how long `abort` waits for cancelled Spark jobs and tasks to end


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":"), allow_nan=True) + "\n").encode()


class LineReader:
    """Reads messages from a pipe with a time limit (the coordinator never blocks past a deadline)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def read(self, timeout_s: float) -> dict[str, Any] | None:
        """The next message, or None when none came within timeout_s; EOFError when the writer is gone."""
        end = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError("the worker closed its pipe")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)
