"""asv benchmarks for the `inference` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("inference", __name__))
