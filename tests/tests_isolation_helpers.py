"""Functions that tests run in child processes through harness.isolation."""
from harness.workload import Unavailable


def unavailable():
    raise Unavailable("raised in the child on purpose")
