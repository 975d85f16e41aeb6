"""The regression gate's decisions, one verdict per case: unpaired (`harness compare`, two runs) and paired
(`harness ab`, A and B samples taken back to back). Pure: no files, no printing (storage.py reads, render.py
writes).

Per case the ratio is oriented so that > 1 is worse (time up, throughput down), and a one-sided rank test gives p
for "worse" and p for "better": Mann-Whitney U on the two runs' samples (unpaired), or the Wilcoxon signed-rank
test on the paired log ratios d = log(B/A) (paired). Benjamini-Hochberg turns the p-values of all tested cases
into q-values (false discovery rate control). Then a case is

- REGRESSED when q <= alpha and ratio > 1 + threshold, or FAILED NOW when it was ok on the baseline (A) side and
  errors or times out on the current (B) side (it got infinitely slower);
- "worse, within threshold" when q <= alpha and 1 < ratio <= 1 + threshold; "better, within threshold" and
  "improved" the same way round for the p of "better" (improved: ratio < 1 / (1 + threshold));
- "no change" when nothing is significant and a change of the threshold's size would have been detected with
  POWER at the p a lone changed case needs under BH (alpha / cases), given the observed noise;
- "inconclusive" otherwise: the note says what the samples could detect and the repeats (pairs) needed.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from . import stats
from .record import Result

EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2
POWER = 0.8  # the power behind "detectable" and "repeats needed"
CI_LEVEL = 0.95  # intervals aim at this; each carries its real coverage

REGRESSED, FAILED = "REGRESSED", "FAILED NOW"
SLOWER, BETTER = "worse, within threshold", "better, within threshold"
IMPROVED, UNCHANGED, INCONCLUSIVE = "improved", "no change", "inconclusive"


@dataclass
class CaseVerdict:
    """One case's comparison, the same shape for `compare` (unpaired) and `ab` (paired). Identity and params are
    the current (B) side's."""

    identity: str
    experiment: str
    case: str
    params: dict[str, Any]
    metric: str
    unit: str
    better: str
    paired: bool
    n_baseline: int = 0  # samples on the baseline (A) side; pairs when paired
    n_current: int = 0
    n_zero: int = 0  # pairs with A == B exactly, left out of the signed-rank test
    baseline_median: float = math.nan
    current_median: float = math.nan
    ratio: float = math.nan  # > 1 is worse: ratio of medians (unpaired), exp(median d) (paired)
    ratio_ci: tuple[float, float] = (math.nan, math.nan)
    ci_level: float = math.nan  # the real coverage of ratio_ci
    test: str = ""
    p: float = math.nan  # one-sided, "current (B) is worse"
    q: float = math.nan  # BH-adjusted p
    p_better: float = math.nan
    q_better: float = math.nan
    p_method: str = ""  # "exact" or "monte-carlo permutation (N draws)"
    min_p: float = math.nan  # the smallest p these samples (sizes, ties) can give
    spread: float = math.nan  # relative noise: sd of log samples (pooled), or of the paired log ratios
    mdc: float = math.nan  # smallest relative worsening detectable with POWER at the lone-case alpha
    repeats_needed: int | None = None  # per side (pairs when paired) to detect a change of `threshold`
    verdict: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.experiment}.{self.case}" + (f" {ps}" if ps else "")


@dataclass
class Decision:
    paired: bool
    threshold: float
    alpha: float
    cases: list[CaseVerdict]  # tested cases and cases that fail now
    not_comparable: list[dict[str, Any]]  # in both, but no verdict possible: {identity, ..., reason}
    lone_alpha: float  # the p a lone changed case needs under BH: alpha / tested cases
    only_baseline: list[Result] = field(default_factory=list)  # unpaired only: cases on one side
    only_current: list[Result] = field(default_factory=list)

    @property
    def regressions(self) -> list[CaseVerdict]:
        return [c for c in self.cases if c.verdict in (REGRESSED, FAILED)]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK


def settings_problem(threshold: float, alpha: float) -> str:
    """What is wrong with --threshold / --alpha, or "" when they are usable."""
    if not (0 <= threshold < 10):
        return f"--threshold {threshold}: expected a fraction such as 0.05 (= 5%)"
    if not (0 < alpha < 1):
        return f"--alpha {alpha}: expected a probability such as 0.05"
    return ""


def compare(baseline: Iterable[Result], current: Iterable[Result], threshold: float = 0.05,
            alpha: float = 0.05) -> Decision:
    """Unpaired: matches the two runs' cases by identity and tests each (Mann-Whitney)."""
    b = {r.identity: r for r in baseline}
    c = {r.identity: r for r in current}
    decision = _decide([(b[i], c[i]) for i in sorted(set(b) & set(c))], threshold, alpha, paired=False)
    decision.only_baseline = [b[i] for i in sorted(set(b) - set(c))]
    decision.only_current = [c[i] for i in sorted(set(c) - set(b))]
    return decision


def paired(pairs: Sequence[tuple[Result, Result]], threshold: float = 0.05, alpha: float = 0.05,
           looks: int = 1, first_look: dict[str, int] | None = None) -> Decision:
    """Paired: one (A, B) record pair per case whose samples were taken in pairs (A.samples[i] with
    B.samples[i]); tests the paired log ratios (Wilcoxon signed-rank). A and B may differ in params (an axis
    changed on one side); the verdict carries B's identity.

    Sequential sampling: when the sampler was allowed to look at a case `looks` times (take more pairs where the
    first ones could not decide), each case's p is Bonferroni-corrected for those looks: `looks` x the smallest
    p seen (at the first look, `first_look[identity]` pairs, and at the end). That keeps the false-alarm rate at
    alpha whether or not a case was extended, at the price of a stricter test at each look."""
    return _decide(list(pairs), threshold, alpha, paired=True, looks=looks, first_look=first_look or {})


def default_pairs(n_cases: int, alpha: float = 0.05, at_least: int = 10) -> int:
    """Pairs per case such that one regressed case among n_cases can pass BH: its smallest attainable p,
    1 / 2**pairs, must be <= alpha / n_cases. Never fewer than `at_least`, so noise is measured, not guessed."""
    n = 1
    while 1 / 2**n > alpha / max(1, n_cases):
        n += 1
    return max(n, at_least)


# --- per case ------------------------------------------------------------------------------------------------


def _decide(pairs: list[tuple[Result, Result]], threshold: float, alpha: float, paired: bool, looks: int = 1,
            first_look: dict[str, int] | None = None) -> Decision:
    cases: list[CaseVerdict] = []
    not_comparable: list[dict[str, Any]] = []
    for a, b in pairs:
        outcome = _measure(a, b, paired)
        if looks > 1 and isinstance(outcome, CaseVerdict) and not math.isnan(outcome.p):
            _correct_for_looks(outcome, a, b, looks, (first_look or {}).get(b.identity))
        if isinstance(outcome, str):
            not_comparable.append({"identity": b.identity, "experiment": b.experiment, "case": b.case,
                                   "params": b.params, "reason": outcome})
        else:
            cases.append(outcome)
    tested = [cv for cv in cases if not math.isnan(cv.p)]
    for cv, q in zip(tested, stats.benjamini_hochberg([cv.p for cv in tested])):
        cv.q = q
    for cv, q in zip(tested, stats.benjamini_hochberg([cv.p_better for cv in tested])):
        cv.q_better = q
    lone_alpha = alpha / max(1, len(tested)) / looks  # what a lone changed case's (uncorrected) p must reach
    for cv in tested:
        _judge(cv, threshold, alpha, lone_alpha)
    return Decision(paired, threshold, alpha, cases, not_comparable, lone_alpha)


def _correct_for_looks(cv: CaseVerdict, a: Result, b: Result, looks: int, first: int | None) -> None:
    """Bonferroni over the looks the sampler was allowed: looks x the smallest p seen (first look and end)."""
    ps, ps_better = [cv.p], [cv.p_better]
    if first and first < len(b.samples):
        early = stats.wilcoxon_signed_rank(stats.worse_log_ratios(a.samples[:first], b.samples[:first], b.better))
        ps.append(early.p)
        ps_better.append(early.p_better)
    cv.p, cv.p_better = min(1.0, looks * min(ps)), min(1.0, looks * min(ps_better))
    cv.min_p = min(1.0, looks * cv.min_p)
    cv.p_method += f", Bonferroni over {looks} looks"


def _measure(a: Result, b: Result, paired: bool) -> CaseVerdict | str:
    """The case's figures before BH, or why it cannot be compared."""
    cv = CaseVerdict(b.identity, b.experiment, b.case, dict(b.params), b.metric, b.unit, b.better, paired,
                     n_baseline=len(a.samples), n_current=len(b.samples))
    if (a.metric, a.better) != (b.metric, b.better):
        return f"metric changed: {a.metric} ({a.better} is better) -> {b.metric} ({b.better} is better)"
    if a.status == "ok" and b.status in ("error", "timeout"):
        first = ((b.error or {}).get("message") or "").strip().splitlines()
        cv.verdict, cv.note = FAILED, f"{b.status} now: {first[0][:160] if first else ''}"
        cv.baseline_median = statistics.median(a.samples) if a.samples else math.nan
        return cv
    if a.status != "ok" or b.status != "ok":
        return f"status {a.status} in baseline, {b.status} in current"
    if not a.samples or not b.samples:
        return f"no samples ({len(a.samples)} in baseline, {len(b.samples)} in current)"
    if min(a.samples) <= 0 or min(b.samples) <= 0:
        return "a sample is zero or negative: ratios need positive values"
    if paired and len(a.samples) != len(b.samples):
        return f"not paired: {len(a.samples)} A samples, {len(b.samples)} B samples"
    cv.baseline_median, cv.current_median = statistics.median(a.samples), statistics.median(b.samples)
    if paired:
        d = stats.worse_log_ratios(a.samples, b.samples, b.better)
        test = stats.wilcoxon_signed_rank(d)
        cv.test, cv.n_zero = "wilcoxon signed-rank", sum(1 for x in d if x == 0)
        cv.ratio = math.exp(statistics.median(d))
        lo, hi = stats.median_ci(sorted(d), CI_LEVEL)
        cv.ratio_ci, cv.ci_level = (math.exp(lo), math.exp(hi)), stats.median_ci_coverage(len(d), CI_LEVEL)
        cv.spread = statistics.stdev(d) if len(d) > 1 else math.nan
    else:
        test = stats.mann_whitney(a.samples, b.samples, b.better)
        cv.test = "mann-whitney"
        cv.ratio = stats.worse_ratio(cv.baseline_median, cv.current_median, b.better)
        lo, hi, cv.ci_level = stats.shift_ratio_ci(a.samples, b.samples, b.better, CI_LEVEL)
        cv.ratio_ci = (lo, hi)
        cv.spread = stats.pooled_log_spread(a.samples, b.samples)
    cv.p, cv.p_better, cv.min_p, cv.p_method = test.p, test.p_better, test.min_p, test.method
    return cv


def _judge(cv: CaseVerdict, threshold: float, alpha: float, lone_alpha: float) -> None:
    """Sensitivity at the lone-case alpha, then the verdict (see the module docstring)."""
    unit = "pairs" if cv.paired else "repeats per side"
    if cv.paired:
        cv.mdc = stats.detectable_change_paired(cv.spread, cv.n_current - cv.n_zero, lone_alpha, POWER)
        cv.repeats_needed = stats.pairs_needed(cv.spread, threshold, lone_alpha, POWER)
    else:
        cv.mdc = stats.detectable_change(cv.spread, cv.n_baseline, cv.n_current, lone_alpha, POWER)
        cv.repeats_needed = stats.repeats_needed(cv.spread, threshold, lone_alpha, POWER)
    if cv.min_p > lone_alpha:  # ties or too few samples: even a huge change could not get there
        cv.mdc = math.inf
    if cv.q <= alpha and cv.ratio > 1 + threshold:
        cv.verdict = REGRESSED
    elif cv.q <= alpha and cv.ratio > 1:
        cv.verdict = SLOWER
    elif cv.q_better <= alpha and cv.ratio < 1 / (1 + threshold):
        cv.verdict = IMPROVED
    elif cv.q_better <= alpha and cv.ratio < 1:
        cv.verdict = BETTER
    elif cv.mdc <= threshold:
        cv.verdict = UNCHANGED
    else:
        cv.verdict = INCONCLUSIVE
        need = f"~{cv.repeats_needed} {unit}" if cv.repeats_needed else f"far more {unit} (or less noise)"
        if math.isinf(cv.mdc):
            could = (f"these samples cannot reach p <= {lone_alpha:.2g} (smallest possible p {cv.min_p:.2g}"
                     f"{', raised by ties' if cv.min_p > _tie_free_min_p(cv) else ''})")
        else:
            could = f"could only detect {cv.mdc * 100:.1f}%"
        cv.note = f"{could}; {need} to detect {threshold * 100:.1f}%"


def _tie_free_min_p(cv: CaseVerdict) -> float:
    if cv.paired:
        return 1 / 2**cv.n_current
    return stats.min_rank_p(cv.n_baseline, cv.n_current)
