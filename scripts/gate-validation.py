#!/usr/bin/env python
"""Validates the paired regression gate (`harness ab`) against ground truth (a benchmark script, not a test).

Every trial is one real `harness ab` through the CLI, with fresh workers, alternating between
- A/A: both sides identical; any REGRESSED verdict is a false alarm;
- A/B: side B does `--change` (default 15%) more work; a REGRESSED verdict is a detection.

Cases:
- `spin`: calibration.spin, a pure-Python loop whose time is proportional to its iterations, so B runs
  iterations x (1 + change).
- `spark_spin`: calibration.spark_spin, the same loop inside a Spark job's tasks. Its time is a fixed per-job
  cost plus a part proportional to the iterations, so +15% iterations is not +15% time. The script first
  measures that split with one paired run (B at twice the iterations: ratio r = 1 + s/(o+s)), then gives B
  iterations x (1 + change / (r - 1)), which makes B's expected time (1 + change) x A's.

Targets: false alarms <= 5% of A/A trials, detections >= 90% of A/B trials. The rates are printed with exact
(Clopper-Pearson) 95% intervals and the load average during the trials. Exit 0 when both targets are met.

    .venv/bin/python scripts/gate-validation.py --case spin --trials 40 --out results/gate-validation.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {"spin": ("calibration.spin", 1_000_000), "spark_spin": ("calibration.spark_spin", 2_000_000)}


def ab(results: Path, run_id: str, target: str, a_iters: int, b_iters: int, pairs: int | None,
       threshold: float, extra: list[str]) -> dict:
    args = ["ab", target, "--set", f"iterations={a_iters}", "--b-set", f"iterations={b_iters}", "--json",
            "--no-mlflow", "--results", str(results), "--run-id", run_id, "--threshold", str(threshold), *extra]
    if pairs:
        args += ["--pairs", str(pairs)]
    p = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode not in (0, 1) or not p.stdout.strip().startswith("{"):
        sys.exit(f"harness ab failed (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout)
    if not out["cases"]:
        sys.exit(f"harness ab compared nothing: {out.get('not_comparable')}")
    return out["cases"][0]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), default="spin")
    ap.add_argument("--trials", type=int, default=40, help="trials of each kind, A/A and A/B (default 40)")
    ap.add_argument("--iterations", type=int, help="side A's iterations (default: 1M for spin, 2M for spark_spin)")
    ap.add_argument("--change", type=float, default=0.15, help="B's extra time in A/B trials (default 0.15)")
    ap.add_argument("--threshold", type=float, default=0.05, help="the gate's threshold (default 0.05)")
    ap.add_argument("--pairs", type=int, help="pairs per trial (default: harness ab's)")
    ap.add_argument("--pin-cpu", type=int, help="pass --pin-cpu to harness ab (single-threaded cases)")
    ap.add_argument("--out", type=Path, help="write every trial and the summary as JSON here")
    args = ap.parse_args()
    if args.trials < 1 or not (0 < args.change < 10):
        ap.error("--trials takes a whole number >= 1 and --change a fraction such as 0.15")

    target, default_iters = CASES[args.case]
    a_iters = args.iterations or default_iters
    extra = ["--pin-cpu", str(args.pin_cpu)] if args.pin_cpu is not None else []
    results = Path(tempfile.mkdtemp(prefix="gate-validation-"))
    factor = 1 + args.change
    calibration = None
    if args.case == "spark_spin":
        c = ab(results, "calibrate", target, a_iters, 2 * a_iters, 20, args.threshold, extra)
        r = c["ratio"]
        if not r > 1.02:
            sys.exit(f"doubling the iterations made the job only {r:.3f}x slower: the fixed per-job cost "
                     "dominates; pass more --iterations")
        factor = 1 + args.change / (r - 1)
        calibration = {"ratio_at_2x_iterations": r, "iterations_factor_for_change": factor}
        print(f"calibration: 2x iterations -> {r:.3f}x time; B gets {factor:.3f}x iterations for "
              f"+{args.change:.0%} time", flush=True)
    b_iters = round(a_iters * factor)

    trials = []
    t0 = time.monotonic()
    for i in range(args.trials):
        for kind, b in (("A/A", a_iters), ("A/B", b_iters)):
            load = os.getloadavg()[0]
            start = time.monotonic()
            c = ab(results, f"t{i}-{kind.replace('/', '')}", target, a_iters, b, args.pairs, args.threshold, extra)
            trials.append({"trial": i, "kind": kind, "ratio": c["ratio"], "p": c["p"], "verdict": c["verdict"],
                           "pairs": c["n_baseline"], "load_start": round(load, 2),
                           "load_end": round(os.getloadavg()[0], 2), "wall_s": round(time.monotonic() - start, 2)})
            t = trials[-1]
            print(f"{kind} #{i + 1:>3}: ratio {t['ratio']:.3f}  p {t['p']:.4f}  {t['verdict']:<26} "
                  f"load {t['load_start']:.1f}  {t['wall_s']:.1f} s", flush=True)

    summary = {"case": target, "iterations_a": a_iters, "iterations_b": b_iters, "change": args.change,
               "threshold": args.threshold, "trials_each": args.trials, "calibration": calibration,
               "wall_s": round(time.monotonic() - t0, 1)}
    for kind, key, target_rate, ok in (("A/A", "false_alarms", 0.05, lambda r: r <= 0.05),
                                       ("A/B", "detections", 0.90, lambda r: r >= 0.90)):
        rows = [t for t in trials if t["kind"] == kind]
        k = sum(t["verdict"] == "REGRESSED" for t in rows)
        lo, hi = clopper_pearson(k, len(rows))
        ratios = sorted(t["ratio"] for t in rows)
        summary[key] = {"count": k, "of": len(rows), "rate": k / len(rows), "ci95": [lo, hi], "target": target_rate,
                        "met": ok(k / len(rows)), "ratio_range": [ratios[0], ratios[-1]],
                        "wall_s_per_trial": round(sum(t["wall_s"] for t in rows) / len(rows), 2)}
    loads = [t["load_start"] for t in trials] + [t["load_end"] for t in trials]
    summary["load_average"] = [min(loads), max(loads)]
    print(f"\n{target}: false alarms {summary['false_alarms']['count']}/{args.trials} "
          f"(target <= 5%; 95% CI {summary['false_alarms']['ci95'][0]:.1%}-{summary['false_alarms']['ci95'][1]:.1%}), "
          f"detections {summary['detections']['count']}/{args.trials} "
          f"(target >= 90%; 95% CI {summary['detections']['ci95'][0]:.1%}-{summary['detections']['ci95'][1]:.1%}); "
          f"load {min(loads):.1f}-{max(loads):.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "trials": trials}, indent=2))
    return 0 if summary["false_alarms"]["met"] and summary["detections"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
