"""The gate's statistics against brute-force enumeration, scipy and simulation, and the decisions built on them
(unpaired `compare`, paired `ab`). The CLI side of `compare` is in test_gate.py.
"""
from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats

from harness import decide, render, stats
from harness.record import Result

# --- brute force: the definitions, written out without the module's shortcuts ------------------------------------


def brute_mwu_p(baseline, current, better="lower"):
    """P(U >= observed) over every split of the pooled samples, U counting ties as 1/2 (for "higher": <=)."""
    pooled = list(baseline) + list(current)
    n2 = len(current)

    def u(cur_idx):
        cur = [pooled[i] for i in cur_idx]
        base = [pooled[i] for i in range(len(pooled)) if i not in cur_idx]
        return sum(Fraction(1) if c > b else Fraction(1, 2) if c == b else 0 for c in cur for b in base)

    observed = u(tuple(range(len(baseline), len(pooled))))
    splits = list(itertools.combinations(range(len(pooled)), n2))
    us = [u(s) for s in splits]
    hits = [x >= observed if better == "lower" else x <= observed for x in us]
    extreme = max(us) if better == "lower" else min(us)
    return Fraction(sum(hits), len(splits)), Fraction(us.count(extreme), len(splits))


def midranks(xs):
    return [sum(1 for y in xs if y < x) + (sum(1 for y in xs if y == x) + 1) / 2 for x in xs]


def brute_signed_rank_p(d):
    """P(T+ >= observed) over all sign patterns of the non-zero differences, midranks of |d|."""
    nz = [x for x in d if x != 0]
    ranks = midranks([abs(x) for x in nz])
    observed = sum(r for r, x in zip(ranks, nz) if x > 0)
    patterns = list(itertools.product((0, 1), repeat=len(nz)))
    return Fraction(sum(sum(r * s for r, s in zip(ranks, pat)) >= observed for pat in patterns), len(patterns))


def tied_samples(rng, n):
    """Timings on a coarse clock: many ties within and across the two sides."""
    return [round(rng.uniform(1.0, 1.6), 1) for _ in range(n)]


# --- Mann-Whitney ----------------------------------------------------------------------------------------------


def test_mann_whitney_p_with_ties_equals_brute_force_and_scipys_permutation_p():
    rng = random.Random(3)
    for n1, n2 in ((3, 4), (5, 5), (4, 6), (6, 3)):
        for _ in range(4):
            base, cur = tied_samples(rng, n1), tied_samples(rng, n2)
            for better in ("lower", "higher"):
                p, min_p = brute_mwu_p(base, cur, better)
                test = stats.mann_whitney(base, cur, better)
                assert test.method == "exact"
                assert test.p == pytest.approx(float(p), rel=1e-12)
                assert test.min_p == pytest.approx(float(min_p), rel=1e-12)
                # "better" from the same distribution: the roles swapped
                assert test.p_better == pytest.approx(float(brute_mwu_p(cur, base, better)[0]), rel=1e-12)
            alternative = "greater"  # scipy's exact permutation p (its default falls back to a normal approx)
            ref = scipy.stats.mannwhitneyu(cur, base, alternative=alternative,
                                           method=scipy.stats.PermutationMethod(n_resamples=np.inf))
            assert stats.mann_whitney(base, cur).p == pytest.approx(ref.pvalue, rel=1e-9)


def test_smallest_p_with_a_tie_across_the_groups_is_larger_than_without_ties():
    base, cur = [1.0, 1.01, 0.99, 1.02, 1.47], [1.47, 1.5, 1.51, 1.52, 1.53]
    test = stats.mann_whitney(base, cur)
    # the tied 1.47 can sit on either side of the most extreme split: 2 of 252 splits reach it
    assert test.p == test.min_p == pytest.approx(2 / 252)
    assert float(brute_mwu_p(base, cur)[1]) == pytest.approx(test.min_p)
    # ties inside one group change nothing at the extreme
    assert stats.mann_whitney([1.0, 1.0, 0.99, 1.02, 0.98], [1.5, 1.5, 1.49, 1.53, 1.47]).min_p == \
        pytest.approx(1 / 252)


def test_large_samples_fall_back_to_seeded_permutations_and_say_so(monkeypatch):
    rng = random.Random(5)
    base, cur = tied_samples(rng, 12), [x + 0.1 for x in tied_samples(rng, 12)]
    exact = stats.mann_whitney(base, cur)
    monkeypatch.setattr(stats, "_EXACT_BUDGET", 0)  # as if the samples were too large to count
    sampled = stats.mann_whitney(base, cur)
    assert sampled.method == "monte-carlo permutation (20000 draws)"
    assert sampled.p == pytest.approx(exact.p, abs=0.01) and sampled.p_better == pytest.approx(exact.p_better, abs=0.01)
    assert sampled == stats.mann_whitney(base, cur)  # seeded: the same samples, the same p
    d = [0.1, -0.03, 0.2, 0.05, 0.0, 0.07, -0.01, 0.12, 0.05]
    sampled_w = stats.wilcoxon_signed_rank(d)
    assert sampled_w.method.startswith("monte-carlo") and sampled_w.p == pytest.approx(float(brute_signed_rank_p(d)),
                                                                                        abs=0.01)


def test_min_rank_p_is_exact():
    assert stats.min_rank_p(1, 19) == 0.05
    assert stats.min_rank_p(5, 5) == 1 / 252 and stats.min_rank_p(0, 3) == 1.0


# --- Wilcoxon signed-rank ----------------------------------------------------------------------------------------


def test_signed_rank_p_with_ties_and_zeros_equals_brute_force_and_scipy():
    rng = random.Random(11)
    for n in (4, 6, 8, 10):
        for _ in range(4):
            d = [round(rng.gauss(0.02, 0.05), 2) for _ in range(n)]  # a coarse grid: ties and zeros
            test = stats.wilcoxon_signed_rank(d)
            assert test.method == "exact"
            assert test.p == pytest.approx(float(brute_signed_rank_p(d)), rel=1e-12)
            assert test.min_p == 1 / 2 ** sum(1 for x in d if x != 0)
            assert test.p_better == pytest.approx(float(brute_signed_rank_p([-x for x in d])), rel=1e-12)
            if any(x != 0 for x in d):  # scipy's default: zeros dropped, permutation p when there are ties
                ref = scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="greater")
                assert test.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert stats.wilcoxon_signed_rank([0.0, 0.0]).p == 1.0


# --- intervals and their real coverage ------------------------------------------------------------------------


def test_median_ci_coverage_is_the_real_one():
    assert stats.median_ci_coverage(5) == 0.9375 and stats.median_ci_coverage(3) == 0.75
    assert stats.median_ci_coverage(9) == pytest.approx(492 / 512)
    assert stats.summarize([1.0, 2.0, 3.0, 4.0, 5.0])["ci_level"] == 0.9375
    rng = np.random.default_rng(1)
    for n in (3, 5, 9):  # draws from a skewed distribution with median 1: the claimed share of intervals hold it
        xs = np.sort(rng.lognormal(0, 0.5, (20000, n)), axis=1)
        lo, hi = zip(*(stats.median_ci(list(row)) for row in xs[:4000]))
        held = np.mean((np.array(lo) <= 1) & (1 <= np.array(hi)))
        assert held == pytest.approx(stats.median_ci_coverage(n), abs=0.025)


def test_ratio_ci_coverage_is_the_real_one():
    rng = np.random.default_rng(2)
    for n1, n2 in ((5, 5), (4, 7)):
        held, coverage = 0, None
        for _ in range(2000):
            base = np.exp(rng.normal(0, 0.05, n1))
            cur = 1.1 * np.exp(rng.normal(0, 0.05, n2))
            lo, hi, coverage = stats.shift_ratio_ci(list(base), list(cur))
            held += lo <= 1.1 <= hi
        assert held / 2000 == pytest.approx(coverage, abs=0.02)


# --- power: "detectable" and "needed" are what they claim -----------------------------------------------------


def rejection_rate(paired, n1, n2, spread, change, alpha, trials=1500, seed=99):
    """How often the real test rejects at level alpha on fresh data with this change and noise."""
    rng = np.random.default_rng(seed)
    shift = math.log1p(change)
    hits = 0
    for _ in range(trials):
        if paired:
            test = stats.wilcoxon_signed_rank(list(shift + rng.normal(0, spread, n1)))
        else:
            base = np.exp(rng.normal(0, spread, n1))
            cur = np.exp(shift + rng.normal(0, spread, n2))
            test = stats.mann_whitney(list(base), list(cur))
        hits += test.p <= alpha
    return hits / trials


@pytest.mark.parametrize("n1, n2, alpha", [(5, 5, 0.05), (8, 8, 0.005), (6, 10, 0.01)])
def test_detectable_change_has_the_claimed_power(n1, n2, alpha):
    mdc = stats.detectable_change(0.03, n1, n2, alpha)
    assert rejection_rate(False, n1, n2, 0.03, mdc, alpha) == pytest.approx(0.8, abs=0.04)


@pytest.mark.parametrize("n, alpha", [(8, 0.05), (12, 0.005), (20, 0.01)])
def test_paired_detectable_change_has_the_claimed_power(n, alpha):
    mdc = stats.detectable_change_paired(0.02, n, alpha)
    assert rejection_rate(True, n, n, 0.02, mdc, alpha) == pytest.approx(0.8, abs=0.04)


def test_repeats_and_pairs_needed_reach_the_power_and_no_fewer_would():
    n = stats.repeats_needed(0.03, 0.05, alpha=0.01)
    assert stats.detectable_change(0.03, n, n, 0.01) <= 0.05 < stats.detectable_change(0.03, n - 1, n - 1, 0.01)
    assert rejection_rate(False, n, n, 0.03, 0.05, 0.01, trials=800) >= 0.76
    k = stats.pairs_needed(0.03, 0.05, alpha=0.01)
    assert stats.detectable_change_paired(0.03, k, 0.01) <= 0.05 < stats.detectable_change_paired(0.03, k - 1, 0.01)
    assert rejection_rate(True, k, k, 0.03, 0.05, 0.01, trials=800) >= 0.76
    assert stats.pairs_needed(0.0, 0.05, alpha=0.01) == 7  # no noise: the test's own floor, 1/2**7 <= 0.01


# --- the unpaired decision -------------------------------------------------------------------------------------


def result(samples, case="spin", params=None, better="lower", **kw):
    return Result(run_id="t", experiment="calibration", case=case, params=params or {}, samples=list(samples),
                  better=better, **kw)


def suite(first_base, first_cur, n_cases=10, seed=4):
    """n_cases cases: the first as given, the rest unchanged with 1% noise."""
    rng = random.Random(seed)
    base, cur = [result(first_base, params={"i": 0})], [result(first_cur, params={"i": 0})]
    for i in range(1, n_cases):
        base.append(result([math.exp(rng.gauss(0, 0.01)) for _ in range(5)], params={"i": i}))
        cur.append(result([math.exp(rng.gauss(0, 0.01)) for _ in range(5)], params={"i": i}))
    return base, cur


def test_ten_cases_one_50_percent_slower_with_a_tied_baseline_pair_is_a_regression():
    """scipy's normal approximation (used whenever there are ties) gave p = 0.006 here, which BH over 10 cases
    could not pass, while the gate believed 1/252 was reachable and said "no change"."""
    tied = [1.00, 1.00, 0.99, 1.02, 0.98]
    d = decide.compare(*suite(tied, [1.5 * x for x in tied]))
    case = next(c for c in d.cases if c.params == {"i": 0})
    assert case.p == pytest.approx(1 / 252) and case.p_method == "exact"
    assert case.verdict == decide.REGRESSED and d.exit_code == 1


def test_a_tie_that_blocks_significance_is_reported_as_undecidable_not_as_no_change():
    d = decide.compare(*suite([1.0, 1.01, 0.99, 1.02, 1.47], [1.47, 1.5, 1.51, 1.52, 1.53]))
    case = next(c for c in d.cases if c.params == {"i": 0})
    assert case.min_p == pytest.approx(2 / 252) and case.min_p > d.lone_alpha  # 0.0079 > 0.05 / 10
    assert case.verdict == decide.INCONCLUSIVE and case.mdc == math.inf
    assert "cannot reach p <= 0.005" in case.note and "raised by ties" in case.note
    assert d.exit_code == 0


def test_settings_and_not_comparable_cases():
    assert decide.settings_problem(0.05, 0.05) == ""
    assert "--alpha" in decide.settings_problem(0.05, 5) and "--threshold" in decide.settings_problem(-1, 0.05)
    d = decide.compare([result([1.0, 1.1], better="higher")], [result([1.0, 1.1])])
    assert not d.cases and "metric changed" in d.not_comparable[0]["reason"]
    d = decide.compare([result([1.0, 0.0, 1.1])], [result([1.0, 1.1, 1.2])])
    assert "zero or negative" in d.not_comparable[0]["reason"]


# --- the paired decision ---------------------------------------------------------------------------------------


def drifting_pairs(rng, n, factor, noise=0.015):
    """A and B measured back to back on a machine whose speed steps by 5-9% every few pairs."""
    level, a, b = 1.0, [], []
    for i in range(n):
        if i % 3 == 0:
            level = rng.choice((1.0, 1.05, 1.09, 0.95))
        a.append(level * math.exp(rng.gauss(0, noise)))
        b.append(level * factor * math.exp(rng.gauss(0, noise)))
    return a, b


def test_paired_decision_meets_the_targets_on_a_drifting_machine():
    rng = random.Random(21)
    trials, n = 150, decide.default_pairs(1)

    def regressed(factor):
        a, b = drifting_pairs(rng, n, factor)
        return decide.paired([(result(a), result(b))]).exit_code == 1

    assert sum(regressed(1.0) for _ in range(trials)) / trials <= 0.05
    assert sum(regressed(1.15) for _ in range(trials)) / trials >= 0.90


def test_paired_verdict_fields_and_orientation():
    rng = random.Random(7)
    a, b = drifting_pairs(rng, 12, 1.2)
    d = decide.paired([(result(a), result(b))])
    cv = d.cases[0]
    assert cv.paired and cv.test == "wilcoxon signed-rank" and cv.verdict == decide.REGRESSED
    assert cv.p == pytest.approx(1 / 2**12) and cv.min_p == cv.p  # every pair worse
    assert cv.ratio_ci[0] <= 1.2 <= cv.ratio_ci[1] and cv.ci_level == pytest.approx(1 - 2 * 79 / 4096)
    assert cv.mdc < 0.05 and cv.repeats_needed is not None
    # throughput: B lower is worse, with the same ratio
    thr = decide.paired([(result([1 / x for x in a], better="higher"), result([1 / x for x in b], better="higher"))])
    assert thr.cases[0].verdict == decide.REGRESSED and thr.cases[0].ratio == pytest.approx(cv.ratio)
    better = decide.paired([(result(b), result(a))])
    assert better.cases[0].verdict == decide.IMPROVED and better.exit_code == 0


def test_paired_noise_gives_inconclusive_with_pairs_needed_and_unequal_counts_are_not_comparable():
    a = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]
    b = [x * math.exp(d) for x, d in zip(a, [0.2, -0.25, 0.1, -0.15, 0.3, -0.2])]  # 20% noise, no shift
    cv = decide.paired([(result(a), result(b))]).cases[0]
    assert cv.verdict == decide.INCONCLUSIVE and cv.mdc > 0.05 and "pairs to detect 5.0%" in cv.note
    d = decide.paired([(result(a), result(b[:5]))])
    assert not d.cases and "not paired" in d.not_comparable[0]["reason"]


def test_default_pairs_let_a_lone_regression_pass_bh():
    assert decide.default_pairs(1) == 10  # the floor: enough pairs to measure the noise
    for k in (50, 100, 1000):
        n = decide.default_pairs(k, at_least=1)
        assert 1 / 2**n <= 0.05 / k < 1 / 2 ** (n - 1)
        assert decide.default_pairs(k) == max(n, 10)


def test_one_renderer_serves_both_designs():
    rng = random.Random(9)
    a, b = drifting_pairs(rng, 10, 1.2)
    d = decide.paired([(result(a), result(b))])
    table = render.text(d, ["A: this checkout", "B: HEAD~1", ""])
    assert table.startswith("A: this checkout") and "UNPAIRED" not in table and "Wilcoxon" in table
    assert "% CI " in table and "exit 1" in table
    doc = render.to_json(d, {"a": {"rev": "HEAD"}})
    assert doc["design"] == "paired" and doc["a"] == {"rev": "HEAD"} and doc["cases"][0]["paired"] is True
    assert doc["exit_code"] == 1
