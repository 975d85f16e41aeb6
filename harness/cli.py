"""The `harness` command: list, run, log, report, compare, baseline, env (docs/DESIGN.md).

Nothing heavy is imported at module level: `harness --help` must answer in well under 1.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


def _error(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"harness: error: {msg}", file=sys.stderr)
    return code


def _shared_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Options several commands take, defined once: --results DIR and --json (--master/--remote: _spark_options)."""
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument("--results", type=Path, default=Path(os.environ.get("HARNESS_RESULTS", "results")),
                         metavar="DIR", help="results folder: runs, baselines/, mlflow.db (default "
                                             "$HARNESS_RESULTS, else ./results)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    return results, as_json


def _spark_options() -> argparse.ArgumentParser:
    """Where the cases' Spark runs, for every command that runs cases (run, ab): one of --master and --remote."""
    spark = argparse.ArgumentParser(add_help=False)
    spark.add_argument("--master", help="Spark master URL (default local[N], N = cores)")
    spark.add_argument("--remote", metavar="sc://HOST:PORT",
                       help="run the cases through a Spark Connect server instead of a driver of their own "
                            "(start one with scripts/spark-connect.sh start; needs the Spark 4 stack); cases that "
                            "need the classic SparkContext are recorded unavailable")
    return spark


def spark_target_problem(args) -> str | None:
    """What is wrong with --master/--remote (both given, a malformed URL, no server, no Connect client), or
    None. A usable --remote becomes the workers' master: an sc:// master is a Connect server (harness.spark)."""
    remote, master = getattr(args, "remote", None), getattr(args, "master", None)
    if master and master.startswith("sc://"):
        return f"--master {master}: a Spark Connect URL goes to --remote, e.g. --remote {master}"
    from .spark import remote_problem

    for side in ("a", "b"):
        url = getattr(args, f"{side}_remote", None)
        if url is not None and (problem := remote_problem(url, flag=f"--{side}-remote")):
            return problem
    if remote is None:
        return None
    if master:
        return (f"--remote {remote} and --master {master}: give one (--remote runs the cases through a Spark "
                "Connect server, --master on a driver of their own)")
    from .spark import connect_client_problem

    if problem := remote_problem(remote):
        return problem
    pythons = [getattr(args, f"{side}_python", None) for side in ("a", "b")]
    if args.command == "run" or not all(pythons):  # a worker on this interpreter is a Connect client
        if problem := connect_client_problem():
            return problem
    args.master = remote
    return None


def build_parser() -> argparse.ArgumentParser:
    results, as_json = _shared_options()
    spark = _spark_options()
    p = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark and compare distributed ML on Apache Spark: ingestion, UDF styles, "
                    "MLlib vs TensorFlow vs PyTorch, Horovod/TorchDistributor scaling. Every timing is a "
                    "record in results.jsonl, logged to MLflow, plotted in an HTML report.",
        epilog="Examples:\n  harness list\n  harness run quick\n"
               "  harness run calibration.sleep --set ms=50 --repeats 10\n"
               "  harness compare baseline results/<run_id>\n"
               "Exit codes (run): 0 all ok, 1 a case failed or timed out, 2 bad arguments, 130 interrupted (Ctrl-C),\n"
               "143 terminated (SIGTERM).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("list", parents=[as_json], help="experiments, cases and parameter axes with defaults")

    run = sub.add_parser("run", parents=[results, spark], help="run a suite, an experiment or one case",
                         description="Runs TARGETs: a suite (quick, full, or a .toml file), an experiment "
                                     "(ingestion) or a case (ingestion.small_files). Writes "
                                     "RESULTS/<run_id>/results.jsonl and env.json, logs to MLflow, writes a report.")
    run.add_argument("targets", nargs="+", metavar="TARGET")
    run.add_argument("--set", action="append", default=[], metavar="AXIS=V1,V2",
                     help="parameter values for every selected case with that axis (repeatable)")
    run.add_argument("--repeats", type=int, help="measured repeats per case (default: suite's, else 5)")
    run.add_argument("--warmup", type=int, help="warm-up (cold) runs per case, kept apart (default 1)")
    run.add_argument("--timeout", type=float, metavar="S", help="per-case timeout in seconds (default 900)")
    run.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="Spark conf (repeatable)")
    run.add_argument("--run-id", help="name of this run (default: UTC timestamp + random suffix)")
    run.add_argument("--resume", action="store_true",
                     help="continue RUN_ID: run only cases not yet recorded, or whose code changed since. "
                          "An interrupted run (Ctrl-C, SIGTERM) keeps its finished cases and prints the "
                          "whole command to continue it: the same arguments plus --run-id ID --resume")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else an "
                                            "embedded SQLite store RESULTS/mlflow.db)")
    run.add_argument("--no-mlflow", action="store_true", help="skip MLflow (log later with `harness log`)")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    run.add_argument("--data", type=Path, help="a real image folder or CSV file replacing generated data")
    run.add_argument("--seed", type=int, default=42, help="seed for generated data and splits (default 42)")

    lg = sub.add_parser("log", help="log an existing run folder to MLflow")
    lg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    lg.add_argument("--tracking-uri")

    rp = sub.add_parser("report", parents=[results], help="plots + one self-contained HTML page for one or more runs")
    rp.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN_DIR", help="default: the newest run in --results")
    rp.add_argument("--out", type=Path, metavar="FILE", help="HTML file (default RUN_DIR/report.html)")

    sh = sub.add_parser("show", parents=[results], help="one run as a compact table on the terminal")
    sh.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="default: the newest run in --results")

    ex = sub.add_parser("export", parents=[results], help="one run's records as CSV or Parquet, one row each")
    ex.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="default: the newest run in --results")
    ex.add_argument("--format", default="csv", metavar="csv|parquet", help="file format (default csv)")
    ex.add_argument("--out", type=Path, metavar="FILE", help="default RUN_DIR/results.<format>")

    cp = sub.add_parser("compare", parents=[results, as_json],
                        help="regression check of CURRENT against BASELINE",
                        description="Matches cases by identity and tests each for a significant change. "
                                    "BASELINE may be a run folder, a results.jsonl, or `baseline` (this "
                                    "machine's stored baseline). Exit 0: no regression, 1: regression, 2: bad input.")
    cp.add_argument("baseline", metavar="BASELINE")
    cp.add_argument("current", metavar="CURRENT")
    cp.add_argument("--threshold", type=float, default=0.05, metavar="F",
                    help="smallest relative slowdown that counts (default 0.05 = 5%%)")
    cp.add_argument("--alpha", type=float, default=0.05, metavar="A",
                    help="significance level after false-discovery-rate control (default 0.05)")

    ab = sub.add_parser(
        "ab", parents=[results, as_json, spark], help="paired A/B comparison: the regression gate for noisy machines",
        description="Runs every case on two long-lived workers, A and B, and takes their samples in pairs (one A "
                    "and one B back to back, in random order), so a machine whose speed drifts hits both sides "
                    "alike. Decides on the paired log ratios (one-sided Wilcoxon signed-rank, Benjamini-Hochberg "
                    "across cases): a case regressed when q <= ALPHA and B/A > 1 + THRESHOLD. By default both "
                    "sides are this checkout and interpreter; change one side with --a-*/--b-* options. "
                    "Exit 0: no regression, 1: regression, 2: bad input, 130/143: interrupted.",
        epilog="Examples:\n  harness ab calibration.spin --b-set iterations=230000\n"
               "  harness ab quick --a-rev main --b-rev HEAD\n"
               "  harness ab udf --a-python .venv/bin/python --b-python .venv-other/bin/python\n"
               "  harness ab udf --b-remote sc://127.0.0.1:15002   (classic Spark vs Spark Connect)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ab.add_argument("targets", nargs="+", metavar="TARGET", help="suite, experiment or case, as for `run`")
    ab.add_argument("--set", action="append", default=[], metavar="AXIS=V1,V2", help="axis values on both sides")
    for side in ("a", "b"):
        S = side.upper()
        ab.add_argument(f"--{side}-set", action="append", default=[], metavar="AXIS=V",
                        help=f"an axis value on side {S} only (one value, repeatable)")
        ab.add_argument(f"--{side}-conf", action="append", default=[], metavar="KEY=VALUE",
                        help=f"Spark conf on side {S} only (repeatable)")
        ab.add_argument(f"--{side}-rev", metavar="GITREV",
                        help=f"side {S} imports the harness from this git revision (checked out in a worktree)")
        ab.add_argument(f"--{side}-python", metavar="PATH", help=f"side {S}'s Python interpreter (another venv)")
        ab.add_argument(f"--{side}-remote", metavar="sc://HOST:PORT",
                        help=f"side {S} runs its cases through this Spark Connect server, the other side as "
                             "--master/--remote say: what the client-server split costs, paired")
    ab.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="Spark conf on both sides")
    ab.add_argument("--pairs", type=int, metavar="N",
                    help="pairs per case (default: enough that one regressed case among the selected ones can "
                         "pass Benjamini-Hochberg, at least 10)")
    ab.add_argument("--max-pairs", type=int, metavar="M",
                    help="where the first pairs can tell neither a regression nor 'no change', take more, up to M "
                         "(default 3 x the pairs; 0: never). Each case's p is then corrected for the two looks")
    ab.add_argument("--warmup", type=int, help="warm-up samples per side per case, not paired (default 1)")
    ab.add_argument("--threshold", type=float, default=0.05, metavar="F",
                    help="smallest relative slowdown that counts (default 0.05 = 5%%)")
    ab.add_argument("--alpha", type=float, default=0.05, metavar="A",
                    help="false-discovery rate across cases (default 0.05)")
    ab.add_argument("--pin-cpu", type=int, metavar="CPU",
                    help="pin both workers to this CPU (for single-threaded cases: both sides share one core)")
    ab.add_argument("--timeout", type=float, metavar="S", help="per-case timeout in seconds (default 900)")
    ab.add_argument("--run-id", help="name of this comparison (default: ab- + UTC timestamp)")
    ab.add_argument("--tracking-uri", help="MLflow tracking URI (default as for `run`)")
    ab.add_argument("--no-mlflow", action="store_true", help="skip MLflow")
    ab.add_argument("--no-report", action="store_true", help="skip the HTML report (RUN_DIR/report.html)")
    ab.add_argument("--data", type=Path, help="a real image folder or CSV file replacing generated data")
    ab.add_argument("--seed", type=int, default=42, help="seed for data, splits and the pair order (default 42)")

    bl = sub.add_parser("baseline", help="manage per-machine baselines")
    blsub = bl.add_subparsers(dest="baseline_command", metavar="ACTION")
    bls = blsub.add_parser("save", parents=[results], help="store RUN_DIR as this machine's baseline")
    bls.add_argument("run_dir", type=Path, metavar="RUN_DIR")

    sub.add_parser("env", parents=[as_json], help="print the machine + software fingerprint")
    return p


def cmd_list(args) -> int:
    from .registry import describe, load_all

    listing = describe(load_all())
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    for exp in listing:
        print(f"{exp['experiment']}: {exp['doc']}")
        helps: dict[str, str] = {}
        for c in exp["cases"]:
            axes = ", ".join(f"{n}={','.join(map(str, a['default']))}" for n, a in c["axes"].items())
            print(f"  {c['target']:<36} {c['doc']}")
            if axes:
                print(f"  {'':<36}   axes: {axes}")
            helps.update({n: a["help"] for n, a in c["axes"].items() if a.get("help")})
        if helps:  # an axis means the same in every case of an experiment: explained once
            print("  axes:")
            for name, text in helps.items():
                print(f"    {name:<24} {text}")
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


def _run_id_problem(run_id: str | None) -> str | None:
    """What is wrong with --run-id, or None: it must name one new-or-existing folder right inside --results."""
    from .storage import BASELINES

    if run_id is None:
        return None
    if not run_id or run_id.startswith(".") or not all(c.isalnum() or c in "-_." for c in run_id):
        return (f"--run-id {run_id!r}: it names a folder inside --results, so use letters, digits, '-', '_' and "
                "'.', not starting with '.', e.g. --run-id nightly-1")
    if run_id == BASELINES:
        return f"--run-id {run_id!r}: that folder holds the stored baselines; pick another name"
    return None


def _warn_all(problems: list[str], limit: int = 5) -> None:
    for line in problems[:limit]:
        print(f"harness: warning: {line}", file=sys.stderr)
    if len(problems) > limit:
        print(f"harness: warning: ... and {len(problems) - limit} more bad line(s)", file=sys.stderr)


def _no_records(results_file: Path, bad: list[str]) -> str:
    detail = f"{len(bad)} bad line(s), first: {bad[0]}" if bad else "it is empty"
    return f"{results_file}: holds no readable record ({detail}); is it a results file written by `harness run`?"


def cmd_run(args) -> int:
    from . import record
    from .registry import load_all
    from .spec import ConfigError, plan, setting_problem

    problems = []
    for name in ("repeats", "warmup", "timeout"):
        value = getattr(args, name)
        if value is not None and (need := setting_problem(name, value)):
            problems.append(f"--{name} {value}: takes {need}")
    if args.seed < 0:
        problems.append(f"--seed {args.seed}: takes a whole number >= 0")
    conf, conf_problems = _parse_conf(args.conf)
    problems += conf_problems
    if args.data is not None:
        from .data import check_data_path

        problems += check_data_path(args.data)
    if run_id_problem := _run_id_problem(args.run_id):
        problems.append(run_id_problem)
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
    try:
        # held until this process ends: a second `harness run` on this folder stops here (exit 2)
        lock = record.claim_run_dir(run_dir)  # noqa: F841
    except record.RunLocked as e:
        return _error(str(e))
    skip: set[str] = set()
    previous_results: dict = {}
    if results_file.exists() or results_file.is_symlink():
        if not args.resume:
            return _error(f"{run_dir} already holds results: pass --resume to complete it, or another --run-id")
        if not results_file.is_file():
            return _error(f"{results_file}: not a file; move it away, or pass another --run-id")
        aside = record.set_aside_torn_tail(results_file)
        if aside:
            print(f"harness: warning: {results_file} ended in a record cut short (a crash or a full disk); "
                  f"the fragment is kept in {aside} and its case runs again", file=sys.stderr)
        previous, bad = record.read(results_file)
        _warn_all(bad)
        if bad and not previous:
            return _error(_no_records(results_file, bad) + " Move it away, or pass another --run-id")
        skip = {r.identity for r in previous}
        previous_results = {r.identity: r for r in previous}
    return _execute(RunRequest(args, the_plan, run_id, run_dir, results_root, conf, skip, previous_results))


@dataclass
class RunRequest:
    """What `harness run` settled before anything runs: the plan, where its records go, what is recorded."""

    args: argparse.Namespace
    plan: Any  # spec.Plan
    run_id: str
    run_dir: Path
    results_root: Path
    conf: dict[str, str]
    skip: set[str]  # identities recorded earlier in this run (--resume)
    previous: dict[str, Any]  # identity -> Result recorded earlier in this run


def _still_current(req: RunRequest) -> tuple[set[str], list[str]]:
    """--resume skips recorded cases, except those whose code version changed since: they run again."""
    from .registry import code_version

    skip, reruns = set(req.skip), []
    for case in req.plan.cases:
        old = req.previous.get(case.identity)
        if old is None or case.identity not in skip or old.version is None:
            continue
        new = code_version(case.spec.build)
        if new != old.version:
            skip.discard(case.identity)
            reruns.append(f"rerunning {case.label}: its code changed since it was recorded "
                          f"(version {old.version} -> {new})")
    return skip, reruns


def resume_command(args, run_id: str) -> str:
    """The whole command that continues this run: the original arguments plus --run-id ID --resume."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    return shlex.join(["harness", *argv] + ([] if args.run_id else ["--run-id", run_id])
                      + ([] if args.resume else ["--resume"]))


def _interrupts_raise() -> dict[int, Any]:
    """SIGINT and SIGTERM raise Interrupted in the main thread (SIGINT only where it is not ignored, as in a
    background job); returns the handlers to put back."""
    from .coordinator import Interrupted

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, handler)
    return old


def _execute(req: RunRequest) -> int:
    from . import record
    from .coordinator import (Coordinator, Interrupted, Settings, WorkerHandle, WorkerSettings, WorkerStartFailed,
                              any_failed, run_summary)
    from .env import env_id, fingerprint
    from .masking import mask_text, secret_values
    from .progress import Progress

    args, run_id, run_dir = req.args, req.run_id, req.run_dir
    results_file = run_dir / record.RESULTS_FILE
    env = fingerprint()
    eid = env_id(env)
    env["env_id"] = eid
    env_file = run_dir / record.ENV_FILE
    # how the run was asked for and how it ended: `harness log` summarises the run in MLflow from it
    env["invocation"] = {"targets": list(args.targets), "suite": req.plan.description or None,
                         "repeats": args.repeats, "warmup": args.warmup, "timeout_s": args.timeout,
                         "master": args.master, "remote": getattr(args, "remote", None), "outcome": "running"}
    record.write_json(env_file, env)
    settings = Settings(args.repeats, args.warmup, args.timeout, suite=dict(req.plan.defaults))

    sink = None
    if not args.no_mlflow:
        from .sinks.mlflow import MlflowSink, tracking_uri

        uri = tracking_uri(args.tracking_uri, req.results_root)
        sink = MlflowSink(uri, req.results_root)
        if not sink.start(run_id, env, req.plan.description):
            print(f"harness: warning: {sink.failure}\n  the run goes on; results are kept in {run_dir}; "
                  f"log them later with: harness log {run_dir}" + (f" --tracking-uri {sink.uri}" if args.tracking_uri else ""),
                  file=sys.stderr)

    skip, reruns = _still_current(req)
    todo = [c for c in req.plan.cases if c.identity not in skip]
    progress = Progress(len(todo))
    if req.skip:
        progress.message(f"resuming {run_id}: {len(skip)} case(s) already recorded, {len(todo)} to run")
    for line in reruns:
        progress.message(line)
    if any(c.spec.spark for c in todo):  # what the worker's log would hide: secrets on java's command line
        from .spark import command_line_warnings

        for line in command_line_warnings(req.conf):
            progress.message(f"harness: warning: {line}")
    store, store_env = (None, {})
    if sink is not None:  # cases that register models (inference) use the run's store; credentials go by env
        from .sinks.mlflow import split_credentials

        store, store_env = split_credentials(uri)  # {MLFLOW_TRACKING_USERNAME/PASSWORD} when the URI has them
    worker = WorkerHandle(WorkerSettings(run_id, run_dir, args.master, req.conf, args.data, seed=args.seed,
                                         timeout_s=settings.run_timeout_s, tracking_uri=store),
                          run_dir / "worker.log", env=store_env)
    on_record = (lambda r: sink.case(r, spark=worker.spark_info)) if sink else None
    coordinator = Coordinator(run_id, results_file, eid, settings, on_record=on_record,
                              progress=progress, secrets=secret_values(req.conf, dict(os.environ)),
                              results=req.previous)
    interrupted = start_failure = None
    outcome = "failed"  # how the run itself ends (MLflow's parent status): until it finishes, a crash
    old_handlers = _interrupts_raise()

    def usual_signals() -> None:  # a second Ctrl-C or SIGTERM ends the clean-up as usual
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)

    try:
        coordinator.run(req.plan.cases, worker, skip)
        outcome = "finished"
    except (Interrupted, KeyboardInterrupt) as e:
        usual_signals()
        interrupted = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        outcome = "interrupted"
        worker.kill("interrupted")  # the worker and everything it started (JVM, child processes)
        progress.message(f"\ninterrupted: finished cases are kept in {results_file}; continue with:\n  "
                         + mask_text(resume_command(args, run_id)))
    except WorkerStartFailed as e:
        start_failure = str(e)
    finally:
        usual_signals()
        worker.stop()
        if worker.spark_info:
            env["spark"] = worker.spark_info
        env["workers"] = worker.starts  # each worker process started, and why (never charged to a case)
        env["invocation"]["outcome"] = outcome
        record.write_json(env_file, env)
        if sink and outcome == "failed" and not start_failure:  # the harness itself broke: say so in MLflow
            sink.finish(record.read(results_file)[0] if results_file.exists() else [], [env_file], outcome, env)
    all_results = record.read(results_file)[0] if results_file.exists() else []
    all_results = record.dedupe_latest(all_results)
    report_path = None
    if not interrupted and not start_failure and not args.no_report:
        report_path = _try_report(run_dir, progress)
    if sink:
        arts = [results_file, env_file] + ([report_path, report_path.parent / "plots"] if report_path else [])
        sink.finish(all_results, arts, outcome, env)
    counts = run_summary(all_results)
    print(f"\nrun {run_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print(f"  results:  {results_file}")
    print(f"  env:      {env_file}")
    if sink is not None:
        if sink.failure:
            print(f"  mlflow:   NOT logged - {sink.failure}\n            fix, then: harness log {run_dir}")
        else:
            from .sinks.mlflow import EXPERIMENT

            print(f"  mlflow:   {sink.uri} (experiment {EXPERIMENT}, run {run_id})")
            if sink.ui_url:
                print(f"            {sink.ui_url}")
    if report_path:
        print(f"  report:   {report_path}")
    for r in all_results:
        if r.status in ("error", "timeout"):
            first = (r.error or {}).get("message", "").strip().splitlines()
            print(f"  {r.status.upper():8} {r.name} {r.params}: {first[0][:200] if first else ''}")
    if start_failure:
        return _error(start_failure)
    if interrupted:
        return EXIT_TERMINATED if interrupted == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_FAILED if any_failed(all_results) else EXIT_OK


def _try_report(run_dir: Path, progress) -> Path | None:
    try:
        from .report import try_report
    except ImportError:  # the report's own dependencies missing: the run's results stand
        return None
    return try_report(run_dir, progress.message)


def cmd_log(args) -> int:
    from . import record
    from .sinks.mlflow import MlflowSink, tracking_uri

    results_file = args.run_dir / record.RESULTS_FILE
    if not results_file.is_file():
        return _error(f"{args.run_dir} is not a run folder (no {record.RESULTS_FILE} in it)")
    results, bad = record.read(results_file)
    _warn_all(bad)
    if not results:
        return _error(_no_records(results_file, bad))
    env_file = args.run_dir / record.ENV_FILE
    env = {}
    if env_file.is_file():
        try:
            env = json.loads(env_file.read_text(encoding="utf-8"))
            if not isinstance(env, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            print(f"harness: warning: {env_file}: unreadable ({e}); logging without the machine fingerprint",
                  file=sys.stderr)
            env = {}
    results_root = args.run_dir.resolve().parent
    uri = tracking_uri(args.tracking_uri, results_root)
    sink = MlflowSink(uri, results_root)
    results = record.dedupe_latest(results)
    first_start = min((r.started_at for r in results if r.started_at), default=None)
    if not sink.start(results[0].run_id, env, (env.get("invocation") or {}).get("suite") or "", first_start):
        return _error(sink.failure or "MLflow unavailable")
    before = len(sink.logged)
    for r in results:
        sink.case(r)
    report = args.run_dir / "report.html"
    arts = [results_file, env_file] + ([report, args.run_dir / "plots"] if report.is_file() else [])
    # the same summary as `harness run` gives; a run folder from before `invocation` was stored counts as finished
    outcome = (env.get("invocation") or {}).get("outcome")
    outcome = outcome if outcome in ("interrupted", "failed") else "finished"
    sink.finish(results, [a for a in arts if a.exists()], outcome)
    if sink.failure:
        return _error(sink.failure)
    print(f"logged {len(sink.logged) - before} case(s) of run {results[0].run_id} to {sink.uri} "
          f"({before} were already there)" + (f"\n  {sink.ui_url}" if sink.ui_url else ""))
    return EXIT_OK


def cmd_report(args) -> int:
    from . import record
    from .commands import pick_run
    from .report import ReportError, build_report
    from .storage import UnusableInput

    if not args.run_dirs:
        try:
            args.run_dirs = [pick_run(None, args.results)]
        except UnusableInput as e:
            return _error(str(e))
    out = args.out or record.results_path(args.run_dirs[0]).parent / "report.html"
    folder = out if out.is_dir() else out.parent
    try:
        if folder.is_dir():  # found before any chart is drawn, and before old plots are cleared
            record.check_writable(folder, fix="pass --out FILE in a folder you can write")
        out = build_report(args.run_dirs, args.out)
    except (ReportError, record.StorageError) as e:
        return _error(str(e))
    print(f"report: {out}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from . import decide, render, storage

    problem = decide.settings_problem(args.threshold, args.alpha)
    if problem:
        return render.print_error(problem, args.json)
    try:
        base, cur = storage.resolve_pair(str(args.baseline), str(args.current), args.results)
    except storage.UnusableInput as e:
        return render.print_error(str(e), args.json)
    decision = decide.compare(base.results, cur.results, args.threshold, args.alpha)
    if not decision.cases:
        return render.print_error(
            f"no case is comparable between {base.results_file} and {cur.results_file} "
            f"({len(decision.only_baseline)} only in baseline, {len(decision.only_current)} only in current, "
            f"{len(decision.not_comparable)} not ok on both sides): run the same targets on both sides", args.json)
    fingerprint = storage.fingerprint_differences(base.env, cur.env)
    if args.json:
        print(json.dumps(render.to_json(decision, render.compare_context(base, cur, fingerprint)), indent=2,
                         default=str))
    else:
        print(render.text(decision, render.compare_preamble(base, cur, fingerprint)))
    return decision.exit_code


def cmd_baseline(args) -> int:
    if args.baseline_command != "save":
        return _error("usage: harness baseline save RUN_DIR")
    from .storage import UnusableInput, save_baseline

    try:
        path = save_baseline(args.run_dir, args.results)
    except UnusableInput as e:
        return _error(str(e))
    print(f"baseline saved: {path}")
    return EXIT_OK


def cmd_ab(args) -> int:
    from .commands import ab

    return ab.run(args)


def cmd_show(args) -> int:
    from .commands import show

    return show.run(args)


def cmd_export(args) -> int:
    from .commands import export

    return export.run(args)


COMMANDS = {"list": cmd_list, "run": cmd_run, "log": cmd_log, "report": cmd_report, "compare": cmd_compare,
            "baseline": cmd_baseline, "env": cmd_env, "show": cmd_show, "export": cmd_export, "ab": cmd_ab}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume command an interrupt prints
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from .record import StorageError

    if problem := spark_target_problem(args):
        if getattr(args, "json", False):
            from .render import print_error

            return print_error(problem, True)
        return _error(problem)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except StorageError as e:  # a results file or folder that cannot be read or written (full disk...)
        return _error(str(e))
    except OSError as e:  # any other file a command needed: named, exit 2, never a traceback
        return _error(f"{e.filename or 'a file'}: {e.strerror or e}; check that path's permissions and free space")


if __name__ == "__main__":
    sys.exit(main())
