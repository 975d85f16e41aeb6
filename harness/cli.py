"""The `harness` command: list, run, log, report, compare, baseline, env (docs/DESIGN.md).

Nothing heavy is imported at module level: `harness --help` must answer in well under 1.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _error(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"harness: error: {msg}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark and compare distributed ML on Apache Spark: ingestion, UDF styles, "
                    "MLlib vs TensorFlow vs PyTorch, Horovod/TorchDistributor scaling. Every timing is a "
                    "record in results.jsonl, logged to MLflow, plotted in an HTML report.",
        epilog="Examples:\n  harness list\n  harness run quick\n"
               "  harness run calibration.sleep --set ms=50 --repeats 10\n"
               "  harness compare baseline results/<run_id>\n"
               "Exit codes (run): 0 all ok, 1 a case failed or timed out, 2 bad arguments, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    ls = sub.add_parser("list", help="experiments, cases and parameter axes with defaults")
    ls.add_argument("--json", action="store_true", help="machine-readable listing")

    run = sub.add_parser("run", help="run a suite, an experiment or one case",
                         description="Runs TARGETs: a suite (quick, full, or a .toml file), an experiment "
                                     "(ingestion) or a case (ingestion.small_files). Writes "
                                     "RESULTS/<run_id>/results.jsonl and env.json, logs to MLflow, writes a report.")
    run.add_argument("targets", nargs="+", metavar="TARGET")
    run.add_argument("--set", action="append", default=[], metavar="AXIS=V1,V2",
                     help="parameter values for every selected case with that axis (repeatable)")
    run.add_argument("--repeats", type=int, help="measured repeats per case (default: suite's, else 5)")
    run.add_argument("--warmup", type=int, help="warm-up (cold) runs per case, kept apart (default 1)")
    run.add_argument("--timeout", type=float, metavar="S", help="per-case timeout in seconds (default 900)")
    run.add_argument("--master", help="Spark master URL (default local[N], N = cores)")
    run.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="Spark conf (repeatable)")
    run.add_argument("--results", type=Path, default=Path(os.environ.get("HARNESS_RESULTS", "results")),
                     help="results folder (default ./results)")
    run.add_argument("--run-id", help="name of this run (default: UTC timestamp + random suffix)")
    run.add_argument("--resume", action="store_true", help="continue RUN_ID: run only cases not yet recorded")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else an "
                                            "embedded SQLite store RESULTS/mlflow.db)")
    run.add_argument("--no-mlflow", action="store_true", help="skip MLflow (log later with `harness log`)")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    run.add_argument("--data", type=Path, help="a real image folder or CSV file replacing generated data")
    run.add_argument("--seed", type=int, default=42, help="seed for generated data and splits (default 42)")

    lg = sub.add_parser("log", help="log an existing run folder to MLflow")
    lg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    lg.add_argument("--tracking-uri")

    rp = sub.add_parser("report", help="plots + one self-contained HTML page for one or more runs")
    rp.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", type=Path, metavar="FILE", help="HTML file (default RUN_DIR/report.html)")

    cp = sub.add_parser("compare", help="regression check of CURRENT against BASELINE",
                        description="Matches cases by identity and tests each for a significant change. "
                                    "BASELINE may be a run folder, a results.jsonl, or `baseline` (this "
                                    "machine's stored baseline). Exit 0: no regression, 1: regression, 2: bad input.")
    cp.add_argument("baseline", metavar="BASELINE")
    cp.add_argument("current", metavar="CURRENT")
    cp.add_argument("--threshold", type=float, default=0.05, metavar="F",
                    help="smallest relative slowdown that counts (default 0.05 = 5%%)")
    cp.add_argument("--alpha", type=float, default=0.05, metavar="A",
                    help="significance level after false-discovery-rate control (default 0.05)")
    cp.add_argument("--json", action="store_true")
    cp.add_argument("--results", type=Path, default=Path(os.environ.get("HARNESS_RESULTS", "results")),
                    help="results folder holding baselines/ (default ./results)")

    bl = sub.add_parser("baseline", help="manage per-machine baselines")
    blsub = bl.add_subparsers(dest="baseline_command", metavar="ACTION")
    bls = blsub.add_parser("save", help="store RUN_DIR as this machine's baseline")
    bls.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    bls.add_argument("--results", type=Path, default=Path(os.environ.get("HARNESS_RESULTS", "results")))

    ev = sub.add_parser("env", help="print the machine + software fingerprint")
    ev.add_argument("--json", action="store_true")
    return p


def cmd_list(args) -> int:
    from .registry import describe, load_all

    listing = describe(load_all())
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    for exp in listing:
        print(f"{exp['experiment']}: {exp['doc']}")
        for c in exp["cases"]:
            axes = ", ".join(f"{n}={','.join(map(str, a['default']))}" for n, a in c["axes"].items())
            print(f"  {c['target']:<36} {c['doc']}")
            if axes:
                print(f"  {'':<36}   axes: {axes}")
    return EXIT_OK


def cmd_env(args) -> int:
    from .env import env_id, fingerprint

    env = fingerprint()
    env["env_id"] = env_id(env)
    if args.json:
        print(json.dumps(env, indent=2, sort_keys=True))
        return EXIT_OK
    m, pk = env["machine"], env["packages"]
    print(f"env_id   {env['env_id']}")
    print(f"cpu      {m['cpu_model']} ({m['cores']} cores, {m['threads']} threads), {m['memory_gb']} GB RAM, "
          f"{m['arch']}")
    print(f"os       {env['os']['system']} {env['os']['release']}")
    print(f"python   {env['python']['version']}   java: {env['java'] or 'MISSING'}")
    gpu = env["gpu"]
    print(f"gpu      {gpu['count']} " + (", ".join(gpu.get("names", [])) + f" driver {gpu.get('driver')}"
                                      if gpu["count"] else "(none)"))
    print(f"git      {env['git']['commit']} {'(dirty)' if env['git']['dirty'] else ''}")
    print("packages " + ", ".join(f"{k} {v}" for k, v in pk.items() if v))
    return EXIT_OK


def _parse_conf(items: list[str]) -> tuple[dict[str, str], list[str]]:
    conf, problems = {}, []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            problems.append(f"--conf {item!r}: expected KEY=VALUE, e.g. --conf spark.sql.shuffle.partitions=8")
        else:
            conf[k.strip()] = v
    return conf, problems


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def cmd_run(args) -> int:
    from . import record
    from .registry import load_all
    from .spec import ConfigError, plan

    problems = []
    for flag, value, low in (("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0), ("--timeout", args.timeout, 0)):
        if value is not None and value < low or (flag == "--timeout" and value is not None and value <= 0):
            problems.append(f"{flag} must be {'> 0' if flag == '--timeout' else f'>= {low}'}, got {value}")
    conf, conf_problems = _parse_conf(args.conf)
    problems += conf_problems
    if args.data is not None:
        from .data import check_data_path

        problems += check_data_path(args.data)
    if args.run_id and not all(c.isalnum() or c in "-_." for c in args.run_id):
        problems.append(f"--run-id {args.run_id!r}: use letters, digits, '-', '_' and '.' only")
    if args.resume and not args.run_id:
        problems.append("--resume needs --run-id (the run to continue)")
    try:
        the_plan = plan(args.targets, args.set, load_all())
    except ConfigError as e:
        problems += e.problems
        the_plan = None
    if problems:
        print("harness: error: nothing was run; fix these first:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_USAGE
    if any(c.spec.spark for c in the_plan.cases):
        from .spark import JavaMissing, check_java

        try:
            check_java()
        except JavaMissing as e:
            return _error(str(e))

    run_id = args.run_id or _new_run_id()
    results_root = args.results
    run_dir = results_root / run_id
    results_file = run_dir / record.RESULTS_FILE
    skip: set[str] = set()
    previous_results: dict = {}
    if results_file.exists():
        if not args.resume:
            return _error(f"{run_dir} already holds results: pass --resume to complete it, or another --run-id")
        previous, bad = record.read(results_file)
        for line in bad:
            print(f"harness: warning: {line}", file=sys.stderr)
        skip = {r.identity for r in previous}
        previous_results = {r.identity: r for r in previous}
    run_dir.mkdir(parents=True, exist_ok=True)
    return _execute(args, the_plan, run_id, run_dir, results_root, conf, skip, previous_results)


def _execute(args, the_plan, run_id, run_dir, results_root, conf, skip, previous_results) -> int:
    from . import record
    from .context import RunContext
    from .env import env_id, fingerprint
    from .masking import secret_values
    from .progress import Progress
    from .runner import Interrupted, Runner, Settings, exit_code, run_summary

    env = fingerprint()
    eid = env_id(env)
    env["env_id"] = eid
    env_file = run_dir / record.ENV_FILE
    record.write_json(env_file, env)
    d = the_plan.defaults
    settings = Settings(repeats=args.repeats or d.get("repeats", 5),
                        warmup=args.warmup if args.warmup is not None else d.get("warmup", 1),
                        timeout_s=args.timeout or d.get("timeout", 900.0))
    if args.repeats is not None or args.warmup is not None or args.timeout is not None:
        # command-line settings win over a suite's per-entry ones
        for c in the_plan.cases:
            c.repeats = args.repeats if args.repeats is not None else c.repeats
            c.warmup = args.warmup if args.warmup is not None else c.warmup
            c.timeout = args.timeout if args.timeout is not None else c.timeout
    ctx = RunContext(run_id=run_id, run_dir=run_dir, master=args.master, conf=conf,
                     data=args.data.resolve() if args.data else None, seed=args.seed,
                     timeout_s=settings.timeout_s, results=dict(previous_results))

    sink = None
    if not args.no_mlflow:
        from .sinks.mlflow import MlflowSink, default_tracking_uri

        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_root)
        sink = MlflowSink(uri, results_root)
        if not sink.start(run_id, env, the_plan.description):
            print(f"harness: warning: {sink.failure}\n  the run goes on; results are kept in {run_dir}; "
                  f"log them later with: harness log {run_dir}" + (f" --tracking-uri {uri}" if args.tracking_uri else ""),
                  file=sys.stderr)

    todo = [c for c in the_plan.cases if c.identity not in skip]
    progress = Progress(len(todo))
    if skip:
        progress.message(f"resuming {run_id}: {len(skip)} case(s) already recorded, {len(todo)} to run")
    runner = Runner(ctx, run_dir / record.RESULTS_FILE, eid, settings, on_record=sink.case if sink else None,
                    progress=progress, secrets=secret_values(conf, dict(os.environ)))

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    interrupted = False
    try:
        runner.run(the_plan.cases, skip)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
        progress.message("\ninterrupted: finished cases are kept in " + str(run_dir / record.RESULTS_FILE)
                         + f"; continue with: harness run {' '.join(args.targets)} --run-id {run_id} --resume")
    finally:
        if ctx.spark_info:
            env["spark"] = ctx.spark_info
            record.write_json(env_file, env)
    results_file = run_dir / record.RESULTS_FILE
    all_results = record.read(results_file)[0] if results_file.exists() else []
    all_results = record.dedupe_latest(all_results)
    report_path = None
    if not interrupted and not args.no_report:
        report_path = _try_report(run_dir, progress)
    if sink:
        arts = [run_dir / record.RESULTS_FILE, env_file] + ([report_path, report_path.parent / "plots"]
                                                            if report_path else [])
        sink.finish(arts, failed=interrupted or exit_code(all_results) != 0)
    try:
        ctx.stop()
    except Exception:  # noqa: BLE001 - stopping a broken JVM must not change the outcome
        pass
    counts = run_summary(all_results)
    print(f"\nrun {run_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print(f"  results:  {run_dir / record.RESULTS_FILE}")
    print(f"  env:      {env_file}")
    if sink is not None:
        if sink.failure:
            print(f"  mlflow:   NOT logged - {sink.failure}\n            fix, then: harness log {run_dir}")
        else:
            from .sinks.mlflow import EXPERIMENT

            print(f"  mlflow:   {sink.uri} (experiment {EXPERIMENT}, run {run_id})")
    if report_path:
        print(f"  report:   {report_path}")
    for r in all_results:
        if r.status in ("error", "timeout"):
            first = (r.error or {}).get("message", "").strip().splitlines()
            print(f"  {r.status.upper():8} {r.name} {r.params}: {first[0][:200] if first else ''}")
    if interrupted:
        return EXIT_INTERRUPTED
    return exit_code(all_results)


def _try_report(run_dir: Path, progress) -> Path | None:
    try:
        from .report import build_report
    except ImportError:
        return None
    try:
        return build_report([run_dir], None)
    except Exception as e:  # noqa: BLE001 - a report problem never costs the run its results
        progress.message(f"harness: warning: report failed ({type(e).__name__}: {e}); "
                         f"retry with: harness report {run_dir}")
        return None


def cmd_log(args) -> int:
    from . import record
    from .sinks.mlflow import MlflowSink, default_tracking_uri

    results_file = args.run_dir / record.RESULTS_FILE
    if not results_file.is_file():
        return _error(f"{args.run_dir} is not a run folder (no {record.RESULTS_FILE} in it)")
    results, bad = record.read(results_file)
    for line in bad:
        print(f"harness: warning: {line}", file=sys.stderr)
    if not results:
        return _error(f"{results_file} holds no records")
    env_file = args.run_dir / record.ENV_FILE
    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    results_root = args.run_dir.resolve().parent
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_root)
    sink = MlflowSink(uri, results_root)
    if not sink.start(results[0].run_id, env):
        return _error(sink.failure or "MLflow unavailable")
    before = len(sink.logged)
    for r in record.dedupe_latest(results):
        sink.case(r)
    report = args.run_dir / "report.html"
    arts = [results_file, env_file] + ([report, args.run_dir / "plots"] if report.is_file() else [])
    sink.finish([a for a in arts if a.exists()], failed=any(r.status in ("error", "timeout") for r in results))
    if sink.failure:
        return _error(sink.failure)
    print(f"logged {len(sink.logged) - before} case(s) of run {results[0].run_id} to {uri} "
          f"({before} were already there)")
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import ReportError, build_report

    try:
        out = build_report(args.run_dirs, args.out)
    except ReportError as e:
        return _error(str(e))
    print(f"report: {out}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from .gate import compare_main

    return compare_main(args.baseline, args.current, threshold=args.threshold, alpha=args.alpha, as_json=args.json,
                        results_root=args.results)


def cmd_baseline(args) -> int:
    if args.baseline_command != "save":
        return _error("usage: harness baseline save RUN_DIR")
    from .gate import GateError, save_baseline

    try:
        path = save_baseline(args.run_dir, args.results)
    except GateError as e:
        return _error(str(e))
    print(f"baseline saved: {path}")
    return EXIT_OK


COMMANDS = {"list": cmd_list, "run": cmd_run, "log": cmd_log, "report": cmd_report, "compare": cmd_compare,
            "baseline": cmd_baseline, "env": cmd_env}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
