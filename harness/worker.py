"""The worker process: owns the run's context and SparkSession, builds cases and takes their timed calls.

The coordinator starts it in a session of its own (`WorkerHandle` in harness.coordinator); its stdout and stderr
(and those of the JVM and every child) go through a pipe to the coordinator, which writes them, secret values
masked, to a log file in the run folder, so nothing Spark or a library prints reaches the terminal or the protocol.
For a Spark case it also tags each job with the sample it ran in and reads the case's figures from Spark's event
log at the end (harness.spark_metrics).
Requests and replies (harness.protocol) travel on pipes; a control thread reads cancels from a third one, so a
cancel reaches a worker whose main thread is inside a sample. Timing stays here: `timing.measure` around the
call, and a sample is written to the pipe only after its clock stopped.

Under Spark Connect (`--remote`) the session is a client of a Connect server: a case's operations carry a Connect
tag instead of a job group (a cancel interrupts that tag), Spark's figures are not read, and a case that reaches
for the classic SparkContext, RDDs or the JVM is `unavailable` with the reason (spark.classic_only).

`Session` is the request handling without any transport, so tests run cases in-process through the same code.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import isolation, protocol, timing
from .workload import CheckFailed, SelfTimed, Unavailable, Workload

FLUSH_S = 0.05  # samples of fast calls go out in batches at most this old, so the coordinator is not woken per call


class Cancelled(Exception):
    """The coordinator cancelled the running request: its case ran past the timeout."""


def failure(status: str, exc: BaseException) -> dict[str, Any]:
    """A failed reply; errors in harness or workload code carry where they broke (the innermost frames)."""
    message = str(exc) or type(exc).__name__
    if status == "error" and not isinstance(exc, (CheckFailed, isolation.ChildFailed)):
        message = f"{message}\n" + "".join(traceback.format_exception(exc)[-6:])
    return {"op": "failed", "status": status, "error": {"type": type(exc).__name__, "message": message}}


@dataclass
class OpenCase:
    """The case built and not yet finished: its workload and the samples taken so far."""

    built: Workload | SelfTimed
    warmup: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    out: Any = None  # the last timed call's return value, for after()
    extra: dict[str, Any] = field(default_factory=dict)  # a SelfTimed case's measured extras
    spark: Any = None  # spark_metrics.CaseMetrics of a Spark case: its jobs per sample, from the event log


class Session:
    """One worker's state (run context, open case) and its request handling, free of any transport."""

    def __init__(self, ctx=None):
        self.ctx = ctx
        self.case: OpenCase | None = None
        self.current: Any = None  # id of the request being handled, so a late cancel is ignored
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self.tag: str | None = None  # the open case's Spark Connect operation tag (Connect only)

    def handle(self, msg: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Runs one request; `emit` gets the sample messages; returns the final reply."""
        op = msg["op"]
        with self._lock:
            self.current = msg.get("id")
            self.cancelled.clear()
        try:
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise ValueError(f"unknown request {op!r} (protocol {protocol.VERSION})")
            reply = handler(msg, lambda m: emit({**m, "id": msg.get("id")}))
        except Unavailable as e:
            reply = failure("unavailable", e)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a reply; the worker goes on
            reply = self._failure(e)
        with self._lock:
            if self.cancelled.is_set():
                reply = {"op": "cancelled"}
            self.current = None
        if reply["op"] != "ok" and op in ("build", "samples", "finish"):
            self.close_case()
        return {**reply, "id": msg.get("id")}

    def cancel(self, request_id: Any) -> None:
        """From the control thread: stop the running request's Spark jobs and child processes."""
        with self._lock:
            if request_id is None or request_id != self.current:
                return  # that request already ended
            self.cancelled.set()
        isolation.kill_all()
        if self.ctx is not None and self.ctx.spark_started:
            try:
                if self.ctx.remote:
                    # the tag covers the operations the case's thread started; tags are per thread, so
                    # interruptAll takes those of its own threads (one case runs at a time: all are this case's)
                    if self.tag:
                        self.ctx.spark.interruptTag(self.tag)
                    self.ctx.spark.interruptAll()
                else:
                    # one case runs at a time, so every job is this case's, including those of its own threads
                    self.ctx.spark.sparkContext.cancelAllJobs()
            except Exception:  # noqa: BLE001 - a dying JVM or server: the coordinator's grace and kill take over
                pass

    # ---- requests ----

    def op_start(self, msg, emit) -> dict[str, Any]:
        if msg.get("version") != protocol.VERSION:
            raise RuntimeError(f"protocol mismatch: the coordinator speaks version {msg.get('version')}, this worker "
                               f"(harness at {Path(__file__).parent}) speaks {protocol.VERSION}")
        from .context import RunContext
        from .registry import load_all
        from .spark import event_log_conf, is_remote

        s = msg["settings"]
        # a user's --conf wins; through Connect the event log is the server's (not this client's to set)
        log = {} if is_remote(s.get("master")) else event_log_conf(Path(s["run_dir"]))
        conf = {**log, **(s.get("conf") or {})}
        self.ctx = RunContext(run_id=s["run_id"], run_dir=Path(s["run_dir"]), master=s.get("master"),
                              conf=conf, data=Path(s["data"]) if s.get("data") else None,
                              cache_dir=Path(s["cache_dir"]), seed=int(s.get("seed", 42)),
                              timeout_s=float(s.get("timeout_s", 900.0)), tracking_uri=s.get("tracking_uri"))
        load_all()
        return {"op": "ok", "version": protocol.VERSION, "pid": os.getpid(), "python": sys.executable,
                "harness": str(Path(__file__).resolve().parent)}

    def op_spark(self, msg, emit) -> dict[str, Any]:
        spark = self.ctx.spark  # starts the session
        # Spark SQL sets itself up on the first query (seconds): part of the start-up, not of the first case
        t0 = timing.clock()
        spark.range(1).count()
        self.ctx.spark_info["first_query_s"] = round(timing.clock() - t0, 4)
        return {"op": "ok", "info": self.ctx.spark_info}

    def op_build(self, msg, emit) -> dict[str, Any]:
        from .record import Result
        from .registry import code_version

        self.close_case()
        for d in msg.get("results") or ():
            r = Result.from_dict(d)
            self.ctx.results[r.identity] = r
        spec = msg.get("spec") or _lookup(msg["target"])  # in-process callers pass the CaseSpec itself
        version = code_version(spec.build)
        at_start = {}
        metrics = None
        try:
            if self.ctx.spark_started:
                if self.ctx.remote:
                    self._tag(msg["group"])
                else:
                    at_start = _spark_activity(self.ctx.spark)
                    self.ctx.spark.sparkContext.setJobGroup(msg["group"], msg.get("label", msg["group"]),
                                                            interruptOnCancel=True)
                if spec.spark:
                    from .spark_metrics import for_session

                    metrics = for_session(self.ctx.spark, connect=bool(self.ctx.remote))
            built = spec.build(self.ctx, **msg["params"])
            if not isinstance(built, (Workload, SelfTimed)):
                raise TypeError(f"{spec.target} builder returned {type(built).__name__}, expected Workload or "
                                "SelfTimed")
        except BaseException as e:  # noqa: BLE001 - the failure is this case's record
            self._untag()
            return {**(failure("unavailable", e) if isinstance(e, Unavailable) else self._failure(e)),
                    "version": version}
        self.case = OpenCase(built, spark=metrics)
        return {"op": "ok", "version": version, "kind": type(built).__name__,
                **{f"spark_{k}_at_start": v for k, v in at_start.items()}}

    def op_samples(self, msg, emit) -> dict[str, Any]:
        case = self._open()

        def on_sample(phase: str, i: int, value: float) -> None:
            (case.warmup if phase == "warmup" else case.samples).append(value)
            emit({"op": "sample", "phase": phase, "i": i, "value": value})
            if self.cancelled.is_set():
                raise Cancelled()

        built = case.built
        if isinstance(built, Workload):
            gc.collect()  # garbage from setup is collected here, not inside a timed call
            _, _, case.out = timing.measure(built.run, int(msg["warmup"]), int(msg["repeats"]), on_sample,
                                            _tagging(built.before, case.spark))
        else:
            if case.spark is not None:  # its samples come out of one call: Spark's figures are the whole case's
                case.spark.split = False
            m = built.measure(int(msg["warmup"]), int(msg["repeats"]), float(msg.get("timeout_s") or 900.0))
            for phase, values in (("warmup", m.warmup), ("repeat", m.samples)):
                for i, value in enumerate(values):
                    on_sample(phase, i, value)
            case.extra = dict(m.extra)
        return {"op": "ok"}

    def op_finish(self, msg, emit) -> dict[str, Any]:
        case = self._open()
        built = case.built
        if case.spark is not None:
            case.spark.phase("checks")
        if isinstance(built, Workload):
            extra = dict(built.extra)
            if built.after is not None:
                extra.update(built.after(case.out, list(case.samples), list(case.warmup)) or {})
        else:
            extra = case.extra
        if case.spark is not None:
            extra["spark"] = case.spark.collect()
        self.case = None
        self._untag()
        if built.teardown is not None:
            built.teardown()
        return {"op": "ok", "extra": extra}

    def op_abort(self, msg, emit) -> dict[str, Any]:
        self.close_case()
        return {"op": "ok", "spark_busy": self._wait_spark_idle(protocol.IDLE_WAIT_S)}

    def op_stop(self, msg, emit) -> dict[str, Any]:
        self.close_case()
        if self.ctx is not None:
            self.ctx.stop()
        return {"op": "ok"}

    # ---- helpers ----

    def _failure(self, exc: BaseException) -> dict[str, Any]:
        """An error reply, or `unavailable` when Spark Connect refused a classic-only API the case uses."""
        if self.ctx is not None and self.ctx.remote:
            from .spark import classic_only

            if reason := classic_only(exc):
                return failure("unavailable", Unavailable(reason))
        return failure("error", exc)

    def _tag(self, group: str) -> None:
        """Tags the case's Spark Connect operations (from this thread) so a cancel can interrupt them. A tag
        may not hold a comma (Spark's job-tag separator), and a case's identity does: a hash of it is used."""
        import hashlib

        self._untag()
        self.tag = "harness-" + hashlib.sha1(group.encode()).hexdigest()[:16]
        self.ctx.spark.addTag(self.tag)

    def _untag(self) -> None:
        if self.tag is not None and self.ctx is not None and self.ctx.spark_started:
            try:
                self.ctx.spark.removeTag(self.tag)
            except Exception:  # noqa: BLE001 - a server gone: nothing to untag
                pass
        self.tag = None

    def _open(self) -> OpenCase:
        if self.case is None:
            raise RuntimeError("no case is built: send `build` first")
        return self.case

    def close_case(self) -> None:
        """Tears down a case that failed or was cancelled; its teardown's own failure changes nothing now."""
        case, self.case = self.case, None
        self._untag()
        if case is not None and case.spark is not None:
            try:
                case.spark.untag()
            except Exception:  # noqa: BLE001 - a dying JVM
                pass
        if case is not None and case.built.teardown is not None:
            try:
                case.built.teardown()
            except Exception:  # noqa: BLE001
                pass

    def _wait_spark_idle(self, limit_s: float) -> int:
        """Waits until cancelled jobs and their tasks are gone; returns how many jobs + tasks are still running."""
        if self.ctx is None or not self.ctx.spark_started:
            return 0
        if self.ctx.remote:  # the server's scheduler is out of this client's sight; interrupt is all it can do
            return 0
        end = time.monotonic() + limit_s
        while True:
            busy = sum(_spark_activity(self.ctx.spark).values())
            if busy == 0 or time.monotonic() >= end:
                return busy
            time.sleep(0.05)


def _tagging(before: Callable[[str], None] | None, metrics) -> Callable[[str], None] | None:
    """The untimed per-sample hook, plus tagging the sample's Spark jobs (`warmup:I`, `repeat:I`)."""
    if metrics is None:
        return before
    counts = {"warmup": 0, "repeat": 0}

    def hook(phase: str) -> None:
        if before is not None:
            before(phase)
        metrics.phase(f"{phase}:{counts[phase]}")
        counts[phase] += 1

    return hook


def _lookup(target: str):
    from .registry import load_all

    exp, _, name = target.partition(".")
    found = load_all().get(exp)
    if found is None or name not in found.cases:
        raise ValueError(f"{target}: no such case in the harness at {Path(__file__).resolve().parent}")
    return found.cases[name]


def _spark_activity(spark) -> dict[str, int]:
    """Spark jobs and tasks running right now (after a cancel they must drain before the next case).

    Tasks come from the task scheduler itself: the status tracker reads a store that Spark's listener fills
    asynchronously, which lags by seconds on a busy machine and then shows a cancelled job's tasks as gone while
    they still hold every task slot.
    """
    sc = spark.sparkContext
    jobs = len(sc.statusTracker().getActiveJobsIds())
    try:
        running = sc._jsc.sc().taskScheduler().runningTasksByExecutors().toString()  # e.g. "Map(driver -> 2)"
        tasks = sum(int(n) for n in re.findall(r"-> (\d+)", running))
    except Exception:  # noqa: BLE001 - another scheduler: the tracker's (lagging) count is the next best
        tasks = sum(e.numRunningTasks() for e in sc._jsc.sc().statusTracker().getExecutorInfos())
    return {"jobs": jobs, "tasks": tasks}


class _Replies:
    """Writes replies; samples of fast calls are batched (sent at most FLUSH_S late)."""

    def __init__(self, fd: int):
        self.out = os.fdopen(fd, "wb")
        self.last = time.monotonic()

    def sample(self, msg: dict[str, Any]) -> None:
        self.out.write(protocol.encode(msg))
        now = time.monotonic()
        if now - self.last >= FLUSH_S:
            self.out.flush()
            self.last = now

    def final(self, msg: dict[str, Any]) -> None:
        self.out.write(protocol.encode(msg))
        self.out.flush()
        self.last = time.monotonic()


def _control(fd: int, session: Session) -> None:
    """Reads cancels; when the coordinator is gone (its end closed), takes this worker's children with it."""
    with os.fdopen(fd, "rb") as f:
        for line in f:
            msg = json.loads(line)
            if msg.get("op") == "cancel":
                session.cancel(msg.get("id"))
    isolation.kill_all()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fds", required=True, help="requests,replies,control: pipe ends given by the coordinator")
    fds = [int(x) for x in ap.parse_args(argv).fds.split(",")]
    requests_fd, replies_fd, control_fd = fds
    for fd in fds:
        os.set_inheritable(fd, False)  # never passed on to Spark's JVM or a case's child processes
    print(f"harness worker pid {os.getpid()}: python {sys.executable}, harness at {Path(__file__).resolve().parent}, "
          f"protocol {protocol.VERSION}", flush=True)
    session = Session()
    threading.Thread(target=_control, args=(control_fd, session), name="harness-control", daemon=True).start()
    replies = _Replies(replies_fd)
    with os.fdopen(requests_fd, "rb") as requests:
        for line in requests:
            msg = json.loads(line)
            replies.final(session.handle(msg, replies.sample))
            if msg["op"] == "stop":
                return 0
    isolation.kill_all()  # the coordinator closed the requests pipe without `stop`
    return 0


if __name__ == "__main__":
    sys.exit(main())
