"""asv benchmarks for the `udf` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("udf", __name__))
