"""Summary statistics against values worked out by hand."""
import math

import pytest

from harness.stats import median_ci, quantile, summarize


def test_summary_of_one_to_nine():
    s = summarize([9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert (s["n"], s["median"], s["mean"], s["min"], s["max"]) == (9, 5, 5, 1, 9)
    assert s["q1"] == 3 and s["q3"] == 7
    assert s["stdev"] == pytest.approx(math.sqrt(7.5))
    # ranks 2 and 8 cover the median with probability 492/512 = 0.961 >= 0.95; ranks 3 and 7 only 0.82
    assert (s["ci_low"], s["ci_high"]) == (2, 8)


def test_small_samples_get_the_full_range_as_interval():
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 5.0)
    s = summarize([0.5])
    assert s["median"] == 0.5 and s["stdev"] == 0.0 and (s["ci_low"], s["ci_high"]) == (0.5, 0.5)


def test_quantile_interpolates_like_numpy():
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert summarize([]) == {"n": 0}
