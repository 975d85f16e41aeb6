"""`harness show [RUN_DIR]`: one run as a compact table that fits an 80-column terminal.

Per experiment and metric, one line per case: its median, the median's interval with its real coverage, its
speedup over its reference case, its test quality where it has one, its status. Then the cases that did not
finish ok, and the answers the run gives (report/answers.py).
"""
from __future__ import annotations

import textwrap

from .. import storage
from ..record import Result
from ..report.answers import answer_all
from ..report.records import (ci_level, constant_params, interval, label, median, metric_label, params_text, percent,
                              quality, speedup, varying_keys)
from . import EXIT_OK, error, pick_run

WIDTH = 80
# fixed widths of the columns after the case and the interval (which take what is left)
MEDIAN, SPEEDUP, QUALITY, STATUS_W = 8, 7, 8, 8
STATUS = {"unavailable": "unavail."}


def run(args) -> int:
    try:
        loaded = storage.load_run(pick_run(args.run_dir, args.results))
    except storage.UnusableInput as e:
        return error(str(e))
    print("\n".join(lines(loaded)))
    return EXIT_OK


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short(v: float) -> str:
    """A number in at most 7 characters: 4 significant digits, k/M/G above 10,000 (1.086M, 14.45, 0.3475)."""
    for above, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= above:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:.4g}"


def _keys(r: Result, by_case: dict[str, list[Result]]) -> list[str]:
    """The params that tell r from the other records of its case, the one with most values first."""
    same_case = by_case[r.case]
    values = {k: len({repr(x.params.get(k)) for x in same_case}) for k in varying_keys(same_case)}
    return sorted(values, key=lambda k: (-values[k], k))


def table(rs: list[Result], results: list[Result]) -> list[str]:
    """The rows of one experiment and metric, columns sized to fit WIDTH."""
    levels = {percent(ci_level(r)) for r in rs if r.status == "ok" and median(r) is not None}
    one_level = levels.pop() if len(levels) == 1 else None
    by_case: dict[str, list[Result]] = {}
    for r in rs:
        by_case.setdefault(r.case, []).append(r)
    cells = []
    for r in rs:
        name = label(r, _keys(r, by_case))
        if r.status != "ok" or median(r) is None:
            cells.append([name, "—", "—", "—", "—", STATUS.get(r.status, r.status)])
            continue
        lo, hi = interval(r)
        found = speedup(r, results)
        q = quality(r)
        cells.append([name, short(median(r)), f"{short(lo)}–{short(hi)}"
                      + ("" if one_level else f" {percent(ci_level(r))}"),
                      "ref" if found and found[1] is r else (f"{found[0]:.3g}×" if found else "—"),
                      f"{q[0]} {q[1]:.3g}" if q else "—", r.status])
    head = ["case", "median", f"{one_level} CI" if one_level else "CI (coverage)", "speedup", "quality", "status"]
    ci_w = max(len(c[2]) for c in cells + [head])
    widths = [WIDTH - (MEDIAN + ci_w + SPEEDUP + QUALITY + STATUS_W) - 5, MEDIAN, ci_w, SPEEDUP, QUALITY, STATUS_W]
    return [" ".join(_cut(c, w).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head] + cells]


def lines(loaded: storage.LoadedRun) -> list[str]:
    results = loaded.results
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    out = [_cut(f"run {loaded.label}: {len(results)} case(s), "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"  ({loaded.path})", WIDTH)]
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        groups.setdefault((r.experiment, r.metric, r.unit, r.better), []).append(r)
    for (exp, metric, unit, better), rs in groups.items():
        same = params_text(constant_params(rs))
        out += ["", _cut(f"{exp}: median {metric_label(metric, unit)}, {better} is better"
                         + (f"; all {same}" if same else ""), WIDTH)]
        out += table(rs, results)
    failed = [r for r in results if r.status in ("error", "timeout", "unavailable")]
    if failed:
        out += ["", "not ok:"]
        for r in failed:
            first = ((r.error or {}).get("message") or "").strip().splitlines()
            out.append(_cut(f"  {r.name} {params_text(r.params, varying_keys(results))}: {r.status}: "
                            f"{first[0] if first else ''}", WIDTH))
    answered = [a for a in answer_all(results) if a.measured]
    if answered:
        out += ["", "answers (a winner only where its interval is clear of the runner-up's):"]
        for a in answered:
            out += textwrap.wrap(f"{a.question} {a.verdict}", WIDTH, initial_indent="- ", subsequent_indent="  ")
    return out
