"""The report's views, planned from the records' generic fields, and their matplotlib charts.

Every experiment gets a comparison chart (median and CI whiskers per case, grouped by the params that vary);
experiments named in REFERENCES also get speedup tables and no-Spark limit lines; any record with a `workers`
param feeds the scaling charts; any extra holding a list of [wall_s, metric] pairs becomes a quality-vs-time
curve; several runs get side-by-side charts with ratios. Each chart carries the table of the numbers it shows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..record import Result

# The one place that knows experiments by name: the reference case each speedup is taken against
# ("baseline"), the no-Spark limit drawn as a reference line ("limit"), case-name prefixes charted apart
# ("families"), and the worker count whose throughput the scaling speedups are taken against.
REFERENCES: dict[str, dict[str, Any]] = {
    "ingestion": {"baseline": "small_files", "limit": "pyarrow_limit", "limit_label": "the no-Spark limit"},
    "udf": {"baseline": "row_udf", "limit": "native", "limit_label": "the no-Python limit"},
    # feed_* cases time one epoch of batches, the framework cases whole trainings: charted apart
    "training": {"limit": "feed_limit", "limit_label": "the in-memory limit", "families": ("feed_",)},
    "scaling": {"baseline_workers": 1},
}
WORKERS_AXIS = "workers"  # a record with this param is a point on a scaling curve
MODE_AXIS = "mode"  # weak / strong scaling, never mixed on one chart
DEVICE_AXIS = "device"
# params that change what a quality curve's metric means (R^2 for one task, accuracy for another)
CURVE_FACETS = ("task", "dataset", "data")
# extras that name the metric in a quality curve
CURVE_METRIC_KEYS = ("target_metric", "quality_metric", "test_metric", "metric_name")
CURVE_TARGET_KEY = "target"  # the quality a model must reach (time_to_target_s), drawn as a line when shared
MAX_BARS = 36  # more bars than this are split over several charts, so labels stay readable


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    headlines: list[str] = field(default_factory=list)  # one-line findings for the page's "At a glance"


@dataclass
class Chart:
    title: str
    draw: Callable[[Any], None]  # draws onto a matplotlib Figure
    table: Table
    note: str = ""
    height_in: float = 4.0
    png: Path | None = None  # set once rendered
    headlines: list[str] = field(default_factory=list)
    failed: str = ""  # why drawing failed, shown in place of the image


@dataclass
class Section:
    title: str
    anchor: str
    items: list[Any] = field(default_factory=list)  # Chart | Table | str (a note)
    intro: str = ""

    def charts(self) -> list[Chart]:
        return [i for i in self.items if isinstance(i, Chart)]


# ---------------------------------------------------------------------------------------------- helpers

def fmt(v: Any) -> str:
    """A cell: 4 significant digits for floats, plain text otherwise."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return f"[{len(v)} items]"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def params_text(params: dict[str, Any], keys: list[str] | None = None) -> str:
    keys = sorted(params) if keys is None else keys
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)


def _sort_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v, "")
    return (1, 0, str(v))


def median(r: Result) -> float | None:
    m = (r.stats or {}).get("median")
    return float(m) if isinstance(m, (int, float)) and math.isfinite(m) else None


def ci(r: Result) -> tuple[float, float]:
    m = median(r)
    lo, hi = (r.stats or {}).get("ci_low", m), (r.stats or {}).get("ci_high", m)
    lo = float(lo) if isinstance(lo, (int, float)) and math.isfinite(lo) else m
    hi = float(hi) if isinstance(hi, (int, float)) and math.isfinite(hi) else m
    return lo, hi


def usable(results: list[Result]) -> list[Result]:
    """ok records with at least one sample: the only ones a chart may show."""
    return [r for r in results if r.status == "ok" and median(r) is not None]


def varying_keys(records: list[Result]) -> list[str]:
    """Params taking more than one value among the records that have them."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in r.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, vs in values.items() if len(vs) > 1)


def shared_varying(records: list[Result]) -> list[str]:
    """Varying params that every record has: the keys bars are grouped by."""
    if not records:
        return []
    common = set.intersection(*(set(r.params) for r in records))
    return [k for k in varying_keys(records) if k in common]


def gain(value: float, reference: float, better: str) -> float | None:
    """How many times better `value` is than `reference` (> 1 is better), for either direction of metric."""
    if not value or not reference:
        return None
    return reference / value if better == "lower" else value / reference


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


def extra_columns(records: list[Result]) -> list[str]:
    """Scalar extras any of the records has, in first-seen order (the numbers beside the time)."""
    cols: list[str] = []
    for r in records:
        for k, v in r.extra.items():
            if k not in cols and (v is None or isinstance(v, (int, float, str, bool))):
                cols.append(k)
    return cols


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "chart"


def _palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _log_scale_fits(values: list[float]) -> bool:
    pos = [v for v in values if v and v > 0]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) > 30


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


# ---------------------------------------------------------------------------------------------- planning

def plan(runs: list) -> list[Section]:
    """Every view of the page, in page order; charts are drawn later by `render`."""
    sections: list[Section] = []
    if len(runs) > 1:
        sections += side_by_side(runs)
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
                sections.append(sec)
                continue
            if not all(is_scaling_point(r) for r in ok):  # else the scaling charts already show every record
                sec.items += comparison(exp, ok)
            sec.items += speedups(exp, ok)
            sec.items += scaling(exp, ok)
            sec.items += curves(exp, ok)
            sections.append(sec)
    return sections


def comparison(exp: str, ok: list[Result]) -> list[Chart]:
    """Median + CI per case: one chart per metric (and case family), bars grouped by the params that vary."""
    by_metric: dict[tuple, list[Result]] = {}
    for r in ok:
        by_metric.setdefault((r.metric, r.unit, r.better), []).append(r)
    out = []
    for (metric, unit, better), rs in by_metric.items():
        for family, members in split_families(exp, rs):
            out += _comparison(exp, metric, unit, better, members, family)
    return out


def split_families(exp: str, rs: list[Result]) -> list[tuple[str, list[Result]]]:
    """Cases grouped by the experiment's family prefixes (REFERENCES[exp]['families']); the rest together."""
    prefixes = REFERENCES.get(exp, {}).get("families", ())
    fams: dict[str, list[Result]] = {}
    for r in rs:
        fams.setdefault(next((p for p in prefixes if r.case.startswith(p)), ""), []).append(r)
    return sorted(fams.items())


def _comparison(exp, metric, unit, better, rs, family) -> list[Chart]:
    """The charts of one metric and family: the limit case becomes a line per group, not a bar."""
    ref = REFERENCES.get(exp, {})
    out = []
    bars = [r for r in rs if r.case != ref.get("limit")]
    limits = [r for r in rs if r.case == ref.get("limit")]
    if not bars:  # only the limit case ran: show it as ordinary bars
        bars, limits = limits, []
    group_keys = shared_varying(bars)
    label_keys = [k for k in varying_keys(bars) if k not in group_keys]
    case_order = list(dict.fromkeys(r.case for r in bars))
    groups: dict[tuple, list[Result]] = {}
    for r in sorted(bars, key=lambda r: [_sort_key(r.params[k]) for k in group_keys]):
        groups.setdefault(tuple(r.params[k] for k in group_keys), []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: (case_order.index(r.case), [_sort_key(r.params.get(k)) for k in label_keys]))
    # split whole groups over several charts when there are too many bars
    pages: list[list[tuple]] = [[]]
    for key, g in groups.items():
        if pages[-1] and sum(len(x[1]) for x in pages[-1]) + len(g) > MAX_BARS:
            pages.append([])
        pages[-1].append((key, g))
    for n, page in enumerate(pages, 1):
        part = f" (part {n} of {len(pages)})" if len(pages) > 1 else ""
        fam = f" ({family}* cases)" if family else ""
        title = f"{exp}{fam}: median {metric} per case, {better} is better{part}"
        page_limits = []
        for key, g in page:
            gp = dict(zip(group_keys, key))
            cands = [lim for lim in limits if all(lim.params.get(k, v) == v for k, v in gp.items())]
            lim = best_match(g[0], cands)
            page_limits.append(lim)
        shown = [r for _, g in page for r in g] + list({id(lim): lim for lim in page_limits if lim}.values())
        table = result_table(shown, limit_case=ref.get("limit"))
        n_min = min((r.stats.get("n", 0) for r in shown), default=0)
        note = ("Whiskers: distribution-free 95% CI of the median"
                + ("; with fewer than 6 repeats it is the min-max range." if n_min < 6 else "."))
        if limits:
            note += (f" Dashed line: {ref['limit']} ({ref.get('limit_label', 'reference')}), "
                     "the limit with the same params.")
        out.append(Chart(title, _draw_bars(page, group_keys, label_keys, case_order, page_limits,
                                           metric, unit, better, ref), table, note,
                         height_in=1.6 + 0.32 * (len(shown) + len(page))))
    return out


def result_table(records: list[Result], limit_case: str | None = None) -> Table:
    extras = extra_columns(records)
    rows = []
    for r in records:
        lo, hi = ci(r)
        case = r.case + (" (reference line)" if r.case == limit_case else "")
        rows.append([case, params_text(r.params), fmt(r.stats.get("n")), fmt(median(r)),
                     f"{fmt(lo)} – {fmt(hi)}", r.unit] + [fmt(r.extra.get(k)) for k in extras])
    return Table(["case", "params", "n", "median", "95% CI", "unit"] + extras, rows)


def _draw_bars(page, group_keys, label_keys, case_order, limits, metric, unit, better, ref):
    def draw(fig):
        ax = fig.add_subplot(111)
        colors = dict(zip(case_order, _palette(len(case_order))))
        y, ticks, labels, headers = 0.0, [], [], []
        medians = []
        drawn_cases = set()
        limit_drawn = False
        for (key, g), lim in zip(page, limits):
            if group_keys:
                ticks.append(y)
                labels.append(params_text(dict(zip(group_keys, key))))
                headers.append(len(labels) - 1)
                y += 1
            y_start = y
            for r in g:
                m = median(r)
                lo, hi = ci(r)
                medians.append(m)
                ax.barh(y, m, color=colors[r.case], height=0.7,
                        label=r.case if r.case not in drawn_cases else None)
                ax.errorbar(m, y, xerr=[[max(m - lo, 0)], [max(hi - m, 0)]], fmt="none", ecolor="black",
                            capsize=3, lw=1)
                ax.annotate(fmt(m), (max(hi, m), y), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=7)
                drawn_cases.add(r.case)
                ticks.append(y)
                labels.append(" ".join([r.case] + [f"{k}={r.params[k]}" for k in label_keys if k in r.params]))
                y += 1
            if lim is not None:
                ax.vlines(median(lim), y_start - 0.45, y - 0.55, colors="black", linestyles="--", lw=1.5,
                          label=f"{lim.case} ({ref.get('limit_label', 'limit')})" if not limit_drawn else None)
                medians.append(median(lim))
                limit_drawn = True
            y += 0.5
        ax.set_yticks(ticks, labels, fontsize=8)
        for i in headers:
            ax.get_yticklabels()[i].set_fontweight("bold")
        ax.invert_yaxis()
        if _log_scale_fits(medians):
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel(f"median {metric} ({unit}); {better} is better")
        ax.set_ylabel("case" + (" (bold: group params)" if group_keys else ""))
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return draw


def speedups(exp: str, ok: list[Result]) -> list[Table]:
    """Each case's gain over the experiment's reference case with matching params (and its distance to the limit)."""
    ref = REFERENCES.get(exp, {})
    base_case, limit_case = ref.get("baseline"), ref.get("limit")
    if not base_case:
        return []
    out = []
    by_metric: dict[tuple, list[Result]] = {}
    for r in ok:
        by_metric.setdefault((r.metric, r.unit, r.better), []).append(r)
    for (metric, unit, better), rs in by_metric.items():
        bases = [r for r in rs if r.case == base_case]
        limits = [r for r in rs if r.case == limit_case]
        if not bases:
            continue
        rows = []
        best: dict[int, tuple[float, Result, Result]] = {}  # per reference record: the best case against it
        for r in rs:
            b = best_match(r, bases)
            if b is None:
                continue
            lim = best_match(r, limits) if limits and r.case != limit_case else None
            g = gain(median(r), median(b), better)
            if g and r.case not in (base_case, limit_case) and (id(b) not in best or g > best[id(b)][0]):
                best[id(b)] = (g, r, b)
            row = [r.case, params_text(r.params), fmt(median(r)), fmt(median(b)),
                   f"{g:.2f}×" if g else "—"]
            if limits:
                lg = gain(median(r), median(lim), better) if lim else None
                row.append(f"{lg:.3g}×" if lg else "—")
            rows.append(row)
        cols = ["case", "params", f"median {metric} ({unit})", f"{base_case} median ({unit})",
                f"speedup vs {base_case}"]
        if limits:
            cols.append(f"share of {limit_case}")
        caption = (f"{exp}: speedup against {base_case} with the same params ({metric}, {better} is better; "
                   "> 1× is faster)." + (f" 'share of {limit_case}': 1× means as good as {limit_case}, "
                                          f"{ref.get('limit_label', 'the limit')}." if limits else ""))
        table = Table(cols, rows, caption)
        for g, r, b in best.values():
            verdict = "better than" if g > 1 else "still worse than"
            table.headlines.append(f"{exp} ({params_text(b.params, shared_varying(bases)) or 'all cases'}): best "
                                   f"case is {r.case}, {g:.2f}× {base_case}, {verdict} it ({fmt(median(r))} vs "
                                   f"{fmt(median(b))} {unit} {metric})")
        out.append(table)
    return out


def throughput(r: Result) -> tuple[float, float, float, str] | None:
    """(value, ci_low, ci_high, label) of a scaling point: a higher-is-better metric, else a samples_per_s extra."""
    if r.better == "higher":
        lo, hi = ci(r)
        return median(r), lo, hi, f"{r.metric} ({r.unit})"
    v = r.extra.get("samples_per_s")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v), float(v), float(v), "samples_per_s (samples/s)"
    return None


def workers_of(r: Result) -> int | None:
    """Workers that really ran: the record's `workers` extra where the case capped the asked-for count (GPUs)."""
    for w in (r.extra.get(WORKERS_AXIS), r.params.get(WORKERS_AXIS)):
        if isinstance(w, int) and not isinstance(w, bool) and w > 0:
            return w
    return None


def is_scaling_point(r: Result) -> bool:
    return WORKERS_AXIS in r.params and workers_of(r) is not None and throughput(r) is not None


def scaling(exp: str, ok: list[Result]) -> list[Chart]:
    """Throughput and efficiency vs workers, one chart per mode (weak/strong) and device; a line per launcher."""
    points = [r for r in ok if is_scaling_point(r)]
    if not points:
        return []
    out = []
    by_mode: dict[tuple[str, str], list[Result]] = {}
    for r in points:  # CPU and GPU throughputs differ by orders of magnitude: separate charts
        by_mode.setdefault((str(r.params.get(MODE_AXIS, "")), str(r.params.get(DEVICE_AXIS, ""))), []).append(r)
    base_n = REFERENCES.get(exp, {}).get("baseline_workers", 1)
    for (mode, device), rs in sorted(by_mode.items()):
        label_keys = [k for k in varying_keys(rs) if k not in (WORKERS_AXIS, MODE_AXIS, DEVICE_AXIS)]
        series: dict[tuple, list[Result]] = {}
        for r in rs:
            key = (r.case,) + tuple((k, repr(v)) for k, v in sorted(r.params.items()) if k != WORKERS_AXIS)
            series.setdefault(key, []).append(r)
        lines, rows, heads = [], [], []
        for key, pts in series.items():
            pts.sort(key=workers_of)
            name = " ".join([pts[0].case] + [f"{k}={pts[0].params[k]}" for k in label_keys if k in pts[0].params])
            one = next((p for p in pts if workers_of(p) == base_n), None)
            t1 = throughput(one)[0] if one else None
            line = []
            for p in pts:
                n = workers_of(p)
                v, lo, hi, _ = throughput(p)
                speed = v / t1 if t1 else None
                eff = speed * base_n / n if speed else None
                line.append((n, v, lo, hi, speed, eff))
                over = p.extra.get("oversubscribed")
                rows.append([name, str(n), fmt(v), f"{fmt(lo)} – {fmt(hi)}",
                             fmt(v / n), f"{speed:.2f}×" if speed else "—", f"{eff:.0%}" if eff else "—",
                             fmt(over) if over is not None else "—"])
            lines.append((name, str(pts[0].params.get(DEVICE_AXIS, "")), line, t1))
            if t1 and len(line) > 1:
                n, _, _, _, speed, eff = line[-1]
                where = "".join(f", {x}" for x in (mode, device) if x)
                heads.append(f"{exp} {name}{where}: {n} workers give {speed:.2f}× the {base_n}-worker "
                             f"throughput, {eff:.0%} efficiency")
        mode_text = {"weak": "weak scaling (fixed batch per worker)",
                     "strong": "strong scaling (fixed global batch)"}.get(mode, f"mode={mode}" if mode else "")
        title = (f"{exp}: throughput and efficiency vs workers" + (f", {mode_text}" if mode_text else "")
                 + (f", {device}" if device else ""))
        ylabel = throughput(rs[0])[3]
        note = (f"Dotted lines: ideal linear scaling from each line's {base_n}-worker figure; efficiency = "
                f"throughput(N) / (N × throughput({base_n})). A line without a {base_n}-worker point has no "
                "speedup or efficiency.")
        table = Table(["line (launcher, params)", "workers", "throughput", "95% CI", "per worker",
                       f"speedup vs {base_n} worker", "efficiency", "oversubscribed"], rows)
        out.append(Chart(title, _draw_scaling(lines, ylabel, base_n), table, note, height_in=4.6, headlines=heads))
    return out


def _draw_scaling(lines, ylabel, base_n):
    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        colors = _palette(len(lines))
        all_n = sorted({pt[0] for _, _, line, _ in lines for pt in line})
        for (name, _device, line, t1), color in zip(lines, colors):
            ns = [pt[0] for pt in line]
            vs = [pt[1] for pt in line]
            err = [[max(pt[1] - pt[2], 0) for pt in line], [max(pt[3] - pt[1], 0) for pt in line]]
            ax1.errorbar(ns, vs, yerr=err, fmt="o-", color=color, capsize=3, label=name)
            if t1:
                ax1.plot(ns, [t1 * n / base_n for n in ns], ":", color=color, alpha=0.8)
                effs = [(pt[0], pt[5]) for pt in line if pt[5] is not None]
                ax2.plot([e[0] for e in effs], [e[1] for e in effs], "o-", color=color, label=name)
        ax1.plot([], [], ":", color="gray", label="ideal (linear)")
        ax2.axhline(1.0, color="gray", ls=":", label="ideal (100%)")
        for ax in (ax1, ax2):
            ax.set_xticks(all_n)
            ax.set_xlabel("workers (processes)")
            ax.grid(alpha=0.3)
        ax1.set_ylabel(f"throughput: {ylabel}")
        ax1.set_title("throughput", fontsize=9)
        ax1.set_ylim(bottom=0)
        ax2.set_ylabel("efficiency (fraction of ideal)")
        ax2.set_title("efficiency", fontsize=9)
        ax2.set_ylim(0, 1.15)
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
    return draw


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
        metric_name = next((str(r.extra[m]) for r, _ in members for m in CURVE_METRIC_KEYS
                            if isinstance(r.extra.get(m), str)), key)
        label_keys = [k for k in varying_keys([r for r, _ in members]) if k not in CURVE_FACETS]
        rows, lines = [], []
        for r, pts in members:
            name = " ".join([r.case] + [f"{k}={r.params[k]}" for k in label_keys if k in r.params])
            ys = [p[1] for p in pts]
            lines.append((name, pts))
            rows.append([name, str(len(pts)), fmt(pts[-1][0]), fmt(ys[-1]), fmt(max(ys)), fmt(min(ys)),
                         fmt(r.extra.get("time_to_target_s"))])
        targets = {r.extra.get(CURVE_TARGET_KEY) for r, _ in members}
        target = targets.pop() if len(targets) == 1 else None
        target = float(target) if isinstance(target, (int, float)) and not isinstance(target, bool) else None
        facet_text = ", ".join(f"{k}={v}" for k, v in facet)
        title = f"{exp}: test {metric_name} vs wall time" + (f" ({facet_text})" if facet_text else "")
        note = (f"From the `{key}` extra: points [wall s, {metric_name}] taken while training; a line that ends "
                "early finished sooner, a lower end is a worse model."
                + (f" Dashed line: the target {metric_name} {fmt(target)} (time_to_target_s)." if target else ""))
        table = Table(["line (case, params)", "points", "last time (s)", f"last {metric_name}",
                       f"max {metric_name}", f"min {metric_name}", "time_to_target_s"], rows)
        last = [(pts[-1][0], pts[-1][1], name) for name, pts in lines]
        first_done, top = min(last), max(last, key=lambda x: x[1])
        heads = [f"{title}: first to finish {first_done[2]} ({fmt(first_done[0])} s, {metric_name} "
                 f"{fmt(first_done[1])}); highest final {metric_name} {top[2]} ({fmt(top[1])} after "
                 f"{fmt(top[0])} s)"]
        reached = [(float(r.extra["time_to_target_s"]), name) for (r, _), (name, _) in zip(members, lines)
                   if isinstance(r.extra.get("time_to_target_s"), (int, float))]
        if reached:
            t, name = min(reached)
            heads.append(f"{title}: first to reach the target: {name} after {fmt(t)} s")
        out.append(Chart(title, _draw_curves(lines, metric_name, target), table, note, height_in=4.2,
                         headlines=heads))
    return out


def _draw_curves(lines, metric_name, target):
    def draw(fig):
        ax = fig.add_subplot(111)
        for (name, pts), color in zip(lines, _palette(len(lines))):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=".", color=color, label=name)
            ax.plot([pts[-1][0]], [pts[-1][1]], "o", color=color)
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {metric_name} = {fmt(target)}")
        ax.set_xlabel("wall time since training start (s)")
        ax.set_ylabel(f"test {metric_name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return draw


def side_by_side(runs: list) -> list[Section]:
    """Several runs: per experiment, each case's median in every run and its ratio to the first run."""
    first = runs[0]
    by_exp: dict[str, dict[str, list]] = {}
    for i, run in enumerate(runs):
        for r in usable(run.results):
            by_exp.setdefault(r.experiment, {}).setdefault(r.identity, [None] * len(runs))[i] = r
    sections = []
    for exp, idents in by_exp.items():
        # only cases measured in at least two runs can be compared
        idents = {k: v for k, v in idents.items() if sum(r is not None for r in v) > 1}
        if not idents:
            continue
        sec = Section(f"Runs side by side: {exp}", slug(f"compare-{exp}"),
                      intro=f"Ratios are each run's median over the reference run's for the same case and params; "
                            f"the reference is {first.label}, or the first run given that has the case.")
        items = list(idents.values())
        label_keys = varying_keys([r for recs in items for r in recs if r])
        for n, page in enumerate(_chunks(items, max(MAX_BARS // len(runs), 4)), 1):
            part = f" (part {n})" if len(items) > MAX_BARS // len(runs) else ""
            rows = []
            for recs in page:
                r0 = next(r for r in recs if r)
                row = [r0.case, params_text(r0.params), f"{r0.metric} ({r0.unit})"]
                for r in recs:
                    row.append(f"{fmt(median(r))} [{fmt(ci(r)[0])} – {fmt(ci(r)[1])}]" if r else "—")
                ref = r0  # the first run (in the order given) that has this case
                for r in recs[1:]:
                    if r is not None and r is not ref and median(ref):
                        ratio = median(r) / median(ref)
                        g = gain(median(r), median(ref), r.better)
                        change = ("same" if abs(g - 1) < 0.005 else
                                  f"{(g - 1) * 100:.0f}% better" if g > 1 else f"{(1 - g) * 100:.0f}% worse")
                        row.append(f"{ratio:.3f} ({change})")
                    else:
                        row.append("—")
                rows.append(row)
            cols = (["case", "params", "metric"] + [f"{run.label} median [CI]" for run in runs]
                    + [f"{run.label} / reference" for run in runs[1:]])
            table = Table(cols, rows)
            title = f"{exp}: median per case in each run{part}"
            note = "Bars: median; whiskers: 95% CI of the median (min-max with fewer than 6 repeats)."
            sec.items.append(Chart(title, _draw_runs(page, [r.label for r in runs], label_keys), table, note,
                                   height_in=1.4 + 0.28 * len(page) * len(runs)))
        sections.append(sec)
    return sections


def _draw_runs(page, labels, label_keys):
    def draw(fig):
        ax = fig.add_subplot(111)
        colors = _palette(len(labels))
        k = len(labels)
        h = 0.8 / k
        ticks, names, medians = [], [], []
        units, labelled = set(), set()
        for i, recs in enumerate(page):
            r0 = next(r for r in recs if r)
            ticks.append(i)
            names.append(" ".join([r0.case] + [f"{k}={r0.params[k]}" for k in label_keys if k in r0.params])[:70])
            units.add(f"{r0.metric} ({r0.unit}), {r0.better} is better")
            for j, r in enumerate(recs):
                if r is None:
                    continue
                m = median(r)
                lo, hi = ci(r)
                medians.append(m)
                yy = i - 0.4 + h * (j + 0.5)
                ax.barh(yy, m, height=h * 0.9, color=colors[j], label=labels[j] if j not in labelled else None)
                labelled.add(j)
                ax.errorbar(m, yy, xerr=[[max(m - lo, 0)], [max(hi - m, 0)]], fmt="none", ecolor="black",
                            capsize=2, lw=1)
        ax.set_yticks(ticks, names, fontsize=8)
        ax.invert_yaxis()
        if _log_scale_fits(medians):
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel("median: " + "; ".join(sorted(units)))
        ax.set_ylabel("case and params")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, title="run")
    return draw


# ---------------------------------------------------------------------------------------------- rendering

def clear_old(plot_dir: Path) -> None:
    """Removes PNGs an earlier report wrote here (numbered names), so plots/ matches the page."""
    for p in plot_dir.glob("*.png"):
        if re.match(r"^\d{3,}-", p.name):
            p.unlink()


def render(chart: Chart, plot_dir: Path, index: int) -> Path:
    """Draws one chart to plot_dir/NNN-<title>.png (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, min(max(chart.height_in, 3.0), 30.0)), dpi=100, layout="constrained")
    chart.draw(fig)
    fig.suptitle(chart.title, fontsize=11)
    path = plot_dir / f"{index:03d}-{slug(chart.title)}.png"
    fig.savefig(path)
    chart.png = path
    return path
