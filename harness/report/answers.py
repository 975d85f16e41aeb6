"""The four questions the harness exists to answer, each answered in one line with its evidence.

A winner is named only when its interval is clear of the runner-up's (no overlap); otherwise the answer says
"no clear difference" and names who is tied. Pure: records in, sentences out (the page and `harness show` print
them). The questions and the cases they read:

- compaction: does compacting small files into Parquet pay, and after how many reads? `ingestion.compact` (the
  one-time cost) against the time each read of `compacted` saves over its reference case (small_files);
- UDF styles: which style wins and by how much, and the lead of the styles' limit (native SQL) over every UDF;
- training: which framework reaches the quality target first, and which ends with the best test quality;
- scaling: how throughput and efficiency go from 1 to N workers, per launcher.

References and limits come from the records' roles (declared where each case is registered).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..record import Result
from .records import (WORKERS_AXIS, best_match, clear_of, fmt, gain, interval, is_scaling_point, label, limit_cases,
                      median, params_text, quality, reference_record, throughput, varying_keys, workers_of)

COMPACTION = ("ingestion", "compact", "compacted")  # experiment, the one-time job, the read it speeds up
UDF = "udf"
TRAINING = "training"
# a final test quality is one value per case (no interval): differences below this count as none
QUALITY_TIE = 0.005


@dataclass
class Entry:
    """One contender: a value and the interval it may lie in."""

    label: str
    value: float
    low: float
    high: float


@dataclass
class Ranking:
    order: list[Entry]  # best first
    clear: bool  # the best's interval is clear of the runner-up's (always true for a lone entry)
    tied: list[Entry]  # the best and every entry whose interval overlaps the best's

    @property
    def best(self) -> Entry:
        return self.order[0]


def rank(entries: list[Entry], better: str) -> Ranking:
    """Orders entries best first; the best wins clearly only when its interval is clear of the runner-up's."""
    order = sorted(entries, key=lambda e: e.value, reverse=(better == "higher"))
    best = order[0]
    tied = [best] + [e for e in order[1:] if not clear_of((best.low, best.high), (e.low, e.high), better)]
    return Ranking(order, len(tied) == 1, tied)


def record_entry(r: Result, text: str) -> Entry:
    lo, hi = interval(r)
    return Entry(text, median(r), lo, hi)


@dataclass
class Answer:
    question: str
    verdict: str  # one line
    evidence: list[str] = field(default_factory=list)  # the numbers behind it, one line per setting
    measured: bool = True  # False: the run has none of the cases this question needs


def answer_all(results: list[Result]) -> list[Answer]:
    return [compaction(results), udf_styles(results), training(results), scaling(results)]


def _setting(r: Result, keys: list[str]) -> str:
    """The params that tell this setting from the others, as a line's prefix ('' when there is one setting)."""
    text = params_text(r.params, keys)
    return f"{text}: " if text else ""


# ------------------------------------------------------------------------------------------------ compaction

def compaction(results: list[Result]) -> Answer:
    exp, job_case, read_case = COMPACTION
    question = "Does compacting small files into Parquet pay, and after how many reads?"
    ok = [r for r in results if r.experiment == exp and r.status == "ok" and median(r) is not None]
    jobs = [r for r in ok if r.case == job_case]
    reads = [r for r in ok if r.case == read_case]
    keys = varying_keys(reads)
    pays, unclear, loses, evidence = [], [], [], []
    for read in reads:
        job, before = best_match(read, jobs), reference_record(read, ok)
        if job is None or before is None or before is read:
            continue
        s, p, c = median(before), median(read), median(job)
        where = _setting(read, keys)
        (s_lo, s_hi), (p_lo, p_hi), (c_lo, c_hi) = interval(before), interval(read), interval(job)
        reads_line = (f"{before.case} {fmt(s)} s [{fmt(s_lo)}–{fmt(s_hi)}], {read.case} {fmt(p)} s "
                      f"[{fmt(p_lo)}–{fmt(p_hi)}], {job_case} [{fmt(c_lo)}–{fmt(c_hi)}]")
        if clear_of((p_lo, p_hi), (s_lo, s_hi), "lower"):
            saved, n = s - p, c / (s - p)
            n_lo, n_hi = c_lo / (s_hi - p_lo), c_hi / (s_lo - p_hi)
            pays.append((n, where))
            evidence.append(f"{where}compaction ({fmt(c)} s once) against {fmt(saved)} s saved per read "
                            f"({s / p:.1f}× faster reads): pays for itself after {n:.1f} reads "
                            f"({n_lo:.1f}–{n_hi:.1f} from the intervals); {reads_line}")
        elif clear_of((s_lo, s_hi), (p_lo, p_hi), "lower"):
            loses.append(where)
            evidence.append(f"{where}the compacted Parquet reads slower than the small files, so compaction "
                            f"never pays; {reads_line}")
        else:
            unclear.append(where)
            evidence.append(f"{where}no clear difference between the two reads (intervals overlap), so no "
                            f"saving to pay compaction back; {reads_line}")
    if not evidence:
        return Answer(question, f"not measured in this run: needs {exp}.{job_case}, {exp}.{read_case} and its "
                                f"reference case with the same params (harness run {exp})", measured=False)
    total = len(evidence)
    if pays:
        ns = sorted(n for n, _ in pays)
        after = f"after {ns[0]:.1f} reads" if len(ns) == 1 else f"after {ns[0]:.1f} to {ns[-1]:.1f} reads"
        verdict = (f"Yes, {after}" if len(pays) == total else
                   f"Yes in {len(pays)} of {total} settings ({after}); " +
                   ("no clear difference" if unclear else "slower reads") + " in the rest")
    elif loses and not unclear:
        verdict = "No: the compacted Parquet reads slower than the small files"
    else:
        verdict = "No clear difference between reading the small files and the compacted Parquet"
    return Answer(question, verdict, evidence)


# ------------------------------------------------------------------------------------------------ UDF styles

def udf_styles(results: list[Result]) -> Answer:
    question = "Which UDF style wins, by how much, and how far ahead is native SQL?"
    ok = [r for r in results if r.experiment == UDF and r.status == "ok" and median(r) is not None]
    limits = limit_cases(ok)
    contenders_all = [r for r in ok if r.case not in limits]
    if not contenders_all:
        return Answer(question, f"not measured in this run: needs UDF styles (harness run {UDF})", measured=False)
    common = set.intersection(*(set(r.params) for r in ok))
    group_keys = [k for k in varying_keys(ok) if k in common]  # a setting: workload, rows, ... as every case has
    groups: dict[tuple, list[Result]] = {}
    for r in ok:
        groups.setdefault(tuple(repr(r.params[k]) for k in group_keys), []).append(r)
    shorts, evidence = [], []
    for members in groups.values():
        styles = [r for r in members if r.case not in limits]
        if not styles:
            continue
        where = _setting(members[0], group_keys)
        label_keys = [k for k in varying_keys(styles) if k not in group_keys]
        pairs = [(r, record_entry(r, label(r, label_keys))) for r in styles]
        ranking = rank([e for _, e in pairs], styles[0].better)
        best = next(r for r, e in pairs if e is ranking.best)
        ref = reference_record(best, members)
        over_ref = (f", {gain(median(best), median(ref), best.better):.2f}× {ref.case}"
                    if ref is not None and ref is not best else "")
        if len(ranking.order) == 1:
            short = f"only {ranking.best.label} ran"
            line = f"{where}only one UDF style ran ({ranking.best.label}, {fmt(ranking.best.value)} {best.unit})"
        elif ranking.clear:
            runner = ranking.order[1]
            lead = gain(ranking.best.value, runner.value, best.better)
            short = f"{ranking.best.label} wins by {lead:.2f}× over {runner.label}"
            line = (f"{where}{ranking.best.label} wins, {lead:.2f}× the runner-up {runner.label} "
                    f"({fmt(ranking.best.value)} vs {fmt(runner.value)} {best.unit}, intervals clear){over_ref}")
        else:
            names = ", ".join(e.label for e in ranking.tied)
            short = f"no clear difference between {names}"
            line = (f"{where}no clear difference between {names} (their intervals overlap; medians "
                    + ", ".join(fmt(e.value) for e in ranking.tied) + f" {best.unit}){over_ref}")
        lim = [r for r in members if r.case in limits]
        if lim:
            native = best_match(best, lim) or lim[0]
            leads = sorted((gain(median(native), median(r), r.better), e.label) for r, e in pairs)
            lo, hi = leads[0], leads[-1]
            span = f"{lo[0]:.2f}× (over {lo[1]})" + (f" to {hi[0]:.2f}× (over {hi[1]})" if len(leads) > 1 else "")
            clear = clear_of(interval(native), interval(best), best.better)
            line += (f"; {native.case} leads every UDF: {span}"
                     + ("" if clear else f", though not clearly ahead of {ranking.best.label} (intervals overlap)"))
        shorts.append(where + short)
        evidence.append(line)
    verdict = "; ".join(shorts) if len(shorts) <= 2 else (
        f"{sum('wins' in s for s in shorts)} of {len(shorts)} settings have a clear winner (below)")
    return Answer(question, verdict, evidence)


# ------------------------------------------------------------------------------------------------ training

def _metric_name(name: str) -> str:
    return {"r2": "R²"}.get(name, name)


def time_to_target_entry(r: Result, text: str) -> Entry | None:
    """Time to the quality target and its interval: the record's own (`time_to_target_ci`), else the run's
    wall-time interval scaled to it (the target is reached within the timed training)."""
    t = r.extra.get("time_to_target_s")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        return None
    own = r.extra.get("time_to_target_ci")
    if isinstance(own, list) and len(own) == 2 and all(isinstance(x, (int, float)) for x in own):
        return Entry(text, float(t), float(own[0]), float(own[1]))
    m, (lo, hi) = median(r), interval(r)
    return Entry(text, float(t), t * lo / m, t * hi / m) if m else Entry(text, float(t), t, t)


def training(results: list[Result]) -> Answer:
    question = "Which framework reaches the quality target first, and which ends best?"
    ok = [r for r in results if r.experiment == TRAINING and r.status == "ok" and median(r) is not None
          and (quality(r) is not None or "time_to_target_s" in r.extra)]
    if not ok:
        return Answer(question, f"not measured in this run: needs framework cases with a test metric (harness run "
                                f"{TRAINING})", measured=False)
    common = set.intersection(*(set(r.params) for r in ok))
    group_keys = [k for k in varying_keys(ok) if k in common]  # task, model, ...: what every framework shares
    groups: dict[tuple, list[Result]] = {}
    for r in ok:
        groups.setdefault(tuple(repr(r.params[k]) for k in group_keys), []).append(r)
    shorts, evidence = [], []
    for members in groups.values():
        where = _setting(members[0], group_keys)
        label_keys = [k for k in varying_keys(members) if k not in group_keys]
        names = {id(r): label(r, label_keys) for r in members}
        q = next((quality(r) for r in members if quality(r)), None)
        metric = _metric_name(q[0]) if q else "quality"
        target = next((r.extra["target"] for r in members if isinstance(r.extra.get("target"), (int, float))), None)
        goal = f"{metric} {fmt(target)}" if target is not None else "the target"
        parts, short = [], []
        timed = [e for r in members if (e := time_to_target_entry(r, names[id(r)])) is not None]
        missed = [names[id(r)] for r in members if r.extra.get("time_to_target_s") is None]
        if timed:
            ranking = rank(timed, "lower")
            if ranking.clear:
                nxt = (f", clear of {ranking.order[1].label} ({fmt(ranking.order[1].value)} s)"
                       if len(ranking.order) > 1 else "")
                parts.append(f"first to {goal}: {ranking.best.label} after {fmt(ranking.best.value)} s "
                             f"[{fmt(ranking.best.low)}–{fmt(ranking.best.high)}]{nxt}")
                short.append(f"first to {goal}: {ranking.best.label}")
            else:
                tied = ", ".join(f"{e.label} {fmt(e.value)} s" for e in ranking.tied)
                parts.append(f"first to {goal}: no clear difference between {tied} (intervals overlap)")
                short.append(f"first to {goal}: no clear difference")
        else:
            parts.append(f"none reached {goal}")
            short.append(f"none reached {goal}")
        if missed and timed:
            parts.append("never reached it: " + ", ".join(missed))
        finals = [(names[id(r)], quality(r)[1]) for r in members if quality(r)]
        if finals:
            ranking = rank([Entry(n, v, v - QUALITY_TIE / 2, v + QUALITY_TIE / 2) for n, v in finals], "higher")
            if ranking.clear:
                nxt = (f" (next {ranking.order[1].label} {fmt(ranking.order[1].value)})"
                       if len(ranking.order) > 1 else "")
                parts.append(f"best final {metric}: {ranking.best.label} {fmt(ranking.best.value)}{nxt}")
                short.append(f"ends best: {ranking.best.label}")
            else:
                tied = ", ".join(f"{e.label} {fmt(e.value)}" for e in ranking.tied)
                parts.append(f"final {metric}: no clear difference between {tied} (within {QUALITY_TIE}: one value "
                             "per case, no interval)")
                short.append("ends best: no clear difference")
        evidence.append(where + "; ".join(parts))
        shorts.append(where + ", ".join(short))
    verdict = "; ".join(shorts) if len(shorts) <= 2 else f"{len(shorts)} settings (below)"
    return Answer(question, verdict, evidence)


# ------------------------------------------------------------------------------------------------ scaling

def scaling(results: list[Result]) -> Answer:
    question = "How do throughput and efficiency go from 1 to N workers?"
    points = [r for r in results if r.status == "ok" and is_scaling_point(r)]
    series: dict[tuple, list[Result]] = {}
    for r in points:
        key = (r.experiment, r.case) + tuple((k, repr(v)) for k, v in sorted(r.params.items()) if k != WORKERS_AXIS)
        series.setdefault(key, []).append(r)
    label_keys = [k for k in varying_keys(points) if k != WORKERS_AXIS]
    rows: list[tuple[Entry, str, int]] = []  # speedup entry, change word, N
    evidence = []
    for pts in series.values():
        pts.sort(key=workers_of)
        one, top = pts[0], pts[-1]
        if workers_of(one) != 1 or top is one:
            continue
        n = workers_of(top)
        (v1, lo1, hi1, unit), (vn, lon, hin, _) = throughput(one), throughput(top)
        name = label(top, label_keys)
        s = Entry(name, vn / v1, lon / hi1, hin / lo1)
        if clear_of((lon, hin), (lo1, hi1), "higher"):
            change = "clearly more"
        elif clear_of((lo1, hi1), (lon, hin), "higher"):
            change = "clearly less"
        else:
            change = "no clear change"
        rows.append((s, change, n))
        evidence.append(f"{name}: {n} workers give {s.value:.2f}× the 1-worker throughput "
                        f"({fmt(vn)} vs {fmt(v1)} {unit}; {s.value / n:.0%} efficiency): {change}"
                        + ("" if change != "no clear change" else " (intervals overlap)"))
    if not rows:
        return Answer(question, "not measured in this run: needs a launcher at 1 worker and at more (harness run "
                                "scaling --set workers=1,2)", measured=False)
    ns = sorted({n for _, _, n in rows})
    span = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    counts = {c: sum(1 for _, ch, _ in rows if ch == c) for c in ("clearly more", "clearly less", "no clear change")}
    said = {"clearly more": "rose clearly", "clearly less": "fell clearly", "no clear change": "no clear change"}
    summary = (f"from 1 to {span} workers, throughput: "
               + ", ".join(f"{said[c]} in {n} of {len(rows)}" for c, n in counts.items() if n))
    at_top = [e for e, _, n in rows if n == ns[-1]]
    ranking = rank(at_top, "higher")
    best = ranking.best
    if len(at_top) == 1:
        tail = f"; {best.label}: {best.value:.2f}× ({best.value / ns[-1]:.0%} efficiency)"
    elif ranking.clear:
        tail = (f"; best at {ns[-1]} workers: {best.label}, {best.value:.2f}× ({best.value / ns[-1]:.0%} "
                f"efficiency), clear of {ranking.order[1].label} ({ranking.order[1].value:.2f}×)")
    else:
        tail = (f"; best at {ns[-1]} workers: no clear difference between "
                + ", ".join(f"{e.label} ({e.value:.2f}×)" for e in ranking.tied))
    return Answer(question, summary + tail, evidence)


__all__ = ["Answer", "Entry", "Ranking", "answer_all", "compaction", "rank", "scaling", "training", "udf_styles"]
