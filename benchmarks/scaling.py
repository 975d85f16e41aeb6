"""asv benchmarks for the `scaling` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("scaling", __name__))
