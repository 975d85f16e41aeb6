"""asv benchmarks for the `calibration` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("calibration", __name__))
