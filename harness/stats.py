"""Summary statistics and the tests the regression gate uses.

The confidence interval of the median is distribution-free (binomial order statistics), which suits timing
samples: they are skewed and often have outliers, so a normal-theory interval would mislead.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of already-sorted data."""
    if not sorted_xs:
        return math.nan
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def median_ci(sorted_xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics.

    Picks the narrowest symmetric pair of ranks (j, n-1-j) whose binomial coverage is >= confidence.
    With fewer than 6 samples no pair reaches 95%, and the interval is the full range (min, max).
    """
    n = len(sorted_xs)
    if n == 0:
        return math.nan, math.nan
    best = (sorted_xs[0], sorted_xs[-1])
    total, tail, term = 2**n, 0, 1  # term = C(n, j), tail = sum_{i<=j} C(n, i), exact integers
    for j in range(n // 2):
        tail += term
        # P(X_(j) <= median <= X_(n-1-j)) = 1 - 2 P(Bin(n, 1/2) <= j)
        if 1 - 2 * tail / total < confidence:
            break
        best = (sorted_xs[j], sorted_xs[n - 1 - j])
        term = term * (n - j) // (j + 1)
    return best


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """n, median, mean, stdev, min, max, q1, q3 and the 95% CI of the median."""
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
    }


# --- regression gate: effect size, rank test, multiple testing, sensitivity ---------------------------------

def worse_ratio(baseline_median: float, current_median: float, better: str) -> float:
    """Ratio of medians oriented so that > 1 means worse: current/baseline for times, baseline/current for
    throughputs (better == "higher")."""
    if better == "higher":
        return baseline_median / current_median
    return current_median / baseline_median


def bootstrap_ratio_ci(baseline: Sequence[float], current: Sequence[float], better: str = "lower",
                       confidence: float = 0.95, n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `worse_ratio` of medians, resampling each side independently.

    Seeded, so the same inputs always print the same interval. With very few samples the interval is coarse
    (a resampled median can only take sample values) and says so by being wide.
    """
    import numpy as np

    b = np.asarray(baseline, dtype=float)
    c = np.asarray(current, dtype=float)
    if b.size == 0 or c.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, (n_boot, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, (n_boot, c.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mb / mc if better == "higher" else mc / mb
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return float(lo), float(hi)


def mann_whitney_worse(baseline: Sequence[float], current: Sequence[float], better: str = "lower") -> float:
    """One-sided Mann-Whitney U p-value for "current is worse than baseline" (larger times, or smaller
    throughputs). Exact for small samples without ties, normal approximation otherwise (scipy's choice)."""
    from scipy.stats import mannwhitneyu

    if len(baseline) == 0 or len(current) == 0:
        return math.nan
    alternative = "less" if better == "higher" else "greater"
    return float(mannwhitneyu(list(current), list(baseline), alternative=alternative).pvalue)


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


def min_rank_p(n1: int, n2: int) -> float:
    """The smallest one-sided exact Mann-Whitney p-value n1 and n2 samples can give (complete separation):
    below this no change, however large, is significant."""
    if n1 == 0 or n2 == 0:
        return 1.0
    # via logs: the binomial coefficient overflows a float beyond a few hundred samples
    return math.exp(math.lgamma(n1 + 1) + math.lgamma(n2 + 1) - math.lgamma(n1 + n2 + 1))


def log_spread(samples: Sequence[float]) -> float:
    """Standard deviation of log(samples): relative noise, comparable across cases of any scale."""
    xs = [math.log(x) for x in samples if x > 0]
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


# Mann-Whitney's asymptotic efficiency relative to the t-test for normal data is 3/pi; its sample sizes are
# the t-test's inflated by pi/3.
_MWU_INFLATION = math.pi / 3


def _z(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


def min_detectable_change(baseline: Sequence[float], current: Sequence[float], alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """The smallest relative worsening (0.10 = 10%) that these samples would have detected with the given power
    at significance `alpha`, from the pooled relative noise; inf when the rank test cannot reach alpha at all
    with so few samples. An approximation (normal theory on log times, scaled for the rank test)."""
    n1, n2 = len(baseline), len(current)
    if n1 < 2 or n2 < 2 or min_rank_p(n1, n2) > alpha:
        return math.inf
    s = pooled_log_spread(baseline, current)
    if math.isnan(s):
        return math.inf
    se = s * math.sqrt(_MWU_INFLATION * (1 / n1 + 1 / n2))
    return math.exp((_z(1 - alpha) + _z(power)) * se) - 1


def pooled_log_spread(baseline: Sequence[float], current: Sequence[float]) -> float:
    s1, s2 = log_spread(baseline), log_spread(current)
    n1, n2 = len(baseline), len(current)
    if math.isnan(s1) or math.isnan(s2):
        return math.nan
    return math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))


def repeats_needed(spread: float, change: float, alpha: float = 0.05, power: float = 0.8,
                   limit: int = 10_000) -> int | None:
    """Repeats per side for a relative worsening `change` (0.05 = 5%) to be significant with `power`, given the
    relative noise `spread` (see `log_spread`); None when it would take more than `limit`."""
    if math.isnan(spread) or change <= 0:
        return None
    effect = math.log1p(change)
    z = _z(1 - alpha) + _z(power)
    n = max(2, math.ceil(2 * _MWU_INFLATION * (z * spread / effect) ** 2))
    if n > limit:
        return None
    while min_rank_p(n, n) > alpha:  # the rank test's floor: tiny noise still needs enough samples
        n += 1
    return n if n <= limit else None
