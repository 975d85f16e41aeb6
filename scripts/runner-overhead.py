"""How much the runner adds to each sample, measured with calibration.spin at small `iterations`.

For each size it runs the case through the real Runner (warm-up, repeats, progress callback) and compares the
runner's median with the same call timed by a bare perf_counter loop, with a tiny per-sample total of work.
Usage: .venv/bin/python scripts/runner-overhead.py [--repeats 2000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.context import RunContext
from harness.experiments.calibration import spin_loop
from harness.progress import Progress
from harness.registry import load_all
from harness.runner import Runner, Settings
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
    print(f"{'iterations':>10} {'runner median us':>17} {'bare median us':>15} {'added us':>9} {'wall/sample us':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for iterations in (0, 10, 100, 1000):
            runner = Runner(RunContext(run_id="overhead", run_dir=Path(tmp)), Path(tmp) / "r.jsonl", "x",
                            Settings(args.repeats, 10, 600), progress=Progress(1, quiet=True))
            t0 = time.perf_counter()
            r = runner.run_case(CaseRun(spec, {"iterations": iterations}))
            wall = (time.perf_counter() - t0) / (args.repeats + 10)
            bare = bare_median(iterations, args.repeats)
            med = r.stats["median"]
            print(f"{iterations:>10} {med * 1e6:>17.3f} {bare * 1e6:>15.3f} {(med - bare) * 1e6:>9.3f} "
                  f"{wall * 1e6:>15.1f}")


if __name__ == "__main__":
    main()
