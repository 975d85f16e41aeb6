"""The runner owns all measurement: warm-ups kept apart, repeats, per-case timeouts, failures as records.

Each case runs in a worker thread: the builder does the untimed setup, then `timing.measure` times the
workload's closure. The main thread waits, shows progress, and on timeout cancels the case's Spark job group
and kills any child processes, recording `timeout`. Any exception becomes an `error` record and the run goes
on. Every record is appended and flushed the moment its case ends, so Ctrl-C loses nothing finished.
"""
from __future__ import annotations

import gc
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import isolation, record, timing
from .context import RunContext
from .masking import scrub
from .progress import Progress
from .record import Result
from .spec import CaseRun
from .stats import summarize
from .workload import CheckFailed, SelfTimed, Unavailable, Workload

MAX_ERROR_CHARS = 6000


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during a run; finished records are already on disk."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Settings:
    repeats: int = 5
    warmup: int = 1
    timeout_s: float = 900.0


@dataclass
class _CaseState:
    warmup: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    result: Result | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Runner:
    def __init__(self, ctx: RunContext, results_file: Path, env_id: str, settings: Settings,
                 on_record: Callable[[Result], None] | None = None, progress: Progress | None = None,
                 secrets: list[str] | None = None):
        self.ctx, self.results_file, self.env_id, self.settings = ctx, results_file, env_id, settings
        self.on_record = on_record
        self.progress = progress
        self.secrets = secrets or []

    def run(self, cases: list[CaseRun], skip: set[str] = frozenset()) -> list[Result]:
        """Runs every case not in `skip` (identities already recorded); raises Interrupted on Ctrl-C."""
        todo = [c for c in cases if c.identity not in skip]
        self.progress = self.progress or Progress(len(todo))
        out = []
        for i, case in enumerate(todo, 1):
            self.progress.start_case(i, case.label)
            result = self.run_case(case)
            record.append(self.results_file, result)
            self.ctx.results[result.identity] = result
            if self.on_record:
                self.on_record(result)
            self.progress.end_case(_summary(result))
            out.append(result)
        return out

    def _settings_for(self, case: CaseRun) -> tuple[int, int, float]:
        s = self.settings
        return (case.repeats if case.repeats is not None else s.repeats,
                case.warmup if case.warmup is not None else s.warmup,
                float(case.timeout if case.timeout is not None else s.timeout_s))

    def run_case(self, case: CaseRun) -> Result:
        repeats, warmup, timeout_s = self._settings_for(case)
        spec = case.spec
        base = dict(run_id=self.ctx.run_id, experiment=spec.experiment, case=spec.name, params=case.params,
                    metric=spec.metric, unit=spec.unit, better=spec.better, env_id=self.env_id,
                    started_at=now_iso())
        if spec.spark and not self.ctx.spark_started:
            # JVM + session start-up is recorded once in env.json, not charged to the first Spark case
            self.progress.update("starting Spark")
            try:
                self.ctx.spark  # noqa: B018 - starts the session
            except Exception as e:  # noqa: BLE001 - a failed start is this case's error, the run goes on
                return self._failed(base, "error", e, [], [])
        state = _CaseState()
        group = f"harness-{case.identity}"[:200]
        worker = threading.Thread(target=self._work, args=(case, state, base, repeats, warmup, timeout_s, group),
                                  name=f"case-{spec.target}", daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout_s
        try:
            while not state.done.wait(max(0.0, min(0.25, deadline - time.monotonic()))):
                self.progress.tick()
                if time.monotonic() >= deadline:
                    self._cancel(group)
                    state.done.wait(10)  # let a cancelled Spark job unwind so the next case starts clean
                    return self._failed(base, "timeout", TimeoutError(
                        f"case ran past its {timeout_s:.0f} s timeout (--timeout); "
                        f"{len(state.samples)} of {repeats} samples were taken"), state.warmup, state.samples)
        except KeyboardInterrupt:
            self._cancel(group)
            raise Interrupted() from None
        assert state.result is not None
        return state.result

    def _work(self, case: CaseRun, state: _CaseState, base: dict, repeats: int, warmup: int,
              timeout_s: float, group: str) -> None:
        built = None
        try:
            if self.ctx.spark_started:
                self.ctx.spark.sparkContext.setJobGroup(group, case.label, interruptOnCancel=True)
            self.progress.update("setup")
            built = case.spec.build(self.ctx, **case.params)
            if isinstance(built, Workload):
                gc.collect()

                def on_sample(phase: str, i: int, value: float) -> None:
                    (state.warmup if phase == "warmup" else state.samples).append(value)
                    n = warmup if phase == "warmup" else repeats
                    self.progress.update(f"{phase} {i + 1}/{n}: {value:.4g} s")

                self.progress.update("warmup" if warmup else "repeat")
                _, _, out = timing.measure(built.run, warmup, repeats, on_sample)
                extra = dict(built.extra)
                if built.after:
                    self.progress.update("checking")
                    extra.update(built.after(out, list(state.samples)) or {})
            elif isinstance(built, SelfTimed):
                self.progress.update("measuring in child processes")
                m = built.measure(warmup, repeats, timeout_s)
                state.warmup, state.samples, extra = list(m.warmup), list(m.samples), dict(m.extra)
            else:
                raise TypeError(f"{case.spec.target} builder returned {type(built).__name__}, "
                                "expected Workload or SelfTimed")
            state.result = Result(**base, samples=state.samples, warmup=state.warmup,
                                  stats=summarize(state.samples), extra=extra, status="ok", ended_at=now_iso())
        except Unavailable as e:
            state.result = self._failed(base, "unavailable", e, state.warmup, state.samples)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a record; the run goes on
            state.result = self._failed(base, "error", e, state.warmup, state.samples)
        finally:
            try:
                teardown = getattr(built, "teardown", None)
                if teardown:
                    teardown()
            except Exception as e:  # noqa: BLE001
                if state.result is not None and state.result.status == "ok":
                    state.result = self._failed(base, "error", e, state.warmup, state.samples)
            state.done.set()

    def _failed(self, base: dict, status: str, exc: BaseException, warmup: list[float],
                samples: list[float]) -> Result:
        message = str(exc) or type(exc).__name__
        if status == "error" and not isinstance(exc, (CheckFailed, isolation.ChildFailed)):
            # where it broke matters for errors in harness or workload code; keep the innermost frames
            tb = "".join(traceback.format_exception(exc)[-6:])
            message = f"{message}\n{tb}"
        message = scrub(message, self.secrets)[-MAX_ERROR_CHARS:]
        return Result(**base, samples=list(samples), warmup=list(warmup), stats=summarize(samples),
                      status=status, error={"type": type(exc).__name__, "message": message}, ended_at=now_iso())

    def _cancel(self, group: str) -> None:
        isolation.kill_all()
        if self.ctx.spark_started:
            try:
                self.ctx.spark.sparkContext.cancelJobGroup(group)
            except Exception:  # noqa: BLE001 - a dying JVM must not hide the timeout itself
                pass


def _summary(r: Result) -> str:
    if r.status == "ok" and r.stats.get("n"):
        s = r.stats
        return f"ok  median {s['median']:.4g} {r.unit} [{s['ci_low']:.4g}, {s['ci_high']:.4g}] n={s['n']}"
    if r.status == "ok":
        return "ok"
    first = (r.error or {}).get("message", "").strip().splitlines()
    return f"{r.status.upper()}: {first[0][:150] if first else ''}"


def run_summary(results: list[Result]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def exit_code(results: list[Result]) -> int:
    """0 when every case is ok / unavailable / skipped; 1 when any failed or timed out."""
    return 1 if any(r.status in ("error", "timeout") for r in results) else 0


__all__: list[Any] = ["Runner", "Settings", "Interrupted", "exit_code", "run_summary", "now_iso"]
