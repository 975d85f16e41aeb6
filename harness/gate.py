"""The regression gate (`harness compare`) and per-machine baselines (`harness baseline save`).

Cases are matched by identity (experiment, case, params). For each case present and `ok` on both sides:
the ratio of medians in the metric's worse direction with a bootstrap CI, a one-sided Mann-Whitney U test
("current is worse"), Benjamini-Hochberg control of the false discovery rate across all compared cases, and
the smallest change the samples could have detected. A case regressed only when its BH-adjusted p (q) is at
most alpha AND its ratio is beyond 1 + threshold. A case that was ok in the baseline and now fails (error or
timeout) also counts as a regression: it got infinitely slower.

Exit codes: 0 no regression, 1 regression(s), 2 unusable input (nothing compared).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import record, stats
from .record import Result

EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2
BASELINES = "baselines"
BASELINE_META = "baseline.json"
POWER = 0.8  # the power used for "smallest detectable change" and "repeats needed"


class GateError(Exception):
    """Unusable input: the message names the problem and the fix."""


# --- loading the two sides -----------------------------------------------------------------------------------

@dataclass
class Side:
    label: str  # what the user passed
    path: Path  # the results.jsonl read
    results: list[Result]
    env: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # e.g. which stored baseline was picked
    warnings: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return sorted({r.run_id for r in self.results})


def load_side(arg: str | Path) -> Side:
    """A run folder or a results.jsonl file -> its deduplicated records and env.json (when next to it)."""
    try:
        data = record.load_run(Path(arg))
    except record.RunDirError as e:
        raise GateError(str(e)) from None
    return Side(str(arg), data.results_file, data.results, data.env or {}, warnings=data.problems)


def machine_key(env: dict[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint a baseline is stored under: CPU model, core count, GPUs."""
    m, g = env.get("machine", {}) or {}, env.get("gpu", {}) or {}
    return {"cpu_model": m.get("cpu_model"), "cores": m.get("cores"),
            "gpus": sorted(g.get("names", []) or []) if g.get("count") else []}


def machine_slug(env: dict[str, Any]) -> str:
    """A readable, stable folder name for a machine: `<cpu>-<N>c[-<gpu>]-<hash>`."""
    key = machine_key(env)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    cpu = re.sub(r"[^a-z0-9]+", "-", str(key["cpu_model"] or "unknown-cpu").lower()).strip("-")[:40]
    gpu = ("-" + re.sub(r"[^a-z0-9]+", "-", key["gpus"][0].lower()).strip("-")[:24]) if key["gpus"] else ""
    return f"{cpu}-{key['cores']}c{gpu}-{digest}"


def save_baseline(run_dir: Path, results_root: Path) -> Path:
    """Copies a run (results.jsonl + env.json) to RESULTS/baselines/<machine>/<run_id>/; returns that folder."""
    run_dir = Path(run_dir)
    side = load_side(run_dir)
    if not side.env:
        raise GateError(f"{run_dir}: no {record.ENV_FILE} beside the results, so the machine is unknown; "
                        f"save a folder written by `harness run`")
    ok = [r for r in side.results if r.status == "ok" and r.samples]
    if not ok:
        raise GateError(f"{side.path}: no case finished ok with samples; a baseline needs measured cases")
    from .env import fingerprint

    here = fingerprint()
    if machine_key(here) != machine_key(side.env):
        print(f"harness: warning: {run_dir} was measured on another machine "
              f"({_describe_machine(side.env)}); stored under that machine, not this one "
              f"({_describe_machine(here)})", file=sys.stderr)
    run_id = side.results[0].run_id
    dest = Path(results_root) / BASELINES / machine_slug(side.env) / run_id
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(side.path, dest / record.RESULTS_FILE)
    record.write_json(dest / record.ENV_FILE, side.env)
    record.write_json(dest / BASELINE_META, {
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "source": str(run_dir.resolve()),
        "run_id": run_id, "machine": machine_key(side.env), "cases_ok": len(ok), "cases": len(side.results)})
    return dest


def find_baseline(roots: list[Path], env: dict[str, Any]) -> tuple[Path, str]:
    """The newest stored baseline whose machine matches `env`'s; raises GateError listing what exists."""
    want = machine_key(env)
    found, others = [], []
    for root in roots:
        base = root / BASELINES
        if not base.is_dir():
            continue
        for meta in base.glob(f"*/*/{BASELINE_META}"):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if info.get("machine") == want:
                found.append((info.get("saved_at", ""), meta.parent, info))
            else:
                others.append(meta.parent)
    if not found:
        where = " or ".join(str(r / BASELINES) for r in roots)
        msg = f"no stored baseline for this machine ({_describe_machine(env)}) under {where}"
        if others:
            msg += f"; baselines there are for other machines: {', '.join(str(o) for o in others[:5])}"
        raise GateError(msg + "; store one with `harness baseline save RESULTS/<run_id>`, or pass a run folder "
                              "as BASELINE")
    saved_at, path, info = max(found, key=lambda t: t[0])
    note = f"stored baseline {path} (run {info.get('run_id')}, saved {saved_at}"
    note += f"; newest of {len(found)})" if len(found) > 1 else ")"
    return path, note


def _describe_machine(env: dict[str, Any]) -> str:
    k = machine_key(env)
    gpus = ", ".join(k["gpus"]) if k["gpus"] else "no GPU"
    return f"{k['cpu_model']}, {k['cores']} cores, {gpus}"


def resolve(baseline: str, current: str, results_root: Path | None = None) -> tuple[Side, Side]:
    cur = load_side(current)
    if baseline == "baseline" and not Path(baseline).exists():
        # the machine to match is CURRENT's (its env.json); a bare results file falls back to this machine
        env = cur.env
        if not env:
            from .env import fingerprint

            env = fingerprint()
        roots = [Path(results_root or os.environ.get("HARNESS_RESULTS", "results"))]
        parent_root = cur.path.parent.parent  # CURRENT is usually RESULTS/<run_id>/results.jsonl
        if parent_root.resolve() not in {r.resolve() for r in roots}:
            roots.append(parent_root)
        path, note = find_baseline(roots, env)
        base = load_side(path)
        base.note = note
        return base, cur
    try:
        return load_side(baseline), cur
    except GateError as e:
        raise GateError(f"{e} (or `baseline` for this machine's stored baseline)") from None


# --- fingerprint differences ---------------------------------------------------------------------------------

def _flatten(env: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = env.get("machine", {}) or {}
    for k in ("cpu_model", "cores", "cores_available", "memory_gb", "arch"):
        out[f"machine.{k}"] = m.get(k)
    g = env.get("gpu", {}) or {}
    for k in ("count", "names", "driver", "cuda_driver", "torch_cuda", "nccl"):
        out[f"gpu.{k}"] = g.get(k)
    out["os.release"] = (env.get("os") or {}).get("release")
    out["python"] = (env.get("python") or {}).get("version")
    out["java"] = env.get("java")
    for k, v in sorted((env.get("packages") or {}).items()):
        out[f"packages.{k}"] = v
    out["git.commit"] = (env.get("git") or {}).get("commit")
    return out


def fingerprint_differences(base_env: dict[str, Any], cur_env: dict[str, Any]) -> list[dict[str, Any]]:
    """Every fingerprint field that differs (hardware, GPU stack, OS, Python, Java, packages, commit)."""
    if not base_env or not cur_env:
        missing = "baseline" if not base_env else "current"
        return [{"key": "env.json", "baseline": bool(base_env), "current": bool(cur_env),
                 "note": f"{missing} has no env.json: its machine and versions are unknown"}]
    a, b = _flatten(base_env), _flatten(cur_env)
    return [{"key": k, "baseline": a.get(k), "current": b.get(k)} for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


# --- the comparison ------------------------------------------------------------------------------------------

@dataclass
class CaseComparison:
    identity: str
    experiment: str
    case: str
    params: dict[str, Any]
    metric: str
    unit: str
    better: str
    n_baseline: int = 0
    n_current: int = 0
    baseline_median: float = math.nan
    current_median: float = math.nan
    ratio: float = math.nan  # > 1 is worse, whatever the metric's direction
    ratio_ci: tuple[float, float] = (math.nan, math.nan)
    p: float = math.nan  # one-sided MWU, "current is worse"
    q: float = math.nan  # BH-adjusted p
    p_better: float = math.nan
    q_better: float = math.nan
    mdc: float = math.nan  # smallest relative worsening detectable (power POWER) with these samples
    repeats_needed: int | None = None  # per side, to detect a change of `threshold`
    verdict: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.experiment}.{self.case}" + (f" {ps}" if ps else "")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ratio_ci"] = list(self.ratio_ci)
        return {k: _json_num(v) for k, v in d.items()}


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [_json_num(x) for x in v]
    return v


@dataclass
class Comparison:
    baseline: Side
    current: Side
    threshold: float
    alpha: float
    cases: list[CaseComparison]
    only_baseline: list[Result]
    only_current: list[Result]
    not_comparable: list[dict[str, Any]]
    fingerprint: list[dict[str, Any]]
    lone_alpha: float  # the p a lone regression needs under BH: alpha / m

    @property
    def regressions(self) -> list[CaseComparison]:
        return [c for c in self.cases if c.verdict in (REGRESSED, FAILED)]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK


REGRESSED, FAILED = "REGRESSED", "FAILED NOW"
SLOWER, IMPROVED, UNCHANGED, INCONCLUSIVE = "worse, within threshold", "improved", "no change", "inconclusive"


def compare(base: Side, cur: Side, threshold: float = 0.05, alpha: float = 0.05) -> Comparison:
    """Matches cases by identity and tests each; see the module docstring for the decision rule."""
    b = {r.identity: r for r in base.results}
    c = {r.identity: r for r in cur.results}
    cases: list[CaseComparison] = []
    not_comparable: list[dict[str, Any]] = []
    for ident in sorted(set(b) & set(c)):
        rb, rc = b[ident], c[ident]
        cc = CaseComparison(ident, rc.experiment, rc.case, dict(rc.params), rc.metric, rc.unit, rc.better,
                            n_baseline=len(rb.samples), n_current=len(rc.samples))
        if (rb.metric, rb.better) != (rc.metric, rc.better):
            not_comparable.append(_nc(rc, f"metric changed: {rb.metric} ({rb.better} is better) -> "
                                          f"{rc.metric} ({rc.better} is better)"))
            continue
        if rb.status == "ok" and rc.status in ("error", "timeout"):
            first = ((rc.error or {}).get("message") or "").strip().splitlines()
            cc.verdict, cc.note = FAILED, f"{rc.status} now: {first[0][:160] if first else ''}"
            cc.baseline_median = stats.summarize(rb.samples).get("median", math.nan)
            cases.append(cc)
            continue
        if rb.status != "ok" or rc.status != "ok":
            not_comparable.append(_nc(rc, f"status {rb.status} in baseline, {rc.status} in current"))
            continue
        if not rb.samples or not rc.samples:
            not_comparable.append(_nc(rc, f"no samples ({len(rb.samples)} in baseline, {len(rc.samples)} in current)"))
            continue
        cc.baseline_median = stats.summarize(rb.samples)["median"]
        cc.current_median = stats.summarize(rc.samples)["median"]
        if cc.baseline_median <= 0 or cc.current_median <= 0:
            not_comparable.append(_nc(rc, "a median is zero or negative: no ratio"))
            continue
        cc.ratio = stats.worse_ratio(cc.baseline_median, cc.current_median, rc.better)
        cc.ratio_ci = stats.bootstrap_ratio_ci(rb.samples, rc.samples, rc.better)
        cc.p = stats.mann_whitney_worse(rb.samples, rc.samples, rc.better)
        cc.p_better = stats.mann_whitney_worse(rc.samples, rb.samples, rc.better)
        cases.append(cc)

    tested = [cc for cc in cases if not math.isnan(cc.p)]
    for cc, q in zip(tested, stats.benjamini_hochberg([cc.p for cc in tested])):
        cc.q = q
    for cc, q in zip(tested, stats.benjamini_hochberg([cc.p_better for cc in tested])):
        cc.q_better = q
    m = max(1, len(tested))
    lone_alpha = alpha / m
    for cc in tested:
        rb, rc = b[cc.identity], c[cc.identity]
        cc.mdc = stats.min_detectable_change(rb.samples, rc.samples, lone_alpha, POWER)
        cc.repeats_needed = stats.repeats_needed(stats.pooled_log_spread(rb.samples, rc.samples), threshold,
                                                 lone_alpha, POWER)
        if cc.q <= alpha and cc.ratio > 1 + threshold:
            cc.verdict = REGRESSED
        elif cc.q <= alpha and cc.ratio > 1:
            cc.verdict = SLOWER
        elif cc.q_better <= alpha and cc.ratio < 1:
            cc.verdict = IMPROVED
        elif cc.mdc <= threshold:
            cc.verdict = UNCHANGED
        else:
            cc.verdict = INCONCLUSIVE
            need = f"~{cc.repeats_needed} repeats" if cc.repeats_needed else "far more repeats (or less noise)"
            cc.note = f"could only detect {_pct(cc.mdc)}; {need} per side to detect {_pct(threshold)}"
    return Comparison(base, cur, threshold, alpha, cases,
                      only_baseline=[b[i] for i in sorted(set(b) - set(c))],
                      only_current=[c[i] for i in sorted(set(c) - set(b))],
                      not_comparable=not_comparable, fingerprint=fingerprint_differences(base.env, cur.env),
                      lone_alpha=lone_alpha)


def _nc(r: Result, why: str) -> dict[str, Any]:
    return {"identity": r.identity, "experiment": r.experiment, "case": r.case, "params": r.params, "reason": why}


# --- output ------------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "any (n too small)"
    return f"{x * 100:.1f}%"


def _num(x: float, unit: str = "") -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.4g}{(' ' + unit) if unit else ''}"


def _p(x: float) -> str:
    return "-" if math.isnan(x) else (f"{x:.2g}" if x < 0.01 else f"{x:.3f}")


def render_table(cmp: Comparison) -> str:
    lines = []
    if cmp.fingerprint:
        lines.append("Fingerprint differences (the comparison still runs; read the figures with them in mind):")
        for d in cmp.fingerprint:
            change = d.get("note") or f"{d['baseline']} -> {d['current']}"
            lines.append(f"  {d['key']}: {change}")
        lines.append("")
    lines.append(f"baseline: {cmp.baseline.path}  (run {', '.join(cmp.baseline.run_ids)})")
    if cmp.baseline.note:
        lines.append(f"          {cmp.baseline.note}")
    lines.append(f"current:  {cmp.current.path}  (run {', '.join(cmp.current.run_ids)})")
    for w in cmp.baseline.warnings + cmp.current.warnings:
        lines.append(f"warning: {w}")
    lines.append("")
    header = ("case", "baseline", "current", "ratio [95% CI]", "p", "q (BH)", "detectable", "verdict")
    rows = [header]
    for cc in cmp.cases:
        ratio = "-" if math.isnan(cc.ratio) else f"{cc.ratio:.3f} [{cc.ratio_ci[0]:.3f}, {cc.ratio_ci[1]:.3f}]"
        verdict = cc.verdict + (f" ({cc.note})" if cc.note else "")
        rows.append((cc.label, _num(cc.baseline_median, cc.unit), _num(cc.current_median, cc.unit), ratio,
                     _p(cc.p), _p(cc.q), _pct(cc.mdc), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    for title, items in (("only in baseline (not compared)", cmp.only_baseline),
                         ("only in current (not compared)", cmp.only_current)):
        if items:
            lines.append(f"\n{title}:")
            lines += [f"  {r.name} {r.params} [{r.status}]" for r in items]
    if cmp.not_comparable:
        lines.append("\nin both but not comparable:")
        lines += [f"  {d['experiment']}.{d['case']} {d['params']}: {d['reason']}" for d in cmp.not_comparable]
    n = len([c for c in cmp.cases if not math.isnan(c.p)])
    lines.append("")
    lines.append("ratio: median ratio oriented so > 1 is worse (time up or throughput down); CI: bootstrap. "
                 "p: one-sided Mann-Whitney U.")
    lines.append(f"False discovery rate controlled with Benjamini-Hochberg over {n} compared case(s) at "
                 f"alpha={cmp.alpha:g}; a case regressed when q <= {cmp.alpha:g} and ratio > "
                 f"{1 + cmp.threshold:.3g} (threshold {_pct(cmp.threshold)}).")
    lines.append(f"detectable: smallest worsening these samples detect with {POWER:.0%} power at a lone-case "
                 f"p <= {cmp.lone_alpha:.2g} (alpha/{n}); `inconclusive` means no regression was found but one of "
                 f"the threshold's size could have been missed.")
    regs = cmp.regressions
    lines.append(f"\n{len(regs)} regression(s) in {len(cmp.cases)} compared case(s)"
                 + (": " + "; ".join(c.label for c in regs) if regs else "") + f" -> exit {cmp.exit_code}")
    return "\n".join(lines)


def to_json(cmp: Comparison) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        return {"path": str(s.path), "run_ids": s.run_ids, "env_id": s.env.get("env_id"), "note": s.note or None,
                "warnings": s.warnings}

    def brief(r: Result) -> dict[str, Any]:
        return {"identity": r.identity, "experiment": r.experiment, "case": r.case, "params": r.params,
                "status": r.status}

    return {
        "threshold": cmp.threshold, "alpha": cmp.alpha, "power": POWER,
        "fdr": "benjamini-hochberg", "lone_case_alpha": cmp.lone_alpha,
        "baseline": side(cmp.baseline), "current": side(cmp.current),
        "fingerprint_differences": cmp.fingerprint,
        "cases": [c.to_dict() for c in cmp.cases],
        "only_in_baseline": [brief(r) for r in cmp.only_baseline],
        "only_in_current": [brief(r) for r in cmp.only_current],
        "not_comparable": cmp.not_comparable,
        "regressions": [c.identity for c in cmp.regressions],
        "exit_code": cmp.exit_code,
    }


def compare_main(baseline: str, current: str, threshold: float = 0.05, alpha: float = 0.05,
                 as_json: bool = False, results_root: Path | None = None) -> int:
    """`harness compare`: prints the table (or JSON); returns 0 / 1 / 2. `baseline` is looked up under
    results_root (default $HARNESS_RESULTS or ./results) and beside CURRENT's run folder."""
    try:
        if not (0 <= threshold < 10):
            raise GateError(f"--threshold {threshold}: expected a fraction such as 0.05 (= 5%)")
        if not (0 < alpha < 1):
            raise GateError(f"--alpha {alpha}: expected a probability such as 0.05")
        base, cur = resolve(str(baseline), str(current), results_root)
        cmp = compare(base, cur, threshold, alpha)
        if not cmp.cases:
            raise GateError(f"no case is comparable between {base.path} and {cur.path} "
                            f"({len(cmp.only_baseline)} only in baseline, {len(cmp.only_current)} only in current, "
                            f"{len(cmp.not_comparable)} not ok on both sides): run the same targets on both sides")
    except GateError as e:
        if as_json:
            print(json.dumps({"error": str(e), "exit_code": EXIT_UNUSABLE}))
        print(f"harness: error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    if as_json:
        print(json.dumps(to_json(cmp), indent=2, default=str))
    else:
        print(render_table(cmp))
    return cmp.exit_code
