"""asv benchmarks for the `training` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("training", __name__))
