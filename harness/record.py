"""The one Result record (DESIGN.md), and reading/writing `results.jsonl`.

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
