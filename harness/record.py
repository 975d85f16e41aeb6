"""The one Result record (docs/DESIGN.md), and reading/writing `results.jsonl`.

A record is appended and flushed (and fsynced) as soon as its case ends, so an interrupted run keeps every
finished case. Reading is forgiving: a malformed line is reported by number and skipped, the rest still loads.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA = 1
STATUSES = ("ok", "error", "timeout", "unavailable", "skipped")
RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"


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
    """Appends one record and forces it to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(result.to_dict(), sort_keys=False, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: Path) -> tuple[list[Result], list[str]]:
    """Reads a results file; returns (records, problems), one problem per malformed line, naming it."""
    results, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                results.append(Result.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:
                problems.append(f"{path}:{lineno}: malformed record skipped ({e})")
    return results, problems


def results_path(run_or_file: Path) -> Path:
    """Accepts a run folder or a results.jsonl path."""
    p = Path(run_or_file)
    return p / RESULTS_FILE if p.is_dir() else p


class RunDirError(ValueError):
    """A path that holds no usable run; the message names it and the fix."""


@dataclass
class RunData:
    results_file: Path
    results: list[Result]  # the latest record per identity, in file order
    env: dict[str, Any] | None  # env.json, or None when missing or unreadable
    problems: list[str]  # malformed lines, a missing or broken env.json


def load_run(path: Path) -> RunData:
    """Reads a run folder (or its results.jsonl) and the env.json beside it, for reports and comparisons.

    Raises RunDirError when nothing usable is there; smaller problems are listed and the rest is kept.
    """
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: no such run folder or results file; pass a folder written by `harness run` "
                          f"(RESULTS/<run_id>) or its {RESULTS_FILE}")
    results_file = results_path(p)
    if not results_file.is_file():
        raise RunDirError(f"{p}: not a run folder (no {RESULTS_FILE} in it); pass a folder written by "
                          "`harness run` (RESULTS/<run_id>)")
    try:
        results, problems = read(results_file)
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{results_file}: unreadable ({e}); is it a results file written by `harness run`?") from None
    if not results:
        detail = f" ({len(problems)} malformed line(s), first: {problems[0]})" if problems else " (it is empty)"
        raise RunDirError(f"{results_file}: holds no readable records{detail}; rerun the cases, or pass another "
                          "run folder")
    env_file = results_file.parent / ENV_FILE
    env = None
    if not env_file.is_file():
        problems.append(f"{env_file}: missing, so the machine and software are unknown "
                        "(`harness run` writes it; copy it from the machine that made the run)")
    else:
        try:
            env = json.loads(env_file.read_text(encoding="utf-8"))
            if not isinstance(env, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            env = None
            problems.append(f"{env_file}: unreadable ({e}); the machine and software are unknown")
    return RunData(results_file, dedupe_latest(results), env, problems)


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (temp file + rename) so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def dedupe_latest(results: Iterable[Result]) -> list[Result]:
    """Keeps the last record per identity (a resumed run may retry a case)."""
    latest: dict[str, Result] = {}
    for r in results:
        latest[r.identity] = r
    return list(latest.values())
