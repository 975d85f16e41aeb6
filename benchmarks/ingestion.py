"""asv benchmarks for the `ingestion` experiment family, one class per registered case (see _harness.py)."""
from ._harness import scenarios

globals().update(scenarios("ingestion", __name__))
