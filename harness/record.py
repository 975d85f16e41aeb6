"""The one Result record (docs/DESIGN.md), and reading/writing `results.jsonl`.

A record is appended and fsynced as soon as its case ends, so an interrupted run keeps every finished case;
a write that fails (full disk) is undone and raises StorageError. Reading is forgiving: a malformed or
non-UTF-8 line is reported by number and skipped, the rest still loads; a last line cut short by a crash (a
torn tail) is reported as such, and `set_aside_torn_tail` moves it out before a resumed run appends.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

SCHEMA = 1
STATUSES = ("ok", "error", "timeout", "unavailable", "skipped")
RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"
LOCK_FILE = ".lock"  # held (flock) by the `harness run` writing the folder; holds its pid


class StorageError(OSError):
    """A results file or folder that cannot be read or written (permissions, full disk, not a file).

    str() is one line: what could not be done to which path, the OS's reason, and the fix."""

    def __init__(self, path: Path, doing: str, err: OSError, fix: str | None = None):
        super().__init__(err.errno, err.strerror or str(err))
        self.path, self.doing = Path(path), doing
        self.fix = fix or self._default_fix()

    def _default_fix(self) -> str:
        if self.errno in (errno.ENOSPC, errno.EDQUOT):
            return ("free some space there (what is already recorded is kept), or pass --results DIR on "
                    "another disk")
        if self.errno in (errno.EEXIST, errno.ENOTDIR):
            return "a file is in the way: move it, or pass another --run-id or --results"
        if self.doing.startswith("read"):
            return "check that it is a file written by `harness run` and readable by you"
        return "make that folder writable, or pass --results DIR somewhere writable"

    def __str__(self) -> str:
        return f"cannot {self.doing} {self.path}: {self.strerror}; {self.fix}"


class RunLocked(Exception):
    """Another `harness run` holds the run folder's lock."""


@dataclass
class Result:
    """One case's outcome: identity (experiment, case, params), samples and stats, status."""

    run_id: str
    experiment: str
    case: str
    params: dict[str, Any]
    metric: str = "wall_s"
    unit: str = "s"
    better: str = "lower"  # "lower" for times, "higher" for throughputs
    samples: list[float] = field(default_factory=list)  # measured repeats, warm-ups excluded
    warmup: list[float] = field(default_factory=list)  # cold / warm-up samples, kept apart
    stats: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-experiment figures, unit in each key
    status: str = "ok"
    error: dict[str, str] | None = None  # {"type", "message"}
    env_id: str = ""
    started_at: str = ""
    ended_at: str = ""
    version: str | None = None  # the case's code version (registry.code_version); None in older records
    # the machine during the case: cores, load_start/load_end (1-min load average), steal_share, cpu_mhz
    machine: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def name(self) -> str:
        return f"{self.experiment}.{self.case}"

    @property
    def identity(self) -> str:
        """Stable key used by --resume, compare and reports: experiment + case + sorted params."""
        return identity(self.experiment, self.case, self.params)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"] = dict(sorted(self.params.items()))
        return {"schema": d.pop("schema"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"run_id", "experiment", "case", "params"} - d.keys()
        if missing:
            raise ValueError(f"missing field(s): {', '.join(sorted(missing))}")
        if d.get("status", "ok") not in STATUSES:
            raise ValueError(f"unknown status {d.get('status')!r}")
        return cls(**{k: v for k, v in d.items() if k in known})


def identity(experiment: str, case: str, params: dict[str, Any]) -> str:
    return f"{experiment}.{case}" + json.dumps(params, sort_keys=True, separators=(",", ":"))


def append(path: Path, result: Result) -> None:
    """Appends one record and forces it to disk before returning.

    A write that fails part-way (a full disk) is cut back off, so the file never ends in half a record;
    the failure is raised as StorageError.
    """
    line = (json.dumps(result.to_dict(), sort_keys=False, allow_nan=True) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise StorageError(path, "append a record to", e) from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # the torn tail is then found and set aside by the next --resume
            raise StorageError(path, "append a record to", e) from None
    finally:
        os.close(fd)


def _parse_line(raw: bytes) -> Result:
    """One JSONL line -> Result; ValueError naming what is wrong (not UTF-8, not JSON, not a record)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text at byte {e.start + 1}") from None
    return Result.from_dict(json.loads(text))


def read(path: Path) -> tuple[list[Result], list[str]]:
    """Reads a results file; returns (records, problems), one problem per bad line, naming it.

    Lines are decoded one by one, so a line of another encoding costs that line only. A last line without
    its newline that does not parse is reported as a torn tail, not as garbage. Raises StorageError when the
    file cannot be read at all.
    """
    results, problems = [], []
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    results.append(_parse_line(raw))
                except (ValueError, TypeError) as e:
                    if raw.endswith(b"\n"):
                        problems.append(f"{path}:{lineno}: malformed record skipped ({e})")
                    else:
                        problems.append(f"{path}:{lineno}: torn last line skipped ({len(raw)} bytes cut short "
                                        "by a crash or a full disk); `harness run ... --resume` sets it aside "
                                        "and reruns its case")
    except OSError as e:
        raise StorageError(path, "read", e) from None
    return results, problems


def set_aside_torn_tail(path: Path) -> Path | None:
    """Moves a torn last line (a record cut short by a crash or a full disk) out of a results file.

    The fragment goes to `<file>.torn-<UTC time>` and the file is cut back to its last complete line, so the
    next record starts on a line of its own and the torn record's case is run again. Returns the fragment's
    path, or None when the file ends cleanly. A last line that is a whole record missing only its newline
    gets the newline instead.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise StorageError(path, "read", e) from None
    cut = data.rfind(b"\n") + 1
    fragment = data[cut:]
    if not fragment:
        return None
    try:
        _parse_line(fragment)
        whole = True
    except (ValueError, TypeError):
        whole = False
    try:
        if whole:  # only the newline was lost
            with open(path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside, n = path.with_name(f"{path.name}.torn-{stamp}"), 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.torn-{stamp}-{n}")
        with open(aside, "xb") as out:
            out.write(fragment)
            out.flush()
            os.fsync(out.fileno())
        with open(path, "rb+") as f:
            f.truncate(cut)
            os.fsync(f.fileno())
        return aside
    except OSError as e:
        raise StorageError(path, "set aside the torn last line of", e) from None


def claim_run_dir(run_dir: Path):
    """Makes a run folder ready for this process to write: creates it, locks it (flock on RUN_DIR/.lock,
    which then holds our pid) and checks that files can be written there. Returns the open lock file: keep it
    referenced while the run writes. The kernel drops the lock when the process ends, however it ends.

    Raises RunLocked naming the holder's pid, StorageError when the folder cannot be made or written.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(run_dir, "create the run folder", e) from None
    path = run_dir / LOCK_FILE
    try:
        f = open(path, "a+", encoding="utf-8")
    except OSError as e:
        raise StorageError(run_dir, "write in", e) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunLocked(f"{run_dir} is being written by another `harness run` (pid {holder}); wait for it to "
                        "end, or pass another --run-id") from None
    except OSError as e:
        f.close()
        raise StorageError(path, "lock", e) from None
    try:
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
    except OSError as e:
        f.close()
        raise StorageError(path, "write", e) from None
    try:
        check_writable(run_dir)
    except StorageError:
        f.close()
        raise
    return f


def check_writable(folder: Path, fix: str | None = None) -> None:
    """Raises StorageError unless a file can be created in `folder` (tried for real, not guessed from modes)."""
    probe = Path(folder) / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"probe")
        probe.unlink()
    except OSError as e:
        raise StorageError(folder, "write in", e, fix) from None


def results_path(run_or_file: Path) -> Path:
    """Accepts a run folder or a results.jsonl path."""
    p = Path(run_or_file)
    return p / RESULTS_FILE if p.is_dir() else p


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (temp file + rename) so a crash never leaves half a file; StorageError on failure."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(path, "write", e) from None


def dedupe_latest(results: Iterable[Result]) -> list[Result]:
    """Keeps the last record per identity (a resumed run may retry a case)."""
    latest: dict[str, Result] = {}
    for r in results:
        latest[r.identity] = r
    return list(latest.values())
