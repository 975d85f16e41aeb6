"""Summary statistics and the tests the regression gate uses: pure math, no I/O.

Timing samples are skewed and have outliers, so everything here is distribution-free (order statistics, rank
tests), and every probability it states is the real one for the sample sizes at hand:

- interval coverages are computed exactly from the binomial or rank distributions, and returned with the interval;
- rank-test p-values are exact permutation p-values, ties included (counted, not approximated);
- "detectable change" and "repeats needed" come from simulating the very test that is used (seeded, so the same
  inputs always give the same figures), not from normal-theory formulas that overstate power at small n.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

SEED = 20261201  # every random draw here is seeded: the same samples always give the same p and figures

# --- summaries -----------------------------------------------------------------------------------------------


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of already-sorted data."""
    if not sorted_xs:
        return math.nan
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def _median_ci_rank(n: int, confidence: float) -> tuple[int, Fraction]:
    """(j, coverage) of the narrowest symmetric order-statistic pair (j, n-1-j) (0-based) whose probability of
    bracketing the median is >= confidence; j = 0 (min, max) when no pair reaches it. Exact integers."""
    total = 2**n

    def coverage(tail: int) -> Fraction:  # P(X_(j) <= median <= X_(n-1-j)) = 1 - 2 P(Bin(n, 1/2) <= j)
        return Fraction(total - 2 * tail, total)

    best, best_tail, tail, term = 0, 1, 1, 1  # term = C(n, j), tail = sum_{i<=j} C(n, i)
    for j in range(1, n // 2):
        term = term * (n - j + 1) // j
        tail += term
        if coverage(tail) < confidence:
            break
        best, best_tail = j, tail
    return best, coverage(best_tail)


def median_ci(sorted_xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics (binomial coverage).

    With fewer than 6 samples no pair reaches 95% and the interval is the full range (min, max), whose real
    coverage is lower (93.75% at n = 5, 75% at n = 3): `median_ci_coverage` gives it.
    """
    n = len(sorted_xs)
    if n == 0:
        return math.nan, math.nan
    j, _ = _median_ci_rank(n, confidence)
    return sorted_xs[j], sorted_xs[n - 1 - j]


def median_ci_coverage(n: int, confidence: float = 0.95) -> float:
    """The real probability that `median_ci` of n samples brackets the median (exact; any continuous distribution)."""
    return float(_median_ci_rank(n, confidence)[1]) if n > 0 else math.nan


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """n, median, mean, stdev, min, max, q1, q3, the median's CI and that CI's real coverage (`ci_level`)."""
    xs = sorted(float(x) for x in samples)
    n = len(xs)
    if n == 0:
        return {"n": 0}
    lo, hi = median_ci(xs)
    return {
        "n": n,
        "median": statistics.median(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if n > 1 else 0.0,
        "min": xs[0],
        "max": xs[-1],
        "q1": quantile(xs, 0.25),
        "q3": quantile(xs, 0.75),
        "ci_low": lo,
        "ci_high": hi,
        "ci_level": median_ci_coverage(n),
    }


# --- exact rank distributions --------------------------------------------------------------------------------

# Counting the permutation distribution costs about len(values) * (k + 1) * (largest sum) steps; above this
# budget (roughly 45 + 45 samples, or 360 pairs: a quarter of a second) a p-value comes from seeded random
# permutations instead.
_EXACT_BUDGET = 5 * 10**7
_PERMUTATION_DRAWS = 20_000


def _doubled_midranks(xs: Sequence[float]) -> list[int]:
    """Ranks 1..n with ties given their average rank, doubled so they are integers."""
    from scipy.stats import rankdata

    return [int(round(2 * r)) for r in rankdata(xs)]


def _subset_sum_counts(values: Sequence[int], k: int | None = None):
    """counts[s] = how many subsets of `values` (positive integers) sum to s: subsets of exactly k elements, or
    of any size when k is None. Float counts: exact below 2**53, correct to ~16 digits beyond."""
    import numpy as np

    top = sum(sorted(values, reverse=True)[:k]) if k is not None else sum(values)
    if k is None:
        ways = np.zeros(top + 1)
        ways[0] = 1
        for v in values:
            ways[v:] = ways[v:] + ways[: top + 1 - v]
        return ways
    ways = np.zeros((k + 1, top + 1))
    ways[0, 0] = 1
    for v in values:  # a subset either skips v, or takes it on top of a (size - 1)-subset
        ways[1:, v:] = ways[1:, v:] + ways[:-1, : top + 1 - v]
    return ways[k]


@dataclass(frozen=True)
class RankTest:
    """A one-sided rank test's outcome, for "worse" and, from the same distribution, for "better"."""

    p: float  # p of "worse" (the statistic at least as large as observed)
    p_better: float  # p of the opposite alternative (at most as large)
    min_p: float  # the smallest p of "worse" these samples' sizes and ties allow: no change gets below it
    method: str  # "exact", or "monte-carlo permutation (N draws)" for samples too large to count


def mann_whitney(baseline: Sequence[float], current: Sequence[float], better: str = "lower") -> RankTest:
    """One-sided Mann-Whitney U test of "current is worse than baseline" (larger times, smaller throughputs).

    The p-value is the permutation p of current's rank sum (midranks for ties) over all C(n1+n2, n2) ways to
    split the pooled samples into groups of these sizes: counted exactly, or estimated from seeded random splits
    when the samples are too large to count (`method` says which).
    """
    n1, n2 = len(baseline), len(current)
    if n1 == 0 or n2 == 0:
        return RankTest(math.nan, math.nan, 1.0, "none")
    sign = -1.0 if better == "higher" else 1.0  # oriented so that larger is worse
    ranks = _doubled_midranks([sign * x for x in list(baseline) + list(current)])
    observed = sum(ranks[n1:])
    top = sum(sorted(ranks, reverse=True)[:n2])
    if len(ranks) * (n2 + 1) * (top + 1) <= _EXACT_BUDGET:
        p, p_better, method = _tails(_subset_sum_counts(ranks, n2), observed)
    else:
        p, p_better, method = _permutation_p(
            ranks, observed, lambda rng, r: rng.permuted(r, axis=1)[:, n1:].sum(axis=1))
    return RankTest(p, p_better, _min_split_p(ranks, n2), method)


def wilcoxon_signed_rank(d: Sequence[float]) -> RankTest:
    """One-sided Wilcoxon signed-rank test of "the differences lean positive" (d > 0 is worse).

    Zero differences are dropped (Wilcoxon's rule, R's and scipy's default); the rest are ranked by |d| with
    midranks for ties. The p-value is exact over the 2**n equally likely sign patterns, or estimated from seeded
    random sign patterns when n is too large to count (`method` says which).
    """
    if len(d) == 0:
        return RankTest(math.nan, math.nan, 1.0, "none")
    nonzero = [x for x in d if x != 0]
    n = len(nonzero)
    if n == 0:  # every pair identical: no evidence either way
        return RankTest(1.0, 1.0, 1.0, "exact")
    ranks = _doubled_midranks([abs(x) for x in nonzero])
    observed = sum(r for r, x in zip(ranks, nonzero) if x > 0)
    if n * (sum(ranks) + 1) <= _EXACT_BUDGET:
        p, p_better, method = _tails(_subset_sum_counts(ranks), observed)
    else:
        p, p_better, method = _permutation_p(
            ranks, observed, lambda rng, r: (r * rng.integers(0, 2, r.shape)).sum(axis=1))
    return RankTest(p, p_better, 1 / 2**n, method)  # only "all positive" reaches the largest sum


def _tails(counts, observed: int) -> tuple[float, float, str]:
    """P(S >= observed) and P(S <= observed) from the counts of every value of S."""
    total = counts.sum()
    return float(counts[observed:].sum() / total), float(counts[: observed + 1].sum() / total), "exact"


def _permutation_p(ranks: list[int], observed: int, draw_statistics) -> tuple[float, float, str]:
    """Monte-Carlo permutation p-values (>= and <= observed): shares of seeded random re-labellings, counting the
    observed labelling itself so that p is never 0."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    chunk = max(1, min(_PERMUTATION_DRAWS, 4_000_000 // len(ranks)))
    above, below, done = 0, 0, 0
    while done < _PERMUTATION_DRAWS:
        size = min(chunk, _PERMUTATION_DRAWS - done)
        drawn = draw_statistics(rng, np.tile(np.asarray(ranks, dtype=np.int64), (size, 1)))
        above += int((drawn >= observed).sum())
        below += int((drawn <= observed).sum())
        done += size
    return (1 + above) / (1 + done), (1 + below) / (1 + done), f"monte-carlo permutation ({done} draws)"


def _min_split_p(ranks: list[int], k: int) -> float:
    """The permutation p of the most extreme split: k of the pooled ranks taking the k largest values. Ties at
    the boundary let several splits reach that sum, which raises the smallest attainable p."""
    ordered = sorted(ranks, reverse=True)
    boundary = ordered[k - 1]
    above = sum(1 for r in ranks if r > boundary)
    tied = ranks.count(boundary)
    return float(Fraction(math.comb(tied, k - above), math.comb(len(ranks), k)))


def min_rank_p(n1: int, n2: int) -> float:
    """The smallest one-sided Mann-Whitney p n1 and n2 samples without ties can give (complete separation),
    1 / C(n1 + n2, n1) in exact integers."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return 1 / math.comb(n1 + n2, n1)


# --- effect sizes and their intervals ------------------------------------------------------------------------


def worse_ratio(baseline_median: float, current_median: float, better: str) -> float:
    """Ratio of medians oriented so that > 1 means worse: current/baseline for times, baseline/current for
    throughputs (better == "higher")."""
    if better == "higher":
        return baseline_median / current_median
    return current_median / baseline_median


def worse_log_ratios(a: Sequence[float], b: Sequence[float], better: str = "lower") -> list[float]:
    """Paired log ratios d_i = log(b_i / a_i), oriented so > 0 means B is worse (log(a_i / b_i) for throughputs)."""
    sign = -1.0 if better == "higher" else 1.0
    return [sign * (math.log(y) - math.log(x)) for x, y in zip(a, b)]


@functools.lru_cache(maxsize=256)
def _u_null(n1: int, n2: int):
    """P(U = u), u = 0..n1*n2: the Mann-Whitney statistic's exact distribution without ties."""
    counts = _subset_sum_counts(range(1, n1 + n2 + 1), n2)[n2 * (n2 + 1) // 2:]
    probs = counts / counts.sum()
    probs.setflags(write=False)
    return probs


def shift_ratio_ci(baseline: Sequence[float], current: Sequence[float], better: str = "lower",
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free CI of the worse-oriented ratio (current/baseline; baseline/current for throughputs),
    assuming a change scales the whole distribution: order statistics of the n1*n2 pairwise log ratios, the
    interval the Mann-Whitney test inverts to (Moses). Returns (low, high, coverage), coverage being the real
    probability of the interval (>= confidence when the sizes allow, else the widest interval's, lower)."""
    n1, n2 = len(baseline), len(current)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan, math.nan
    sign = -1.0 if better == "higher" else 1.0
    diffs = sorted(sign * (math.log(c) - math.log(b)) for c in current for b in baseline)
    cdf = _u_null(n1, n2).cumsum()
    c = 1  # (D_(c), D_(M+1-c)) covers the shift with probability 1 - 2 P(U <= c - 1)
    while c < len(diffs) // 2 and 1 - 2 * cdf[c] >= confidence:
        c += 1
    coverage = 1 - 2 * float(cdf[c - 1])
    return math.exp(diffs[c - 1]), math.exp(diffs[len(diffs) - c]), coverage


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values): reject where q <= alpha controls the false discovery
    rate at alpha across the family. NaN inputs stay NaN and do not count towards the family size."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 1.0
    for rank, i in sorted(enumerate(sorted(idx, key=lambda i: pvalues[i]), 1), key=lambda t: -t[0]):
        running = min(running, pvalues[i] * m / rank)
        out[i] = running
    return out


# --- sensitivity: what the samples could have detected, and what it would take ---------------------------------


def log_spread(samples: Sequence[float]) -> float:
    """Standard deviation of log(samples): relative noise, comparable across cases of any scale."""
    xs = [math.log(x) for x in samples if x > 0]
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


def pooled_log_spread(baseline: Sequence[float], current: Sequence[float]) -> float:
    s1, s2 = log_spread(baseline), log_spread(current)
    n1, n2 = len(baseline), len(current)
    if math.isnan(s1) or math.isnan(s2):
        return math.nan
    return math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))


_SIM_DRAWS = 4000  # simulated data sets per power figure: the 80% quantile to within about 1%
_SIM_MAX_STATISTICS = 10_000  # beyond this many pairwise statistics per data set, the large-sample formula


def _critical_count(null_probs, alpha: float) -> int | None:
    """The smallest statistic value t with P(T >= t) <= alpha under the null, or None when none reaches alpha."""
    import numpy as np

    tail = null_probs[::-1].cumsum()[::-1]  # tail[t] = P(T >= t)
    ok = np.flatnonzero(tail <= alpha)
    return int(ok[0]) if ok.size else None


@functools.lru_cache(maxsize=1024)
def _unit_detectable_shift(paired: bool, n1: int, n2: int, alpha: float, power: float) -> float:
    """The log shift, in units of the noise's standard deviation, that the one-sided rank test at level alpha
    detects with probability `power` when the noise is normal: Mann-Whitney on n1 vs n2 log samples, or the
    Wilcoxon signed-rank test on n1 paired log ratios. inf when the test cannot reach alpha at all.

    Both statistics count pairwise comparisons (Mann-Whitney: c_i - b_j > 0; signed-rank: Walsh averages
    (d_i + d_j) / 2 > 0), so in a simulated data set the test rejects exactly when the shift exceeds one order
    statistic of those differences; the wanted shift is the `power` quantile of that critical shift over seeded
    simulated data sets. Large samples use the rank tests' large-sample relation to the t-test (efficiency 3/pi).
    """
    import numpy as np

    if paired:
        n_stats = n1 * (n1 + 1) // 2
        if 1 / 2**n1 > alpha:
            return math.inf
    else:
        n_stats = n1 * n2
        if min_rank_p(n1, n2) > alpha:
            return math.inf
    z = statistics.NormalDist().inv_cdf
    if n_stats > _SIM_MAX_STATISTICS:
        scale = 1 / n1 if paired else 1 / n1 + 1 / n2
        return (z(1 - alpha) + z(power)) * math.sqrt(math.pi / 3 * scale)
    if paired:
        null = _subset_sum_counts(range(1, n1 + 1))
        null = null / null.sum()
    else:
        null = _u_null(n1, n2)
    t_crit = _critical_count(null, alpha)
    rng = np.random.default_rng([SEED, int(paired), n1, n2])
    critical = []
    chunk = max(1, 2_000_000 // n_stats)
    iu = np.triu_indices(n1)
    for start in range(0, _SIM_DRAWS, chunk):
        size = min(chunk, _SIM_DRAWS - start)
        if paired:
            d = rng.standard_normal((size, n1))
            stats_ = (d[:, iu[0]] + d[:, iu[1]]) / 2
        else:
            b, c = rng.standard_normal((size, n1)), rng.standard_normal((size, n2))
            stats_ = (c[:, :, None] - b[:, None, :]).reshape(size, -1)
        # the test rejects iff at least t_crit statistics exceed -shift, i.e. shift > -(t_crit-th largest)
        kth = n_stats - t_crit
        critical.append(-np.partition(stats_, kth, axis=1)[:, kth])
    return float(np.quantile(np.concatenate(critical), power))


def detectable_change(spread: float, n_baseline: int, n_current: int, alpha: float = 0.05,
                      power: float = 0.8) -> float:
    """The smallest relative worsening (0.10 = 10%) the one-sided Mann-Whitney test on these sample sizes
    detects with `power` at level `alpha`, given the relative noise `spread` (see `log_spread`); inf when the
    test cannot reach alpha with so few samples."""
    if n_baseline < 2 or n_current < 2 or math.isnan(spread):
        return math.inf
    return _scaled(spread, _unit_detectable_shift(False, n_baseline, n_current, alpha, power))


def detectable_change_paired(spread: float, n_pairs: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """As `detectable_change`, for the Wilcoxon signed-rank test on n_pairs paired log ratios whose standard
    deviation is `spread`."""
    if n_pairs < 2 or math.isnan(spread):
        return math.inf
    return _scaled(spread, _unit_detectable_shift(True, n_pairs, n_pairs, alpha, power))


def _scaled(spread: float, unit_shift: float) -> float:
    """A shift in noise units as a relative change; out of reach stays out of reach, even without noise."""
    return math.inf if math.isinf(unit_shift) else math.expm1(spread * unit_shift)


def repeats_needed(spread: float, change: float, alpha: float = 0.05, power: float = 0.8,
                   limit: int = 10_000) -> int | None:
    """Repeats per side for a relative worsening `change` (0.05 = 5%) to be detected by the Mann-Whitney test
    with `power` at level `alpha`, given the relative noise `spread`; None when it would take more than `limit`."""
    return _needed(lambda n: detectable_change(spread, n, n, alpha, power), spread, change, alpha, power, limit,
                   paired=False)


def pairs_needed(spread: float, change: float, alpha: float = 0.05, power: float = 0.8,
                 limit: int = 10_000) -> int | None:
    """Pairs for a relative worsening `change` to be detected by the signed-rank test with `power` at `alpha`,
    given the spread of the paired log ratios; None when it would take more than `limit`."""
    return _needed(lambda n: detectable_change_paired(spread, n, alpha, power), spread, change, alpha, power,
                   limit, paired=True)


def _needed(detectable, spread: float, change: float, alpha: float, power: float, limit: int,
            paired: bool) -> int | None:
    """The smallest n whose `detectable(n)` is <= change: starts at the large-sample estimate and steps to the
    boundary (the simulated figures are cached, so each step costs one simulation at most)."""
    if math.isnan(spread) or change <= 0:
        return None
    floor = 2
    while (1 / 2**floor if paired else min_rank_p(floor, floor)) > alpha:  # the test's own floor
        floor += 1
    z = statistics.NormalDist().inv_cdf
    per = (1 if paired else 2) * math.pi / 3
    guess = per * ((z(1 - alpha) + z(power)) * spread / math.log1p(change)) ** 2
    if guess > limit:
        return None
    n = max(floor, math.ceil(guess))
    if detectable(n) <= change:  # the guess rarely overshoots, and then by a step or two
        while n > floor and detectable(n - 1) <= change:
            n -= 1
        return n
    lo, hi = n, n  # the guess undershoots at small n (exact tests need more): widen, then bisect
    while detectable(hi) > change:
        lo, hi = hi, math.ceil(hi * 1.25) + 1
        if lo > limit:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detectable(mid) <= change else (mid, hi)
    return hi if hi <= limit else None
