"""The coordinator: runs a plan's cases on a worker process and keeps the records; it never times a call itself.

Per case: resolve its settings (`Settings.for_case`), have the worker build it, take warm-ups and repeats (the
worker streams each sample back, so progress shows), finish it (checks, teardown), append the record (fsynced)
and hand it to the MLflow callback. A case past its timeout is cancelled: the worker cancels its Spark jobs and
kills its child processes; a worker that has not answered within CANCEL_GRACE_S is killed with every process
it started, and a fresh one starts for the next case (its start-up goes to env.json, never to a case). Any
other failure becomes a record and the run goes on.

`WorkerHandle` is one worker process; `LocalWorker` runs the same request handling in this process (tests,
asv). Both expose `build`, `samples` and `finish`, so a caller can drive two workers sample by sample.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from . import protocol, record
from .context import default_cache_dir
from .masking import scrub, secret_values
from .progress import Progress
from .record import Result
from .registry import code_version
from .spec import CaseRun
from .stats import summarize

DEFAULTS = {"repeats": 5, "warmup": 1, "timeout": 900.0}
CANCEL_GRACE_S = 3.0  # how long a cancelled case has to come back before its worker is killed
START_TIMEOUT_S = 120.0  # a worker process's start (interpreter, harness import), not charged to a case
SPARK_START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
MAX_ERROR_CHARS = 6000


class Interrupted(Exception):
    """SIGINT or SIGTERM during a run; finished records are already on disk."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class CaseFailed(Exception):
    """The worker reported the case as failed: status `error` or `unavailable`, and the error."""

    def __init__(self, status: str, error: dict[str, str], version: str | None = None):
        super().__init__(error.get("message", ""))
        self.status, self.error, self.version = status, error, version


class WorkerLost(Exception):
    """The worker process died during a request; the message ends with the tail of its log."""


class WorkerStartFailed(Exception):
    """No worker could be started (wrong interpreter, another protocol version, an import error)."""


class Deadline(Exception):
    """No final reply came before the deadline."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------- settings

@dataclass
class CaseSettings:
    repeats: int
    warmup: int
    timeout_s: float


@dataclass
class Settings:
    """Samples and time per case. Precedence, decided here only: command line > suite entry > the suite's
    [defaults] > built-in DEFAULTS."""

    repeats: int | None = None  # from the command line (None: not given)
    warmup: int | None = None
    timeout_s: float | None = None
    suite: dict[str, Any] = field(default_factory=dict)  # the suite file's [defaults]

    def for_case(self, case: CaseRun) -> CaseSettings:
        def pick(given, entry, key):
            for value in (given, entry, self.suite.get(key)):
                if value is not None:
                    return value
            return DEFAULTS[key]

        return CaseSettings(int(pick(self.repeats, case.repeats, "repeats")),
                            int(pick(self.warmup, case.warmup, "warmup")),
                            float(pick(self.timeout_s, case.timeout, "timeout")))

    @property
    def run_timeout_s(self) -> float:
        """The run-wide timeout (a case may set its own)."""
        return float(next(v for v in (self.timeout_s, self.suite.get("timeout"), DEFAULTS["timeout"]) if v is not None))


@dataclass
class WorkerSettings:
    """What a worker's run context is made of (the `start` message)."""

    run_id: str
    run_dir: Path
    master: str | None = None
    conf: dict[str, str] = field(default_factory=dict)
    data: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    seed: int = 42
    timeout_s: float = DEFAULTS["timeout"]
    tracking_uri: str | None = None  # the run's MLflow store, for cases that register models (no credentials)

    def message(self) -> dict[str, Any]:
        # absolute paths: a worker of another checkout may run from another folder
        return {"run_id": self.run_id, "run_dir": str(Path(self.run_dir).resolve()), "master": self.master,
                "conf": dict(self.conf), "data": str(Path(self.data).resolve()) if self.data else None,
                "cache_dir": str(Path(self.cache_dir).resolve()), "seed": self.seed, "timeout_s": self.timeout_s,
                "tracking_uri": self.tracking_uri}


def spark_route(worker: "Worker") -> dict[str, Any]:
    """How a Spark case on `worker` reached Spark, for its record: `spark_connect` (URL, server version) when
    through a Spark Connect server, else nothing."""
    connect = (worker.spark_info or {}).get("connect")
    return {"spark_connect": {k: connect.get(k) for k in ("url", "server_version")}} if connect else {}


# ---------------------------------------------------------------------------------------------- workers

class Worker:
    """What the coordinator drives, one case at a time: build, samples (any number of calls), finish."""

    on_wait: Callable[[], None] | None = None  # called about 4 times a second while waiting (progress)
    spark_info: dict[str, Any] | None = None  # the worker's Spark description (spark.describe), once started

    @property
    def spark_started(self) -> bool:
        raise NotImplementedError

    def request(self, msg: dict[str, Any], deadline: float) -> Iterator[dict[str, Any]]:
        """Sends one request; yields its sample messages and then its final reply."""
        raise NotImplementedError

    def share(self, result: Result) -> None:
        """A record of this run that the worker's cases may look up (ctx.find): references, speedups."""
        raise NotImplementedError

    def ensure_started(self) -> None:
        pass

    def abort(self) -> str | None:
        """After a deadline: stop the case; returns why the worker had to be replaced, or None."""
        raise NotImplementedError

    def stop(self) -> None:
        pass

    def kill(self, reason: str = "") -> None:
        pass

    def start_spark(self) -> dict[str, Any]:
        """Starts the run's SparkSession in the worker (not charged to a case); returns its description."""
        try:
            info = self._final({"op": "spark"}, time.monotonic() + SPARK_START_TIMEOUT_S)["info"]
        except Deadline:
            self.kill("replaced: its Spark did not start")
            raise CaseFailed("error", {"type": "TimeoutError",
                                       "message": f"Spark did not start within {SPARK_START_TIMEOUT_S:.0f} s"}) from None
        self._spark_started(info)
        return info

    def build(self, case: CaseRun, deadline: float) -> dict[str, Any]:
        """Builds the case (its untimed setup); returns {version, kind, spark_*_at_start}."""
        return self._final(self._build_message(case), deadline)

    def samples(self, warmup: int, repeats: int, deadline: float) -> Iterator[tuple[str, int, float]]:
        """Takes warmup + repeats timed calls of the built case; yields (phase, index, seconds) as they come."""
        msg = {"op": "samples", "warmup": warmup, "repeats": repeats,
               "timeout_s": max(1.0, deadline - time.monotonic())}
        for reply in self.request(msg, deadline):
            if reply["op"] == "sample":
                yield reply["phase"], reply["i"], reply["value"]
            else:
                _check(reply)

    def finish(self, deadline: float) -> dict[str, Any]:
        """Runs the case's checks (after) and teardown; returns its extras."""
        return self._final({"op": "finish"}, deadline)["extra"]

    def _build_message(self, case: CaseRun) -> dict[str, Any]:
        return {"op": "build", "target": case.spec.target, "params": case.params, "label": case.label,
                "group": f"harness-{case.identity}"[:200]}

    def _final(self, msg: dict[str, Any], deadline: float) -> dict[str, Any]:
        reply: dict[str, Any] = {}
        for reply in self.request(msg, deadline):
            pass
        return _check(reply)

    def _spark_started(self, info: dict[str, Any]) -> None:
        pass


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("op") == "failed":
        raise CaseFailed(reply["status"], reply["error"], reply.get("version"))
    if reply.get("op") != "ok":
        raise CaseFailed("error", {"type": "Cancelled", "message": f"the worker answered {reply.get('op')!r}"})
    return reply


class LocalWorker(Worker):
    """The worker's request handling in this process, on the caller's RunContext (tests, asv).

    Nothing here can stop a call that runs too long: timeouts need a WorkerHandle.
    """

    def __init__(self, ctx):
        from .worker import Session

        self.ctx = ctx
        self.session = Session(ctx)

    @property
    def spark_started(self) -> bool:
        return self.ctx.spark_started

    @property
    def spark_info(self) -> dict[str, Any] | None:
        return self.ctx.spark_info

    def request(self, msg: dict[str, Any], deadline: float) -> Iterator[dict[str, Any]]:
        emitted: list[dict[str, Any]] = []
        final = self.session.handle(msg, emitted.append)
        yield from emitted
        yield final

    def share(self, result: Result) -> None:
        self.ctx.results[result.identity] = result

    def abort(self) -> str | None:
        self.session.handle({"op": "abort"}, lambda m: None)
        return None

    def _build_message(self, case: CaseRun) -> dict[str, Any]:
        return {**super()._build_message(case), "spec": case.spec}  # in-process: no lookup by name


_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from harness.worker import main; sys.exit(main())"


class WorkerHandle(Worker):
    """A worker process (`python -m harness.worker`): started on first use, replaced after a kill.

    `python` and `code_root` choose the interpreter and the checkout whose harness it imports (default: this
    interpreter and this checkout); `env` adds environment variables. Its output (its own, Spark's JVM's, its
    children's) goes to `log_path` through a pipe, with the values of secret confs and variables masked.
    """

    def __init__(self, settings: WorkerSettings, log_path: Path, python: str | None = None,
                 code_root: Path | None = None, env: dict[str, str] | None = None):
        self.settings, self.log_path = settings, Path(log_path)
        self.python = python or sys.executable
        self.code_root = Path(code_root or Path(__file__).resolve().parent.parent).resolve()
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.starts: list[dict[str, Any]] = []  # every worker start, for env.json
        self.spark_info: dict[str, Any] | None = None  # the first Spark start's description, for env.json
        self._spark = False
        self._known: dict[str, dict[str, Any]] = {}  # records shared, resent to a replacement worker
        self._unsent: dict[str, dict[str, Any]] = {}
        self._next_id = 0
        self._pending: int | None = None  # the request without a final reply yet
        self._reason = "first case"
        self._log_copier: threading.Thread | None = None

    @property
    def spark_started(self) -> bool:
        return self._spark

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def share(self, result: Result) -> None:
        d = result.to_dict()
        self._known[result.identity] = self._unsent[result.identity] = d

    def ensure_started(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.kill(f"replaced: the previous worker exited with code {self.proc.returncode}")
        t0 = time.perf_counter()
        self._spawn()
        try:
            reply = self._final({"op": "start", "version": protocol.VERSION, "settings": self.settings.message()},
                                time.monotonic() + START_TIMEOUT_S)
            if reply.get("version") != protocol.VERSION:
                raise CaseFailed("error", {"message": f"the worker speaks protocol {reply.get('version')}, this "
                                                      f"coordinator {protocol.VERSION}"})
        except (CaseFailed, WorkerLost, Deadline) as e:
            detail = str(e) if not isinstance(e, Deadline) else f"no answer within {START_TIMEOUT_S:.0f} s"
            self.kill("start failed")
            raise WorkerStartFailed(f"the worker ({self.python}, harness at {self.code_root}) did not start: "
                                    f"{detail}\n  its log: {self.log_path}") from None
        self._unsent = dict(self._known)
        self.starts.append({"pid": reply["pid"], "started_at": now_iso(), "reason": self._reason,
                            "startup_s": round(time.perf_counter() - t0, 4), "python": reply["python"],
                            "harness": reply["harness"]})

    def _spawn(self) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        # the worker's own children (isolation, Spark's Python workers) import this checkout's harness too
        env["PYTHONPATH"] = os.pathsep.join([str(self.code_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out_r, out_w = os.pipe()
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"--- {now_iso()} worker start ({self._reason}) ---\n".encode())
            self.proc = subprocess.Popen(
                [self.python, "-c", _BOOT, str(self.code_root), "--fds", f"{req_r},{rep_w},{ctl_r}"],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=subprocess.STDOUT, env=env,
                pass_fds=(req_r, rep_w, ctl_r), start_new_session=True)
        except OSError as e:
            for fd in (req_r, req_w, rep_r, rep_w, ctl_r, ctl_w, out_r, out_w):
                os.close(fd)
            raise WorkerStartFailed(f"cannot start a worker with {self.python}: {e}") from None
        for fd in (req_r, rep_w, ctl_r, out_w):
            os.close(fd)
        secrets = secret_values(self.settings.conf, env)
        self._log_copier = threading.Thread(target=copy_scrubbed, args=(out_r, self.log_path, secrets),
                                            name="harness-worker-log", daemon=True)
        self._log_copier.start()
        self._requests = os.fdopen(req_w, "wb")
        self._reader = protocol.LineReader(rep_r)
        self._control = os.fdopen(ctl_w, "wb")
        self._spark = False

    def request(self, msg: dict[str, Any], deadline: float) -> Iterator[dict[str, Any]]:
        if self.proc is None:
            raise WorkerLost("no worker is running (it was killed); start one with ensure_started()")
        self._next_id += 1
        msg = {**msg, "id": self._next_id}
        if msg["op"] == "build" and self._unsent:
            msg["results"], self._unsent = list(self._unsent.values()), {}
        self._pending = self._next_id
        try:
            self._requests.write(protocol.encode(msg))
            self._requests.flush()
        except OSError:
            raise self._lost() from None
        yield from self._replies(deadline)

    def _replies(self, deadline: float) -> Iterator[dict[str, Any]]:
        """The pending request's messages up to its final reply; Deadline when that does not come in time."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Deadline()
            try:
                reply = self._reader.read(min(0.25, left))
            except EOFError:
                raise self._lost() from None
            if reply is None:
                if self.on_wait:
                    self.on_wait()
                if self.proc.poll() is not None:
                    raise self._lost()
                continue
            if reply.get("id") != self._pending:
                continue  # the end of a request abandoned earlier
            yield reply
            if reply["op"] in protocol.FINAL:
                self._pending = None
                return

    def abort(self) -> str | None:
        if self.proc is None:
            return None
        why = f"the worker did not come back within the {CANCEL_GRACE_S:g} s grace"
        try:
            if self._pending is not None:
                self._control.write(protocol.encode({"op": "cancel", "id": self._pending}))
                self._control.flush()
                for _ in self._replies(time.monotonic() + CANCEL_GRACE_S):
                    pass
            reply = self._final({"op": "abort"}, time.monotonic() + protocol.IDLE_WAIT_S + CANCEL_GRACE_S)
            if not reply.get("spark_busy"):
                return None
            why = f"{reply['spark_busy']} Spark job(s)/task(s) went on running after the cancel"
        except (Deadline, WorkerLost, CaseFailed, OSError):
            pass
        self.kill(f"replaced: {why}")
        return why

    def stop(self) -> None:
        """Ends the worker cleanly (stops its SparkSession), killing what is left after STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        try:
            self._final({"op": "stop"}, time.monotonic() + STOP_TIMEOUT_S)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except (Deadline, WorkerLost, CaseFailed, OSError, subprocess.TimeoutExpired):
            pass
        self.kill("stopped")

    def kill(self, reason: str = "replaced: killed") -> None:
        """Kills the worker and every process it started; the next case starts a fresh one."""
        if self.proc is None:
            return
        kill_tree(self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self._requests, self._control):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(OSError):
            os.close(self._reader.fd)
        if self._log_copier is not None:  # the log is complete before anyone reads its tail
            self._log_copier.join(timeout=5)
        self.proc, self._pending, self._spark, self._reason = None, None, False, reason

    def _lost(self) -> WorkerLost:
        code = self.proc.poll() if self.proc else None
        if code is None and self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout=2)
        pid = self.pid
        self.kill(f"replaced: the previous worker died (exit code {code})")
        return WorkerLost(f"the worker process (pid {pid}) died (exit code {code}); the end of its log "
                          f"{self.log_path}:\n{log_tail(self.log_path)}")

    def _spark_started(self, info: dict[str, Any]) -> None:
        self._spark = True
        self.spark_info = self.spark_info or info
        if self.starts:
            self.starts[-1]["spark_startup_s"] = info.get("startup_s")


def copy_scrubbed(fd: int, log_path: Path, secrets: list[str]) -> None:
    """Copies a worker's output from the pipe `fd` into its log line by line, secret values masked, until every
    process holding the pipe's other end has exited."""
    with os.fdopen(fd, "rb") as source, open(log_path, "ab") as log:
        for line in source:
            log.write(scrub(line.decode(errors="replace"), secrets).encode())
            log.flush()


def log_tail(path: Path, lines: int = 30) -> str:
    from .isolation import tail

    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            return tail(f.read().decode(errors="replace"), lines)
    except OSError:
        return "(no log)"


def kill_tree(pid: int) -> None:
    """Kills a process, its process group and every descendant, also those in sessions of their own (isolation
    children, launcher ranks). They are frozen first, so none starts another process while the tree is read."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.suspend()
    with contextlib.suppress(psutil.Error):
        procs += [c for c in root.children(recursive=True) if c not in procs]
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


# ---------------------------------------------------------------------------------------------- machine state

def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None


def _cpu_mhz() -> float | None:
    """The CPUs' current clock (mean over CPUs), where the kernel says it."""
    freqs = []
    for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        with contextlib.suppress(OSError, ValueError):
            freqs.append(int(p.read_text()) / 1000.0)
    if not freqs:
        with contextlib.suppress(OSError, ValueError):
            freqs = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("cpu MHz")]
    return round(sum(freqs) / len(freqs), 1) if freqs else None


class MachineProbe:
    """The machine's state over one case: 1-min load average at start and end, CPU steal share, CPU clock."""

    def __init__(self) -> None:
        self.load_start = os.getloadavg()[0]
        self.cpu = _cpu_times()
        self.notes: dict[str, Any] = {}

    def finish(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cores": os.cpu_count(), "load_start": round(self.load_start, 2),
                               "load_end": round(os.getloadavg()[0], 2)}
        end = _cpu_times()
        if self.cpu and end:
            delta = [b - a for a, b in zip(self.cpu, end)]
            if sum(delta) > 0:
                out["steal_share"] = round(delta[7] / sum(delta), 4)
        mhz = _cpu_mhz()
        if mhz:
            out["cpu_mhz"] = mhz
        return {**out, **self.notes}


def busy(machine: dict[str, Any]) -> str | None:
    """A warning when the machine was busier than its cores during the case, else None."""
    load = max(machine.get("load_start", 0), machine.get("load_end", 0))
    cores = machine.get("cores") or 0
    if cores and load > cores:
        return f"busy machine: load {load:.1f} > {cores} cores"
    return None


# ---------------------------------------------------------------------------------------------- the run

@contextlib.contextmanager
def signals_held():
    """Delays SIGINT/SIGTERM while a record is written, so an interrupt never cuts one in half."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Coordinator:
    """Runs cases one at a time on a worker and records each the moment it ends."""

    def __init__(self, run_id: str, results_file: Path, env_id: str, settings: Settings,
                 on_record: Callable[[Result], None] | None = None, progress: Progress | None = None,
                 secrets: list[str] | None = None, results: dict[str, Result] | None = None):
        self.run_id, self.results_file, self.env_id, self.settings = run_id, results_file, env_id, settings
        self.on_record = on_record
        self.progress = progress
        self.secrets = secrets or []
        self.results = dict(results or {})  # identity -> Result of this run (the earlier ones on --resume)

    def run(self, cases: list[CaseRun], worker: Worker, skip: set[str] = frozenset()) -> list[Result]:
        """Runs every case not in `skip`; raises Interrupted (from the signal handlers) with records kept."""
        todo = [c for c in cases if c.identity not in skip]
        self.progress = self.progress or Progress(len(todo))
        for r in self.results.values():
            worker.share(r)
        out = []
        for i, case in enumerate(todo, 1):
            self.progress.start_case(i, case.label)
            result = self.run_case(case, worker)
            with signals_held():
                record.append(self.results_file, result)
            self.results[result.identity] = result
            worker.share(result)
            if self.on_record:
                self.on_record(result)
            self.progress.end_case(summary(result))
            for warning in warnings_of(result):  # printed by the worker into its log: said here too
                self.progress.message(f"harness: warning: {result.name}: {scrub(warning, self.secrets)}")
            out.append(result)
        return out

    def run_case(self, case: CaseRun, worker: Worker) -> Result:
        """One case on `worker`: its record, whatever happens (ok, error, unavailable, timeout)."""
        s = self.settings.for_case(case)
        spec = case.spec
        progress = self.progress or Progress(1, quiet=True)
        worker.on_wait = progress.tick
        base = dict(run_id=self.run_id, experiment=spec.experiment, case=spec.name, params=case.params,
                    metric=spec.metric, unit=spec.unit, better=spec.better, env_id=self.env_id,
                    started_at=now_iso(), version=code_version(spec.build))
        warm: list[float] = []
        samples: list[float] = []
        probe = None
        via: dict[str, Any] = {}  # how the case reached Spark, when through a Spark Connect server
        try:
            worker.ensure_started()
            if spec.spark and not worker.spark_started:
                progress.update("starting Spark")  # recorded in env.json, not charged to this case
                worker.start_spark()
            if spec.spark:
                via = spark_route(worker)
            probe = MachineProbe()
            deadline = time.monotonic() + s.timeout_s
            progress.update("setup")
            built = worker.build(case, deadline)
            base["version"] = built.get("version") or base["version"]
            probe.notes.update({k: v for k, v in built.items() if k.startswith("spark_")})
            for phase, i, value in worker.samples(s.warmup, s.repeats, deadline):
                (warm if phase == "warmup" else samples).append(value)
                progress.update(f"{phase} {i + 1}/{s.warmup if phase == 'warmup' else s.repeats}: {value:.4g} s")
            progress.update("checking")
            extra = {**worker.finish(deadline), **via}
            if spec.roles:  # stored with the run, so the report reads them from the records
                extra["roles"] = dict(spec.roles)
            return Result(**base, samples=samples, warmup=warm, stats=summarize(samples), extra=extra, status="ok",
                          ended_at=now_iso(), machine=probe.finish())
        except CaseFailed as e:
            base["version"] = e.version or base["version"]
            return self._failed(base, e.status, e.error, warm, samples, probe, via)
        except Deadline:
            progress.update("past its timeout: cancelling")
            replaced = worker.abort()
            what = (f"{replaced}, so it was replaced by a fresh worker" if replaced
                    else "its Spark jobs and child processes were cancelled")
            return self._failed(base, "timeout", {
                "type": "TimeoutError",
                "message": f"case ran past its {s.timeout_s:g} s timeout (--timeout); {len(samples)} of "
                           f"{s.repeats} samples were taken; {what}"}, warm, samples, probe, via)
        except WorkerLost as e:
            return self._failed(base, "error", {"type": "WorkerLost", "message": str(e)}, warm, samples, probe,
                                via)

    def _failed(self, base: dict[str, Any], status: str, error: dict[str, str], warmup: list[float],
                samples: list[float], probe: MachineProbe | None, extra: dict[str, Any] | None = None) -> Result:
        message = scrub(error.get("message", ""), self.secrets)[-MAX_ERROR_CHARS:]
        return Result(**base, samples=list(samples), warmup=list(warmup), stats=summarize(samples), status=status,
                      extra=dict(extra or {}),
                      error={"type": error.get("type", status), "message": message}, ended_at=now_iso(),
                      machine=probe.finish() if probe else {})


def summary(r: Result) -> str:
    """The progress line's end of a case."""
    if r.status == "ok" and r.stats.get("n"):
        s = r.stats
        text = f"ok  median {s['median']:.4g} {r.unit} [{s['ci_low']:.4g}, {s['ci_high']:.4g}] n={s['n']}"
    elif r.status == "ok":
        text = "ok"
    else:
        first = (r.error or {}).get("message", "").strip().splitlines()
        text = f"{r.status.upper()}: {first[0][:150] if first else ''}"
    warning = busy(r.machine)
    return f"{text}  [{warning}]" if warning else text


def warnings_of(r: Result) -> list[str]:
    """What a record says the user must know beyond its status (the worker's own warnings go to its log only):
    a launcher that listens beyond loopback, corrupt input files skipped, Spark figures cut short."""
    out = []
    if r.extra.get("listens_beyond_loopback"):
        out.append(str(r.extra["listens_beyond_loopback"]))
    if r.extra.get("corrupt_files"):
        out.append(f"{r.extra['corrupt_files']} corrupt JPEG file(s) in --data were skipped")
    spark = r.extra.get("spark")
    if isinstance(spark, dict) and spark.get("incomplete"):
        out.append(f"Spark metrics: {spark['incomplete']}")
    return out


def run_summary(results: list[Result]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def any_failed(results: list[Result]) -> bool:
    """Whether a case failed or timed out (ok, unavailable and skipped cases are not failures)."""
    return any(r.status in ("error", "timeout") for r in results)
