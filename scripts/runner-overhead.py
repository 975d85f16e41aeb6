"""How much the harness adds to each sample, measured with calibration.spin at small `iterations`.

For each size it runs the case the way `harness run` does (the coordinator driving a worker process that takes
warm-ups and repeats and streams every sample back) and compares the recorded median with the same call timed
by a bare perf_counter loop in this process. "wall/sample" is the case's wall time per call, seen from the
coordinator: timing, the sample messages, building and checking the case, the coordinator's bookkeeping.
Usage: .venv/bin/python scripts/runner-overhead.py [--repeats 2000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.coordinator import Coordinator, Settings, WorkerHandle, WorkerSettings
from harness.experiments.calibration import spin_loop
from harness.registry import load_all
from harness.spec import CaseRun


def bare_median(iterations: int, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        spin_loop(iterations)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    spec = load_all()["calibration"].cases["spin"]
    warmup = 10
    print(f"{'iterations':>10} {'runner median us':>17} {'bare median us':>15} {'added us':>9} {'wall/sample us':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        worker = WorkerHandle(WorkerSettings("overhead", Path(tmp)), Path(tmp) / "worker.log")
        coordinator = Coordinator("overhead", Path(tmp) / "r.jsonl", "x", Settings(args.repeats, warmup, 600))
        try:
            worker.ensure_started()  # as in a run: the worker's start is not part of any case
            for iterations in (0, 10, 100, 1000):
                t0 = time.perf_counter()
                r = coordinator.run_case(CaseRun(spec, {"iterations": iterations}), worker)
                wall = (time.perf_counter() - t0) / (args.repeats + warmup)
                bare = bare_median(iterations, args.repeats)
                med = r.stats["median"]
                print(f"{iterations:>10} {med * 1e6:>17.3f} {bare * 1e6:>15.3f} {(med - bare) * 1e6:>9.3f} "
                      f"{wall * 1e6:>15.1f}")
        finally:
            worker.stop()


if __name__ == "__main__":
    main()
