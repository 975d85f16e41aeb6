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
    for j in range(n // 2):
        # P(X_(j) <= median <= X_(n-1-j)) = sum_{i=j+1}^{n-1-j} C(n,i) / 2^n
        coverage = sum(math.comb(n, i) for i in range(j + 1, n - j)) / 2**n
        if coverage < confidence:
            break
        best = (sorted_xs[j], sorted_xs[n - 1 - j])
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
