"""`harness export [RUN_DIR] --format csv|parquet [--out FILE]`: one row per record, for people who analyse
elsewhere (pandas, R, a spreadsheet).

Record fields are columns as they are; stats, params, extras and the machine figures are flattened with
prefixes (`stats.median`, `param.rows`, `extra.rows_per_s`, `extra.roles.reference`, `machine.load_start`).
Lists (samples, quality series) are JSON text. `stats.ci_level` is filled in for records written before it was
stored (computed from n, as the report does).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .. import storage
from ..record import Result
from ..report.records import ci_level
from . import EXIT_OK, error, pick_run

FORMATS = ("csv", "parquet")
FIELDS = ("run_id", "experiment", "case", "status", "metric", "unit", "better", "version", "env_id",
          "started_at", "ended_at")


def run(args) -> int:
    fmt = str(args.format).lower()
    if fmt not in FORMATS:
        return error(f"--format {args.format}: unknown format; use --format csv or --format parquet")
    try:
        loaded = storage.load_run(pick_run(args.run_dir, args.results))
    except storage.UnusableInput as e:
        return error(str(e))
    out = Path(args.out) if args.out else loaded.path / f"results.{fmt}"
    if out.is_dir():
        out = out / f"results.{fmt}"
    table = rows(loaded.results)
    try:
        (write_csv if fmt == "csv" else write_parquet)(table, out)
    except ImportError as e:
        return error(f"--format parquet needs pyarrow ({e}); install it, or use --format csv")
    except OSError as e:
        return error(f"{out}: cannot write there ({e.strerror or e}); pass --out FILE somewhere writable")
    print(f"export: {out} ({len(table)} rows, {len(columns(table))} columns)")
    return EXIT_OK


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, into)
    elif isinstance(value, (list, tuple)):
        into[prefix] = json.dumps(value)
    else:
        into[prefix] = value


def row(r: Result) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(r, f) for f in FIELDS}
    stats = dict(r.stats or {})
    if stats.get("n"):
        stats["ci_level"] = ci_level(r)
    for prefix, part in (("stats", stats), ("param", r.params), ("extra", r.extra), ("machine", r.machine)):
        _flatten(prefix, part or {}, out)
    out["error_type"] = (r.error or {}).get("type")
    out["error_message"] = (r.error or {}).get("message")
    out["samples"] = json.dumps(r.samples)
    out["warmup"] = json.dumps(r.warmup)
    return out


def rows(results: list[Result]) -> list[dict[str, Any]]:
    return [row(r) for r in results]


def columns(table: list[dict[str, Any]]) -> list[str]:
    """Every column any row has: record fields first, then the prefixed groups in first-seen order."""
    cols: dict[str, None] = {}
    for r in table:
        cols.update(dict.fromkeys(r))
    return list(cols)


def write_csv(table: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns(table), restval="")
        w.writeheader()
        w.writerows(table)


def _column_values(values: list[Any]) -> list[Any]:
    """One type per Parquet column: numbers stay numbers (ints widened to float beside floats), bools stay bools;
    a column mixing anything else becomes text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int} or kinds <= {bool} or kinds <= {str}:
        return values
    if kinds <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values]


def write_parquet(table: list[dict[str, Any]], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = columns(table)
    data = {c: _column_values([r.get(c) for r in table]) for c in cols}
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), out)
