"""The regression gate's output, one renderer for `compare` and `ab`: a text table and a JSON document of a
`decide.Decision`. The caller passes what is specific to its command: the lines printed above the table (which
runs or workers, fingerprint differences) and the JSON context.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

from .decide import EXIT_UNUSABLE, POWER, CaseVerdict, Decision
from .record import Result
from .storage import LoadedRun

UNPAIRED_NOTE = ("UNPAIRED comparison of two runs: a machine whose speed drifts between the runs (CI runners, "
                 "cloud VMs) shows up here as a change. On such machines measure with `harness ab`, which pairs "
                 "A and B samples taken back to back.")


def change_percent(x: float | str | None) -> str:
    """A relative change as text; infinite (a change no sample count here could show) is "unreachable". Accepts
    the strings JSON stores non-finite floats as."""
    if isinstance(x, str):
        x = float(x)
    if x is None or math.isnan(x):
        return "-"
    if math.isinf(x):
        return "unreachable"
    return f"{x * 100:.1f}%"


def _num(x: float, unit: str = "") -> str:
    return "-" if math.isnan(x) else f"{x:.4g}{(' ' + unit) if unit else ''}"


def _p(x: float) -> str:
    return "-" if math.isnan(x) else (f"{x:.2g}" if x < 0.01 else f"{x:.3f}")


def _ratio(cv: CaseVerdict) -> str:
    if math.isnan(cv.ratio):
        return "-"
    lo, hi = cv.ratio_ci
    return f"{cv.ratio:.3f} ({cv.ci_level * 100:.1f}% CI {lo:.3f}-{hi:.3f})"


def text(decision: Decision, preamble: list[str]) -> str:
    """The table, the cases left out, how to read it, and the outcome with its exit code."""
    lines = list(preamble)
    if not decision.paired:
        lines += [UNPAIRED_NOTE, ""]
    sides = ("A", "B") if decision.paired else ("baseline", "current")
    rows = [("case", *sides, "ratio (CI)", "p", "q (BH)", "detectable", "verdict")]
    for cv in decision.cases:
        verdict = cv.verdict + (f" ({cv.note})" if cv.note else "")
        rows.append((cv.label, _num(cv.baseline_median, cv.unit), _num(cv.current_median, cv.unit), _ratio(cv),
                     _p(cv.p), _p(cv.q), change_percent(cv.mdc), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    for title, items in (("only in baseline (not compared)", decision.only_baseline),
                         ("only in current (not compared)", decision.only_current)):
        if items:
            lines.append(f"\n{title}:")
            lines += [f"  {r.name} {r.params} [{r.status}]" for r in items]
    if decision.not_comparable:
        lines.append("\nin both but not comparable:")
        lines += [f"  {d['experiment']}.{d['case']} {d['params']}: {d['reason']}" for d in decision.not_comparable]
    lines += [""] + _how_to_read(decision)
    regs = decision.regressions
    lines.append(f"\n{len(regs)} regression(s) in {len(decision.cases)} compared case(s)"
                 + (": " + "; ".join(c.label for c in regs) if regs else "") + f" -> exit {decision.exit_code}")
    return "\n".join(lines)


def _how_to_read(decision: Decision) -> list[str]:
    n = len([c for c in decision.cases if not math.isnan(c.p)])
    if decision.paired:
        lines = ["ratio: exp(median of the paired log ratios B/A), oriented so > 1 is worse (time up or throughput "
                 "down); CI: sign-test order statistics, with its real coverage. p: one-sided Wilcoxon "
                 "signed-rank test, exact over sign flips (pairs with A == B left out)."]
    else:
        lines = ["ratio: ratio of medians, oriented so > 1 is worse (time up or throughput down); CI: "
                 "distribution-free (pairwise ratios, Moses), with its real coverage. p: one-sided Mann-Whitney U, "
                 "exact permutation p (ties included)."]
    looks = round(decision.alpha / max(1, n) / decision.lone_alpha) if decision.lone_alpha else 1
    if looks > 1:
        lines.append(f"Sequential: a case whose first pairs could not decide got more pairs; each p is Bonferroni-"
                     f"corrected for the {looks} looks (x{looks}), so the false-alarm rate stays at alpha.")
    sampled = [c.label for c in decision.cases if c.p_method.split(",")[0] not in ("", "exact")]
    if sampled:
        lines.append(f"p from seeded random permutations (too many samples to count) for: {'; '.join(sampled)}.")
    unit = "pairs" if decision.paired else "samples"
    lines.append(f"False discovery rate controlled with Benjamini-Hochberg over {n} compared case(s) at "
                 f"alpha={decision.alpha:g}; a case regressed when q <= {decision.alpha:g} and ratio > "
                 f"{1 + decision.threshold:.3g} (threshold {change_percent(decision.threshold)}).")
    lines.append(f"detectable: smallest worsening these {unit} detect with {POWER:.0%} power (simulated for this "
                 f"test at the observed noise) at a lone-case p <= {decision.lone_alpha:.2g} (alpha/{n}"
                 f"{f'/{looks} looks' if looks > 1 else ''}); "
                 "`inconclusive` means no regression was found but one of the threshold's size could have been "
                 "missed.")
    return lines


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return [_json_num(x) for x in v]
    return v


def to_json(decision: Decision, context: dict[str, Any]) -> dict[str, Any]:
    """The decision as one JSON-ready dict (inf as "inf", NaN as null), with the command's context merged in."""
    def brief(r: Result) -> dict[str, Any]:
        return {"identity": r.identity, "experiment": r.experiment, "case": r.case, "params": r.params,
                "status": r.status}

    return {
        "design": "paired" if decision.paired else "unpaired",
        "threshold": decision.threshold, "alpha": decision.alpha, "power": POWER,
        "fdr": "benjamini-hochberg", "lone_case_alpha": decision.lone_alpha,
        **context,
        "cases": [{k: _json_num(v) for k, v in dataclasses.asdict(cv).items()} for cv in decision.cases],
        "only_in_baseline": [brief(r) for r in decision.only_baseline],
        "only_in_current": [brief(r) for r in decision.only_current],
        "not_comparable": decision.not_comparable,
        "regressions": [c.identity for c in decision.regressions],
        "exit_code": decision.exit_code,
    }


def print_error(message: str, as_json: bool) -> int:
    """Unusable input: one line on stderr (and a JSON object on stdout with --json); returns exit code 2."""
    if as_json:
        print(json.dumps({"error": message, "exit_code": EXIT_UNUSABLE}))
    print(f"harness: error: {message}", file=sys.stderr)
    return EXIT_UNUSABLE


# --- what `compare` prints above the table ----------------------------------------------------------------------


def compare_preamble(base: LoadedRun, cur: LoadedRun, fingerprint: list[dict[str, Any]]) -> list[str]:
    lines = []
    if fingerprint:
        lines.append("Fingerprint differences (the comparison still runs; read the figures with them in mind):")
        for d in fingerprint:
            change = d.get("note") or f"{d['baseline']} -> {d['current']}"
            lines.append(f"  {d['key']}: {change}")
        lines.append("")
    lines.append(f"baseline: {base.results_file}  (run {', '.join(base.run_ids)})")
    if base.note:
        lines.append(f"          {base.note}")
    lines.append(f"current:  {cur.results_file}  (run {', '.join(cur.run_ids)})")
    lines += [f"warning: {w}" for w in base.problems + cur.problems]
    lines.append("")
    return lines


def compare_context(base: LoadedRun, cur: LoadedRun, fingerprint: list[dict[str, Any]]) -> dict[str, Any]:
    def side(s: LoadedRun) -> dict[str, Any]:
        return {"path": str(s.results_file), "run_ids": s.run_ids, "env_id": (s.env or {}).get("env_id"),
                "note": s.note or None, "warnings": s.problems}

    return {"baseline": side(base), "current": side(cur), "fingerprint_differences": fingerprint}
