"""Figures read off records, shared by the report, `harness show` and `harness export`: medians, intervals with
their real coverage, the cases a record is judged against, labels and cells. Pure: no files, no drawing.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

from .. import stats as _stats
from ..record import Result

WORKERS_AXIS = "workers"  # a record with this param is a point on a scaling curve, judged against 1 worker
BASE_WORKERS = 1
QUALITY_KEYS = ("test_r2", "test_accuracy")  # extras holding a model's final test quality


# --------------------------------------------------------------------------------------------- numbers

def median(r: Result) -> float | None:
    m = (r.stats or {}).get("median")
    return float(m) if _finite(m) else None


def interval(r: Result) -> tuple[float, float]:
    """The median's confidence interval (the median itself where the record has none)."""
    m = median(r)
    lo, hi = (r.stats or {}).get("ci_low"), (r.stats or {}).get("ci_high")
    return (float(lo) if _finite(lo) else m), (float(hi) if _finite(hi) else m)


def ci_level(r: Result) -> float | None:
    """The interval's real coverage: the record's `ci_level`, or (records written before it was stored) the
    coverage of the order-statistic interval for its n."""
    s = r.stats or {}
    if _finite(s.get("ci_level")):
        return float(s["ci_level"])
    n = s.get("n")
    return _stats.median_ci_coverage(int(n)) if isinstance(n, int) and n > 0 else None


def percent(level: float | None) -> str:
    """0.9375 -> '93.8%', 0.75 -> '75%'."""
    if level is None or not math.isfinite(level):
        return "?"
    return f"{level * 100:.1f}".rstrip("0").rstrip(".") + "%"


def ci_header(records: list[Result]) -> str:
    """'93.8% CI' when every record's interval has that coverage, else 'CI (coverage)': each cell says its own."""
    levels = {percent(ci_level(r)) for r in records}
    return f"{levels.pop()} CI" if len(levels) == 1 else "CI (coverage)"


def interval_text(r: Result, with_level: bool = False) -> str:
    lo, hi = interval(r)
    text = f"{fmt(lo)} – {fmt(hi)}"
    return text + f" ({percent(ci_level(r))})" if with_level else text


def interval_cell(r: Result, records: list[Result]) -> str:
    """An interval for a table whose header is `ci_header(records)`: the coverage in the cell only when the
    header cannot state one for all."""
    return interval_text(r, with_level=ci_header(records) == "CI (coverage)")


def usable(results: list[Result]) -> list[Result]:
    """ok records with at least one sample: the only ones a chart or a verdict may use."""
    return [r for r in results if r.status == "ok" and median(r) is not None]


def gain(value: float | None, reference: float | None, better: str) -> float | None:
    """How many times better `value` is than `reference` (> 1 is better), for either direction of metric."""
    if not value or not reference:
        return None
    return reference / value if better == "lower" else value / reference


def clear_of(a: tuple[float, float], b: tuple[float, float], better: str) -> bool:
    """Is interval a entirely on the better side of interval b (no overlap)?"""
    return a[1] < b[0] if better == "lower" else a[0] > b[1]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------------- params

def sort_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v, "")
    return (1, 0, str(v))


def varying_keys(records: list[Result]) -> list[str]:
    """Params taking more than one value among the records that have them."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in r.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, vs in values.items() if len(vs) > 1)


def shared_varying(records: list[Result]) -> list[str]:
    """Varying params that every record has: the keys rows are grouped by."""
    if not records:
        return []
    common = set.intersection(*(set(r.params) for r in records))
    return [k for k in varying_keys(records) if k in common]


def constant_params(records: list[Result]) -> dict[str, Any]:
    """Params every record has with the same value: said once, above a table, not in every row."""
    if not records:
        return {}
    common = set.intersection(*(set(r.params) for r in records))
    return {k: records[0].params[k] for k in sorted(common) if k not in varying_keys(records)}


def compatible(a: Result, b: Result) -> int:
    """-1 when a param both records have differs, else how many params they share (a better match is higher)."""
    common = set(a.params) & set(b.params)
    if any(a.params[k] != b.params[k] for k in common):
        return -1
    return len(common)


def best_match(r: Result, candidates: list[Result]) -> Result | None:
    """The candidate agreeing with r on every shared param and sharing the most; the first one on a tie."""
    best, best_score = None, -1
    for c in candidates:
        s = compatible(r, c)
        if s > best_score:
            best, best_score = c, s
    return best


# --------------------------------------------------------------------------------------------- roles

def roles(r: Result) -> dict[str, str]:
    """The cases r is judged against ({"reference": ..., "limit": ...}), as declared where the case is
    registered: stored in the record (extra["roles"]); records written before roles were stored fall back to
    the registry's current declaration."""
    stored = r.extra.get("roles")
    if isinstance(stored, dict):
        return {k: v for k, v in stored.items() if isinstance(v, str)}
    return dict(_declared_roles().get((r.experiment, r.case), {}))


@functools.lru_cache(maxsize=1)
def _declared_roles() -> dict[tuple[str, str], dict[str, str]]:
    try:
        from ..registry import load_all

        return {(e.id, c.name): dict(c.roles) for e in load_all().values() for c in e.cases.values()}
    except Exception:  # noqa: BLE001 - an experiment module that cannot load costs old records their roles only
        return {}


def limit_cases(records: list[Result]) -> set[str]:
    """Cases some record names as its limit: drawn as reference lines, left out of 'which wins'."""
    return {roles(r)["limit"] for r in records if roles(r).get("limit")}


def workers_of(r: Result) -> int | None:
    """Workers that really ran: the record's `workers` extra where the case capped the asked-for count (GPUs)."""
    for w in (r.extra.get(WORKERS_AXIS), r.params.get(WORKERS_AXIS)):
        if isinstance(w, int) and not isinstance(w, bool) and w > 0:
            return w
    return None


def throughput(r: Result) -> tuple[float, float, float, str] | None:
    """(value, ci_low, ci_high, label) of a scaling point: a higher-is-better metric, else a samples_per_s extra
    (no interval)."""
    if r.better == "higher" and median(r) is not None:
        lo, hi = interval(r)
        return median(r), lo, hi, metric_label(r.metric, r.unit)
    v = r.extra.get("samples_per_s")
    if _finite(v) and v > 0:
        return float(v), float(v), float(v), "samples/s"
    return None


def is_scaling_point(r: Result) -> bool:
    return WORKERS_AXIS in r.params and workers_of(r) is not None and throughput(r) is not None


def reference_record(r: Result, candidates: list[Result]) -> Result | None:
    """The record r's speedup is taken against: its reference case with matching params, or, for a scaling
    point, the same case and params at 1 worker. None when there is none (or r has no reference)."""
    ref_case = roles(r).get("reference")
    if ref_case:
        if ref_case == r.case:
            return r
        return best_match(r, [c for c in candidates if c.experiment == r.experiment and c.case == ref_case])
    if is_scaling_point(r):
        same = {k: v for k, v in r.params.items() if k != WORKERS_AXIS}
        for c in candidates:
            if (c.experiment, c.case) == (r.experiment, r.case) and workers_of(c) == BASE_WORKERS \
                    and {k: v for k, v in c.params.items() if k != WORKERS_AXIS} == same:
                return c
    return None


def speedup(r: Result, candidates: list[Result]) -> tuple[float, Result] | None:
    """r's gain over its reference record (throughput ratio for scaling points), and that record."""
    ref = reference_record(r, candidates)
    if ref is None:
        return None
    if is_scaling_point(r) and not roles(r).get("reference"):
        g = throughput(r)[0] / throughput(ref)[0] if throughput(ref) else None
    else:
        g = gain(median(r), median(ref), r.better)
    return (g, ref) if g else None


def quality(r: Result) -> tuple[str, float] | None:
    """(name, value) of a model's final test quality, where the record has one."""
    named = r.extra.get("target_metric")
    for key in ([f"test_{named}"] if isinstance(named, str) else []) + list(QUALITY_KEYS):
        if _finite(r.extra.get(key)):
            return key.removeprefix("test_"), float(r.extra[key])
    return None


# --------------------------------------------------------------------------------------------- text

def fmt(v: Any) -> str:
    """A cell: 4 significant digits for floats, plain text otherwise."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.0f}" if 1e4 <= abs(v) < 1e15 else f"{v:.4g}"  # 3,661,082 rows/s, not 3.661e+06
    if isinstance(v, (list, dict)):
        return f"[{len(v)} items]"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def times(g: float | None) -> str:
    """A ratio as '2.58×' (3 significant digits)."""
    return "—" if g is None else f"{g:.3g}×"


def params_text(params: dict[str, Any], keys: list[str] | None = None) -> str:
    keys = sorted(params) if keys is None else keys
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)


def label(r: Result, keys: list[str]) -> str:
    """The case name and the given params: what tells a record apart from its neighbours."""
    return " ".join([r.case] + [f"{k}={r.params[k]}" for k in keys if k in r.params])


def metric_label(metric: str, unit: str) -> str:
    """'wall_s', 's' -> 'wall time (s)'; 'rows_per_s', 'rows/s' -> 'rows/s': the unit is said once."""
    if metric.replace("_per_", "/") == unit.replace(" ", ""):
        return unit
    name = metric[: -len(unit) - 1] if metric.endswith("_" + unit) else metric
    name = {"wall": "wall time"}.get(name, name.replace("_", " "))
    return f"{name} ({unit})"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "chart"
