"""Which charts and tables the report shows, planned from the records' generic fields. Pure: no drawing here
(draw.py turns each chart's plot into a PNG), so every view can be tested as data.

Per experiment: medians with interval whiskers per case, grouped by the params that vary, with each case's
speedup over its reference and its distance to its limit in the table under the chart (references and limits
come from the records' roles); throughput and efficiency against workers for records with a `workers` param;
quality-against-time curves from extras holding [wall_s, metric] pairs; streaming sweeps (an `input_rate` param
with latency percentile extras) as latency against input rate, the knee marked. Several runs also get each case
side by side, with `harness compare`'s verdict (decide.compare, the same unpaired decision).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .. import decide
from ..render import change_percent
from ..record import Result
from .records import (BASE_WORKERS, WORKERS_AXIS, best_match, ci_header, ci_level, clear_of, constant_params, fmt,
                      gain, interval, interval_cell, interval_text, is_scaling_point, label, limit_cases, median,
                      metric_label, params_text, percent, roles, shared_varying, slug, sort_key, speedup,
                      throughput, times, usable, varying_keys, workers_of)

MODE_AXIS = "mode"  # weak / strong scaling, never mixed on one chart
DEVICE_AXIS = "device"
CURVE_FACETS = ("task", "dataset", "data")  # params that change what a quality curve's metric means
CURVE_METRIC_KEYS = ("target_metric", "quality_metric", "test_metric", "metric_name")  # extras naming the metric
CURVE_TARGET_KEY = "target"  # the quality a model must reach (time_to_target_s), drawn as a line when shared
MAX_ROWS = 36  # more rows than this are split over several charts, so labels stay readable
MAX_EXTRA_COLUMNS = 4  # extras beside the times in a table; every extra is in `harness export`
LOG_RANGE = 30  # values spanning more than this factor are drawn on a log axis (as dots: bar length means nothing)
# extras a table never shows: checksums, and ratios the table already computes from the records
HIDDEN_EXTRA_PREFIXES = ("checksum", "speedup_vs_", "slowdown_vs_", "cold_speedup_vs_")


# ---------------------------------------------------------------------------------------------- the plan

@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Point:
    """One dot or bar: a median and its interval; `series` picks its colour."""

    label: str
    value: float
    low: float
    high: float
    series: str


@dataclass
class Group:
    """Rows drawn together under a bold title; `limit` is drawn as a dashed line across them."""

    title: str
    points: list[Point]
    limit: Point | None = None


@dataclass
class DotsPlot:
    """Medians with interval whiskers, one row each: bars on a linear axis, dots on a log axis."""

    groups: list[Group]
    axis_label: str
    log: bool
    series: list[str]  # colour order
    legend_title: str = ""  # set when the colours mean something the row labels don't say (runs)


@dataclass
class ScalingLine:
    name: str
    points: list[tuple[int, float, float, float, float | None]]  # workers, throughput, low, high, efficiency
    base: float | None  # throughput at BASE_WORKERS, for the ideal line


@dataclass
class ScalingPlot:
    lines: list[ScalingLine]
    axis_label: str


@dataclass
class PredictionPlot:
    """The communication model's predicted efficiency against workers (log axis), a line per launcher and
    network, with the measured points and their intervals on top; points the model missed are marked."""

    lines: list[tuple[str, list[int], list[float]]]  # name, workers, predicted efficiency
    points: list[tuple[str, int, float, float, float, bool]]  # name, workers, efficiency, low, high, missed


@dataclass
class CurvesPlot:
    lines: list[tuple[str, list[tuple[float, float]]]]
    metric: str
    target: float | None


@dataclass
class LatencyPlot:
    """Streaming: latency percentiles and sustained rows/s against the offered input rate, the knee marked."""

    rates: list[float]
    latencies: dict[str, list[float | None]]  # "p50" / "p95" / "p99" -> one value per rate (seconds)
    sustained: list[float | None]  # rows/s the query really processed, per rate
    kept_up: list[bool]
    knee: float | None  # the highest rate up to which every rate kept up


Plot = Union[DotsPlot, ScalingPlot, CurvesPlot, LatencyPlot, PredictionPlot]


@dataclass
class Chart:
    title: str
    plot: Plot
    table: Table
    note: str = ""
    height_in: float = 4.0
    png: Path | None = None  # set once drawn
    failed: str = ""  # why drawing failed, shown in place of the image


@dataclass
class Section:
    title: str
    anchor: str
    items: list[Any] = field(default_factory=list)  # Chart | Table | str (a note)
    intro: str = ""

    def charts(self) -> list[Chart]:
        return [i for i in self.items if isinstance(i, Chart)]


def plan_views(runs: list, paired: dict | None = None) -> list[Section]:
    """Every view of the page, in page order (runs are storage.LoadedRun); charts are drawn later. `paired` is an
    `harness ab` decision (ab.json): its paired verdicts replace the unpaired side-by-side comparison."""
    log_axes = axis_scales([r for run in runs for r in usable(run.results)])
    sections: list[Section] = []
    if paired is not None:
        sections.append(paired_section(paired))
    elif len(runs) > 1:
        sections += side_by_side(runs, log_axes)
    for run in runs:
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        by_exp: dict[str, list[Result]] = {}
        for r in run.results:
            by_exp.setdefault(r.experiment, []).append(r)
        for exp, records in by_exp.items():
            sec = Section(f"{prefix}{exp}", slug(f"{run.label}-{exp}"))
            ok = usable(records)
            if not ok:
                sec.items.append(f"No case of {exp} finished ok in this run: nothing to chart "
                                 "(see the problems listed in the summary).")
            else:
                if not all(is_scaling_point(r) for r in ok):  # else the scaling charts already show every record
                    sec.items += comparison(exp, ok, log_axes)
                sec.items += scaling(exp, ok)
                sec.items += predicted_scaling(exp, ok)
                sec.items += curves(exp, ok)
                sec.items += latency_vs_rate(exp, ok)
            sections.append(sec)
    return sections


# ---------------------------------------------------------------------------------------------- grouping

def by_metric(records: list[Result]) -> dict[tuple[str, str, str], list[Result]]:
    out: dict[tuple[str, str, str], list[Result]] = {}
    for r in records:
        out.setdefault((r.metric, r.unit, r.better), []).append(r)
    return out


def families(records: list[Result]) -> list[tuple[str, list[Result]]]:
    """Cases linked by their roles (a case, its reference, its limit) are charted together, apart from other
    such families (reads apart from whole pipelines, feeders apart from trainings); cases without roles share
    one chart. Returns (family key, records) in first-seen order; the key of the unlinked cases is ''."""
    parent: dict[str, str] = {}

    def root(c: str) -> str:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for r in records:
        for other in roles(r).values():
            if other != r.case:
                parent.setdefault(r.case, r.case)
                parent.setdefault(other, other)
                parent[root(r.case)] = root(other)
    # a family's key is its alphabetically first case name: the same whatever order the records come in
    key = {}
    for name in sorted(parent):
        key.setdefault(root(name), name)
    out: dict[str, list[Result]] = {}
    for r in records:
        out.setdefault(key[root(r.case)] if r.case in parent else "", []).append(r)
    return list(out.items())


def axis_scales(records: list[Result]) -> dict[tuple, bool]:
    """Log axis or not, per (experiment, metric, family), decided once from every run's records, so two charts
    of the same cases (parts, runs side by side) never switch scale."""
    out = {}
    for exp, recs in _group(records, lambda r: r.experiment).items():
        for (metric, _, _), rs in by_metric(recs).items():
            for fam, members in families(rs):
                values = [median(r) for r in members]
                pos = [v for v in values if v and v > 0]
                out[(exp, metric, fam)] = len(pos) == len(values) > 1 and max(pos) / min(pos) > LOG_RANGE
    return out


def _group(records: list[Result], key) -> dict[Any, list[Result]]:
    out: dict[Any, list[Result]] = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def _family_title(exp: str, fam_records: list[Result], n_families: int) -> str:
    if n_families == 1:
        return exp
    names = ", ".join(dict.fromkeys(r.case for r in fam_records))
    return f"{exp} ({names if len(names) <= 70 else names[:67] + '...'})"


# ---------------------------------------------------------------------------------------------- per case

def comparison(exp: str, ok: list[Result], log_axes: dict[tuple, bool] | None = None) -> list[Chart]:
    """Median + interval per case: one chart per metric and family, rows grouped by the params that vary."""
    log_axes = log_axes if log_axes is not None else axis_scales(ok)
    out = []
    for (metric, unit, better), rs in by_metric(ok).items():
        fams = families(rs)
        for fam, members in fams:
            out += _comparison(_family_title(exp, members, len(fams)), metric, unit, better, members,
                               log_axes.get((exp, metric, fam), False))
    return out


def _comparison(name: str, metric: str, unit: str, better: str, rs: list[Result], log: bool) -> list[Chart]:
    """The charts of one metric and family: a limit case becomes a dashed line per group, not a row."""
    limit_names = limit_cases(rs)
    rows = [r for r in rs if r.case not in limit_names]
    limits = [r for r in rs if r.case in limit_names]
    group_keys = shared_varying(rows)
    # a limit no other case ran beside (only native for a workload no UDF style can express) is a row of its own
    alone = [x for x in limits if not any(all(x.params.get(k, r.params[k]) == r.params[k] for k in group_keys)
                                          for r in rows)]
    rows, limits = rows + alone, [x for x in limits if x not in alone]
    group_keys = shared_varying(rows)
    label_keys = [k for k in varying_keys(rows) if k not in group_keys]
    case_order = list(dict.fromkeys(r.case for r in rows))
    groups: dict[tuple, list[Result]] = {}
    for r in sorted(rows, key=lambda r: [sort_key(r.params[k]) for k in group_keys]):
        groups.setdefault(tuple(r.params[k] for k in group_keys), []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: (case_order.index(r.case), [sort_key(r.params.get(k)) for k in label_keys]))
    pages: list[list[tuple]] = [[]]  # whole groups per chart
    for key, g in groups.items():
        if pages[-1] and sum(len(x[1]) for x in pages[-1]) + len(g) > MAX_ROWS:
            pages.append([])
        pages[-1].append((key, g))
    what = metric_label(metric, unit)
    out = []
    for n, page in enumerate(pages, 1):
        part = f" (part {n} of {len(pages)})" if len(pages) > 1 else ""
        plot_groups, page_limits = [], []
        for key, g in page:
            gp = dict(zip(group_keys, key))
            lim = best_match(g[0], [x for x in limits if all(x.params.get(k, v) == v for k, v in gp.items())])
            page_limits.append(lim)
            plot_groups.append(Group(params_text(gp), [_point(r, label(r, label_keys), r.case) for r in g],
                                     _point(lim, lim.case, lim.case) if lim else None))
        shown = [r for _, g in page for r in g] + list({id(x): x for x in page_limits if x}.values())
        plot = DotsPlot(plot_groups, f"median {what}; {better} is better", log, case_order)
        note = _whisker_note(shown, log)
        if any(page_limits):
            note += (" Dashed line: " + ", ".join(sorted({x.case for x in page_limits if x}))
                     + ", the limit (with the same params) the other cases are held against.")
        title = f"{name}: {what.split(' (')[0]} per case, {better} is better{part}"
        out.append(Chart(title, plot, case_table(shown, rs, limit_names), note,
                         height_in=1.4 + 0.3 * (len(shown) + len(page))))
    return out


def _point(r: Result, text: str, series: str) -> Point:
    lo, hi = interval(r)
    return Point(text, median(r), lo, hi, series)


def _whisker_note(records: list[Result], log: bool) -> str:
    levels = sorted({percent(ci_level(r)) for r in records})
    cover = levels[0] if len(levels) == 1 else "coverage per row in the table"
    shape = "Dots on a log axis" if log else "Bars"
    return (f"{shape}: median; whiskers: distribution-free confidence interval of the median ({cover}; with fewer "
            "than 6 repeats it is the min-max range).")


def extra_columns(records: list[Result]) -> list[str]:
    """The few numeric extras worth a column: ones that differ between rows, rates and quality first."""
    seen: list[str] = []
    for r in records:
        for k, v in r.extra.items():
            if k not in seen and isinstance(v, (int, float)) and not isinstance(v, bool) \
                    and not k.startswith(HIDDEN_EXTRA_PREFIXES) and k not in r.params:
                seen.append(k)
    varying = [k for k in seen if len({repr(r.extra[k]) for r in records if r.extra.get(k) is not None}) > 1]

    def priority(k: str) -> int:
        if k.endswith("_per_s"):
            return 0
        if k.startswith("test_") or k == "time_to_target_s":
            return 1
        return 2

    return sorted(varying, key=lambda k: (priority(k), varying.index(k)))[:MAX_EXTRA_COLUMNS]


def case_table(shown: list[Result], candidates: list[Result], limit_names: set[str]) -> Table:
    """One row per record: median, interval, speedup over its reference, its limit's lead, a few extras.
    Params every row shares are said once, in the caption."""
    keys = varying_keys(shown)
    speedups = {id(r): speedup(r, candidates) for r in shown}
    ref_names = sorted({s[1].case for s in speedups.values() if s})
    referenced = {roles(r).get("reference") for r in candidates}  # cases others name as their reference
    limits = [r for r in candidates if r.case in limit_names]
    extras = extra_columns(shown)
    unit = shown[0].unit if shown else ""
    columns = ["case"] + (["params"] if keys else []) + ["n", f"median ({unit})", ci_header(shown)]
    if ref_names:
        columns.append(f"speedup vs {ref_names[0]}" if len(ref_names) == 1 else "speedup vs reference")
    if limits:
        columns.append(f"{'/'.join(sorted(limit_names))} leads by")
    columns += extras
    with_spark = any(spark_cell(r) for r in shown)
    if with_spark:
        columns.append(SPARK_COLUMN)
    rows = []
    for r in shown:
        row = [r.case] + ([params_text(r.params, keys)] if keys else []) + [
            fmt(r.stats.get("n")), fmt(median(r)), interval_cell(r, shown)]
        if ref_names:
            row.append("1 (reference)" if r.case in referenced and speedups[id(r)] is None else
                       _speedup_cell(r, speedups[id(r)], len(ref_names) > 1))
        if limits:
            lim = best_match(r, limits)
            row.append("(limit)" if r.case in limit_names else
                       times(gain(median(lim), median(r), r.better)) if lim else "—")
        rows.append(row + [fmt(r.extra.get(k)) for k in extras] + ([spark_cell(r) or "—"] if with_spark else []))
    same = constant_params(shown)
    caption = f"Same for every row: {params_text(same)}." if same else ""
    if ref_names:
        caption += (" Speedup: how many times better than the reference case with the same params; 'not clear' "
                    "when the two intervals overlap.")
    if with_spark:
        caption += (f" {SPARK_COLUMN}: Spark's own figures from its event log (median per timed sample): tasks, "
                    "executor run time summed over the tasks, bytes read, and the longest task against the median "
                    "one where it exceeds 2×; '(whole case)': a case timed in one call of its own, whose figures "
                    "include its warm-ups and setup. Every figure is in `harness export` (extra.spark.*).")
    return Table(columns, rows, caption.strip())


SPARK_COLUMN = "Spark: tasks · task s · input MB"


def spark_cell(r: Result) -> str:
    """Spark's figures for a case beside its time (extra.spark, harness.spark_metrics); '' when it has none."""
    spark = r.extra.get("spark")
    if not isinstance(spark, dict) or spark.get("tasks") is None:
        return ""
    mb = (spark.get("input_bytes") or 0) / 1e6
    text = f"{fmt(spark['tasks'])} · {fmt(spark.get('executor_run_time_s'))} · {fmt(mb)}"
    skew = spark.get("task_skew")
    if isinstance(skew, (int, float)) and skew > 2:
        text += f" · skew {skew:.1f}×"
    return text + ("" if str(spark.get("scope", "")).startswith("median") else " (whole case)")


def _speedup_cell(r: Result, found: tuple[float, Result] | None, name_it: bool) -> str:
    if found is None:
        return "—"
    g, ref = found
    if ref is r:
        return "1 (reference)"
    text = times(g) + (f" vs {ref.case}" if name_it else "")
    return text if clear_of(interval(r), interval(ref), r.better) or clear_of(interval(ref), interval(r), r.better) \
        else text + " (not clear)"


# ---------------------------------------------------------------------------------------------- scaling

def scaling(exp: str, ok: list[Result]) -> list[Chart]:
    """Throughput and efficiency vs workers, one chart per mode (weak/strong) and device; a line per launcher."""
    points = [r for r in ok if is_scaling_point(r)]
    out = []
    facets = _group(points, lambda r: (str(r.params.get(MODE_AXIS, "")), str(r.params.get(DEVICE_AXIS, ""))))
    for (mode, device), rs in sorted(facets.items()):
        label_keys = [k for k in varying_keys(rs) if k not in (WORKERS_AXIS, MODE_AXIS, DEVICE_AXIS)]
        series = _group(rs, lambda r: (r.case,) + tuple((k, repr(v)) for k, v in sorted(r.params.items())
                                                        if k != WORKERS_AXIS))
        lines, rows = [], []
        for pts in series.values():
            pts.sort(key=workers_of)
            name = label(pts[0], label_keys)
            one = next((p for p in pts if workers_of(p) == BASE_WORKERS), None)
            t1 = throughput(one)[0] if one else None
            line = []
            for p in pts:
                n = workers_of(p)
                v, lo, hi, _ = throughput(p)
                s = v / t1 if t1 else None
                eff = s * BASE_WORKERS / n if s else None
                line.append((n, v, lo, hi, eff))
                over = p.extra.get("oversubscribed")
                rows.append([name, str(n), fmt(v), f"{fmt(lo)} – {fmt(hi)}", fmt(v / n),
                             f"{s:.2f}×" if s else "—", f"{eff:.0%}" if eff else "—",
                             fmt(over) if over is not None else "—"])
            lines.append(ScalingLine(name, line, t1))
        mode_text = {"weak": "weak scaling (fixed batch per worker)",
                     "strong": "strong scaling (fixed global batch)"}.get(mode, f"mode={mode}" if mode else "")
        title = (f"{exp}: throughput and efficiency vs workers" + (f", {mode_text}" if mode_text else "")
                 + (f", {device}" if device else ""))
        note = (f"Dotted lines: ideal linear scaling from each line's {BASE_WORKERS}-worker figure; efficiency = "
                f"throughput(N) / (N × throughput({BASE_WORKERS})). A line without a {BASE_WORKERS}-worker point has "
                "no speedup or efficiency. Whiskers: the median's confidence interval.")
        table = Table(["line (launcher, params)", "workers", "throughput", ci_header(rs), "per worker",
                       f"speedup vs {BASE_WORKERS} worker", "efficiency", "oversubscribed"], rows)
        out.append(Chart(title, ScalingPlot(lines, throughput(rs[0])[3]), table, note, height_in=4.8))
    return out


def predicted_scaling(exp: str, ok: list[Result]) -> list[Chart]:
    """Records carrying the communication model's `prediction` (scaling on an emulated network): predicted
    efficiency for 1..256 workers per launcher and network, the measured points (this record and its 1-worker
    reference) with their intervals, and the model's error at each measured point (> 25% flagged)."""
    predicted = [r for r in ok if isinstance(r.extra.get("prediction"), dict) and is_scaling_point(r)]
    if not predicted:
        return []
    lines, points, rows = [], [], []
    label_keys = [k for k in varying_keys(predicted) if k != WORKERS_AXIS]
    for r in sorted(predicted, key=lambda r: (r.case, str(r.params.get("network")), workers_of(r) or 0)):
        name = label(r, sorted(set(label_keys) | {"network"}))
        pred = r.extra["prediction"]
        lines.append((name, list(pred["workers"]), list(pred["efficiency"])))
        ref = next((o for o in ok if o.case == r.case and workers_of(o) == BASE_WORKERS
                    and {k: v for k, v in o.params.items() if k != WORKERS_AXIS}
                    == {k: v for k, v in r.params.items() if k != WORKERS_AXIS}), None)
        fit = r.extra.get("link_fit") or {}
        link = (f"{fmt(fit.get('bandwidth_gbit_s'))} Gbit/s, {fmt((fit.get('latency_s') or 0) * 1e6)} µs, "
                f"rms residual {percent(fit.get('rms_residual'))}") if fit else "—"
        base = throughput(ref) if ref is not None else None
        if base:
            t1, lo1, hi1, _ = base
            points.append((name, BASE_WORKERS, 1.0, lo1 / t1, hi1 / t1, False))
            n = workers_of(r)
            eff, eff_lo, eff_hi = (x / (n * t1) for x in throughput(r)[:3])
            missed = bool(r.extra.get("model_missed"))
            points.append((name, n, eff, eff_lo, eff_hi, missed))
            err = r.extra.get("model_error")
            rows.append([name, link, str(n), f"{eff:.0%} ({eff_lo:.0%} – {eff_hi:.0%})",
                         percent(r.extra.get("predicted_efficiency")),
                         f"{err:+.0%}" if isinstance(err, (int, float)) else "—",
                         "MISSED (> 25%)" if missed else "within 25%"])
        else:
            rows.append([name, link, str(workers_of(r)), "— (no 1-worker record)",
                         percent(r.extra.get("predicted_efficiency")), "—", "—"])
    note = ("Lines: efficiency predicted by the ring-allreduce model (1-worker step time + 2(N-1) latency per "
            "fused bucket + 2(N-1)/N x gradient bytes / bandwidth, no overlap), from the link fitted to the "
            "allreduce sweep on that network. Dots: measured efficiency with the median's interval; a red ring "
            "marks a point the model misses by more than 25%.")
    table = Table(["line (launcher, network)", "fitted link", "workers", "measured efficiency (interval)",
                   "predicted", "model error", "flag"], rows)
    return [Chart(f"{exp}: predicted vs measured efficiency per network", PredictionPlot(lines, points), table,
                  note, height_in=4.6)]


# ---------------------------------------------------------------------------------------------- curves

def curve_of(v: Any) -> list[tuple[float, float]] | None:
    """A list of [x, y] number pairs (a quality-vs-time series), else None."""
    if not isinstance(v, list) or not v:
        return None
    pts = []
    for p in v:
        if not (isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)):
            return None
        pts.append((float(p[0]), float(p[1])))
    return pts


def curves(exp: str, ok: list[Result]) -> list[Chart]:
    """Quality vs wall time: one chart per series extra (and task), one line per case and params."""
    facets: dict[tuple, list[tuple[Result, list]]] = {}
    for r in ok:
        for k, v in r.extra.items():
            pts = curve_of(v)
            if pts:
                facet = tuple((f, r.params[f]) for f in CURVE_FACETS if f in r.params)
                facets.setdefault((k, facet), []).append((r, pts))
    out = []
    for (key, facet), members in facets.items():
        metric = next((str(r.extra[m]) for r, _ in members for m in CURVE_METRIC_KEYS
                       if isinstance(r.extra.get(m), str)), key)
        label_keys = [k for k in varying_keys([r for r, _ in members]) if k not in CURVE_FACETS]
        rows, lines = [], []
        for r, pts in members:
            name = label(r, label_keys)
            ys = [p[1] for p in pts]
            lines.append((name, pts))
            rows.append([name, str(len(pts)), fmt(pts[-1][0]), fmt(ys[-1]), fmt(max(ys)),
                         fmt(r.extra.get("time_to_target_s"))])
        targets = {r.extra.get(CURVE_TARGET_KEY) for r, _ in members}
        target = targets.pop() if len(targets) == 1 else None
        target = float(target) if isinstance(target, (int, float)) and not isinstance(target, bool) else None
        facet_text = ", ".join(f"{k}={v}" for k, v in facet)
        title = f"{exp}: test {metric} vs wall time" + (f" ({facet_text})" if facet_text else "")
        note = (f"From the `{key}` extra: points [wall s, {metric}] taken while training (the last repeat); a line "
                "that ends early finished sooner, a lower end is a worse model."
                + (f" Dashed line: the target {metric} {fmt(target)} (time_to_target_s)." if target else ""))
        table = Table(["line (case, params)", "points", "last time (s)", f"last {metric}", f"max {metric}",
                       "time_to_target_s"], rows)
        out.append(Chart(title, CurvesPlot(lines, metric, target), table, note, height_in=4.4))
    return out


# ---------------------------------------------------------------------------------------------- streaming

RATE_AXIS = "input_rate"  # a record with this param and latency percentile extras is a point of a streaming sweep
LATENCY_EXTRAS = (("p50", "latency_p50_s"), ("p95", "latency_p95_s"), ("p99", "latency_p99_s"))


def latency_vs_rate(exp: str, ok: list[Result]) -> list[Chart]:
    """Streaming sweeps: end-to-end latency percentiles and sustained rows/s against the offered input rate, one
    chart per case and other params, the knee (the highest rate up to which every rate kept up) marked."""
    points = [r for r in ok if RATE_AXIS in r.params and isinstance(r.extra.get("latency_p50_s"), (int, float))]
    label_keys = [k for k in varying_keys(points) if k != RATE_AXIS]
    out = []
    lines = _group(points, lambda r: (r.case,) + tuple((k, repr(v)) for k, v in sorted(r.params.items())
                                                       if k != RATE_AXIS))
    for rs in lines.values():
        rs.sort(key=lambda r: r.params[RATE_AXIS])
        knee = None
        for r in rs:
            if r.extra.get("kept_up") is not True:
                break
            knee = r.params[RATE_AXIS]
        name = label(rs[0], label_keys) or rs[0].case
        rows = [[fmt(r.params[RATE_AXIS]), fmt(r.extra.get("sustained_rows_per_s")),
                 fmt(r.extra.get("capacity_rows_per_s"))] + [fmt(r.extra.get(k)) for _, k in LATENCY_EXTRAS]
                + [fmt(r.extra.get("utilisation")), fmt(r.extra.get("kept_up"))] for r in rs]
        plot = LatencyPlot([float(r.params[RATE_AXIS]) for r in rs],
                           {q: [r.extra.get(k) for r in rs] for q, k in LATENCY_EXTRAS},
                           [r.extra.get("sustained_rows_per_s") for r in rs],
                           [r.extra.get("kept_up") is True for r in rs], knee)
        knee_text = (f"the knee: {fmt(knee)} rows/s, the highest input rate up to which every rate kept up"
                     if knee is not None else "no input rate kept up")
        note = (f"Left: end-to-end latency (event time to the end of its micro-batch) per input rate; hollow "
                f"markers did not keep up. Right: rows/s sustained against rows/s offered (dotted: equal). "
                f"Dashed line: {knee_text}.")
        table = Table(["input rate (rows/s)", "sustained rows/s", "capacity rows/s", "p50 latency (s)",
                       "p95 latency (s)", "p99 latency (s)", "utilisation", "kept up"], rows,
                      f"Params: {params_text({k: v for k, v in rs[0].params.items() if k != RATE_AXIS})}. "
                      "capacity: rows / time busy in triggers; utilisation: that time / the window; kept up: "
                      "sustained >= 90% of the input rate and the latency not growing over the window.")
        out.append(Chart(f"{exp}: streaming latency vs input rate ({name})", plot, table, note, height_in=4.6))
    return out


# ---------------------------------------------------------------------------------------------- paired A/B

def paired_section(ab: dict) -> Section:
    """`harness ab`'s verdicts: per case the paired ratio B/A with its interval (its real coverage), p, q, the
    smallest change the pairs could detect, and the verdict; the chart puts every ratio against the threshold."""
    threshold = ab.get("threshold", 0.05)
    sec = Section("Paired A/B comparison", "paired-ab",
                  intro=f"{ab.get('pairs')} pairs per case, A and B samples taken back to back in random order by "
                        "two long-lived workers; ratio = exp(median of log(B/A)), oriented so > 1 is worse; "
                        f"one-sided Wilcoxon signed-rank p, Benjamini-Hochberg q; regressed when q <= "
                        f"{ab.get('alpha', 0.05)} and the ratio exceeds {1 + threshold:.2f}.")
    cases = ab.get("cases") or []
    if not cases:
        sec.items.append("No case could be compared (see the not-comparable list in ab.json).")
        return sec
    rows, points = [], []
    for c in cases:
        lo, hi = (c.get("ratio_ci") or [None, None])[:2]
        label = c["case"] + (" " + params_text(c.get("params") or {}, sorted(c.get("params") or {}))
                             if c.get("params") else "")
        level = c.get("ci_level")
        rows.append([label, fmt(c.get("baseline_median")), fmt(c.get("current_median")),
                     f"{c['ratio']:.3f}" if c.get("ratio") is not None else "—",
                     f"{lo:.3f}-{hi:.3f} ({level * 100:.1f}%)" if lo is not None and level else "—",
                     f"{c['p']:.3g}" if c.get("p") is not None else "—",
                     f"{c['q']:.3g}" if c.get("q") is not None else "—",
                     change_percent(c.get("mdc")), c.get("verdict", "")])
        if c.get("ratio") is not None and lo is not None:
            points.append(Point(label, c["ratio"], lo, hi, "B/A"))
    table = Table(["case", "A median", "B median", "B/A", "interval (coverage)", "p", "q (BH)", "detectable",
                   "verdict"], rows, "detectable: the smallest worsening these pairs detect with 80% power.")
    if points:
        limit = Point(f"threshold {1 + threshold:.2f}", 1 + threshold, 1 + threshold, 1 + threshold, "threshold")
        plot = DotsPlot([Group("B/A per case", points, limit)], "B/A (paired ratio, > 1 is worse; log axis)", True,
                        ["B/A"])
        sec.items.append(Chart("Paired ratios B/A", plot, table, height_in=max(2.5, 0.5 * len(points) + 1.5)))
    else:
        sec.items.append(table)
    return sec


# ---------------------------------------------------------------------------------------------- runs side by side

def side_by_side(runs: list, log_axes: dict[tuple, bool] | None = None) -> list[Section]:
    """Several runs: per experiment, metric and family, each case's median in every run, its ratio to the first
    run that has it, and the verdict `harness compare` gives for that pair of runs."""
    log_axes = log_axes if log_axes is not None else axis_scales([r for run in runs for r in usable(run.results)])
    decisions: dict[tuple[int, int], dict[str, decide.CaseVerdict]] = {}

    def verdict(i: int, j: int, identity: str) -> decide.CaseVerdict | None:
        if (i, j) not in decisions:  # exactly `harness compare RUN_i RUN_j`
            d = decide.compare(runs[i].results, runs[j].results)
            decisions[(i, j)] = {cv.identity: cv for cv in d.cases}
        return decisions[(i, j)].get(identity)

    every = [r for run in runs for r in usable(run.results)]
    index = [{r.identity: r for r in usable(run.results)} for run in runs]
    sections = []
    for exp, exp_records in _group(every, lambda r: r.experiment).items():
        sec = Section(f"Runs side by side: {exp}", slug(f"compare-{exp}"),
                      intro="Each later run against the first run given that has the case: the ratio of medians "
                            "and the verdict of `harness compare` for those two runs (unpaired Mann-Whitney test, "
                            "false discovery rate controlled over all their cases, 5% threshold).")
        for (metric, unit, better), rs in by_metric(exp_records).items():
            fams = families(rs)
            for fam, members in fams:
                cases = []  # per identity: that case's record in each run (or None)
                for identity in dict.fromkeys(r.identity for r in members):
                    recs = [by_id.get(identity) for by_id in index]
                    if sum(r is not None for r in recs) > 1:  # only cases measured in two runs or more compare
                        cases.append(recs)
                if not cases:
                    continue
                name = _family_title(exp, members, len(fams))
                sec.items += _runs_charts(name, cases, runs, verdict, metric, unit, better,
                                          log_axes.get((exp, metric, fam), False))
        if sec.items:
            sections.append(sec)
    return sections


def _runs_charts(name, cases, runs, verdict, metric, unit, better, log) -> list[Chart]:
    labels = [run.label for run in runs]
    label_keys = varying_keys([r for recs in cases for r in recs if r])
    per_page = max(MAX_ROWS // (len(runs) + 1), 4)
    pages = [cases[i:i + per_page] for i in range(0, len(cases), per_page)]
    what = metric_label(metric, unit)
    out = []
    for n, page in enumerate(pages, 1):
        part = f" (part {n} of {len(pages)})" if len(pages) > 1 else ""
        rows, groups = [], []
        for recs in page:
            r0 = next(r for r in recs if r)
            ref_index = recs.index(r0)
            row = [r0.case, params_text(r0.params, label_keys) or "—"]
            row += [f"{fmt(median(r))} [{interval_text(r, with_level=True)}]" if r else "—" for r in recs]
            for j, r in enumerate(recs[1:], 1):
                if r is None or j == ref_index:
                    row.append("—")
                    continue
                cv = verdict(ref_index, j, r.identity)
                ratio = median(r) / median(r0)
                row.append(f"{ratio:.3f}× ({change_text(ratio, r.better, r.unit)}): "
                           + (cv.verdict if cv else "not compared"))
            rows.append(row)
            groups.append(Group(label(r0, label_keys), [_point(r, run_label, run_label)
                                                        for r, run_label in zip(recs, labels) if r]))
        columns = (["case", "params"] + [f"{lb} median [CI (coverage)]" for lb in labels]
                   + [f"{lb} vs reference: ratio, verdict" for lb in labels[1:]])
        shown = [r for recs in page for r in recs if r]
        plot = DotsPlot(groups, f"median {what}; {better} is better", log, labels, legend_title="run")
        out.append(Chart(f"{name}: {what.split(' (')[0]} per case in each run{part}", plot, Table(columns, rows),
                         _whisker_note(shown, log), height_in=1.4 + 0.3 * (len(shown) + len(page))))
    return out


def change_text(ratio: float, better: str, unit: str) -> str:
    """A ratio of medians (current / reference) in words: 1.832 s/s -> '83% slower', 0.55 -> '45% less time'."""
    if abs(ratio - 1) < 0.005:
        return "same"
    pct = abs(ratio - 1) * 100
    if unit == "s":
        return f"{pct:.0f}% slower" if ratio > 1 else f"{pct:.0f}% less time"
    return f"{pct:.0f}% higher" if ratio > 1 else f"{pct:.0f}% lower"


__all__ = ["Chart", "CurvesPlot", "DotsPlot", "Group", "LatencyPlot", "Point", "ScalingLine", "ScalingPlot", "Section",
           "Table", "axis_scales", "case_table", "change_text", "comparison", "curves", "families",
           "latency_vs_rate", "plan_views", "predicted_scaling", "scaling", "side_by_side"]
