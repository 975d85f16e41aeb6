"""Version gates for cases that exist only on a newer Spark (the Spark 4 stack, docs/DESIGN.md).

The gate reads the installed pyspark (the client API the case calls), not the cluster's version: an API the
package lacks cannot be called whatever the server runs.
"""
from __future__ import annotations

from ..workload import Unavailable


def spark_version() -> tuple[int, int]:
    """(major, minor) of the installed pyspark."""
    import pyspark

    major, minor = pyspark.__version__.split(".")[:2]
    return int(major), int(minor)


def need_spark(at_least: tuple[int, int], what: str) -> None:
    """Raises Unavailable ("`what` needs Spark >= 4.0 (this stack has 3.5.9)") on an older pyspark."""
    if spark_version() < at_least:
        import pyspark

        raise Unavailable(f"{what} needs Spark >= {at_least[0]}.{at_least[1]} (this stack has {pyspark.__version__})")
