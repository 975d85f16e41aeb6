"""`harness ab TARGET...`: paired A/B comparison (see harness/ab.py for how samples are taken).

Exit 0: no regression; 1: a case regressed (or fails on B only); 2: unusable input; 130/143: interrupted (the
records taken so far are kept). Writes RESULTS/<run_id>/A/results.jsonl, B/results.jsonl, env.json and ab.json.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

from .. import record
from ..ab import AbError, Side, checkout, git_root, measure_pair, pair_plans, pin_to_cpu, remove_checkout

EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143


def _problems(args) -> tuple[list[str], dict[str, dict[str, str]]]:
    from .. import decide
    from ..cli import _parse_conf, _run_id_problem
    from ..spec import setting_problem

    problems, confs = [], {}
    for name in ("a", "b"):
        conf, bad = _parse_conf(args.conf + getattr(args, f"{name}_conf"))
        problems += bad
        confs[name] = conf
        python = getattr(args, f"{name}_python")
        if python and not (Path(python).is_file() and os.access(python, os.X_OK)):
            problems.append(f"--{name}-python {python}: no such executable; name a Python interpreter, "
                            "e.g. .venv-other/bin/python")
    for name in ("warmup", "timeout"):
        value = getattr(args, name)
        if value is not None and (need := setting_problem(name, value)):
            problems.append(f"--{name} {value}: takes {need}")
    if args.pairs is not None and (args.pairs < 3 or args.pairs > 100000):
        problems.append(f"--pairs {args.pairs}: takes a whole number from 3 (the signed-rank test needs pairs)")
    if args.max_pairs is not None and args.max_pairs < 0:
        problems.append(f"--max-pairs {args.max_pairs}: takes a whole number >= 0 (0: a fixed number of pairs)")
    if args.pin_cpu is not None and args.pin_cpu not in os.sched_getaffinity(0):
        problems.append(f"--pin-cpu {args.pin_cpu}: not a CPU this process may use "
                        f"(available: {sorted(os.sched_getaffinity(0))})")
    if bad := decide.settings_problem(args.threshold, args.alpha):
        problems.append(bad)
    if bad := _run_id_problem(args.run_id):
        problems.append(bad)
    return problems, confs


def run(args) -> int:
    from .. import decide, render
    from ..cli import _interrupts_raise, _new_run_id
    from ..coordinator import Interrupted, WorkerHandle, WorkerSettings, WorkerStartFailed, summary
    from ..env import env_id, fingerprint
    from ..progress import Progress
    from ..registry import load_all
    from ..spec import ConfigError, plan

    problems, confs = _problems(args)
    registry = load_all()
    sides = [Side("A", args.a_python or sys.executable, args.a_rev, conf=confs["a"], sets=args.a_set,
                  remote=args.a_remote),
             Side("B", args.b_python or sys.executable, args.b_rev, conf=confs["b"], sets=args.b_set,
                  remote=args.b_remote)]
    planned = True
    for side in sides:
        try:
            side.cases = plan(args.targets, _overridden(args.set, side.sets) + side.sets, registry).cases
        except ConfigError as e:
            problems += [f"side {side.name}: {p}" for p in e.problems]
            planned = False
    pairs_of_cases = []
    if planned:
        try:
            pairs_of_cases = pair_plans(*sides)
        except AbError as e:
            problems.append(str(e))
    if problems:
        if args.json:
            print(json.dumps({"error": problems, "exit_code": EXIT_USAGE}))
        print("harness: error: nothing was run; fix these first:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_USAGE
    if any(c.spec.spark for c, _ in pairs_of_cases):
        from ..spark import JavaMissing, check_java

        try:
            check_java()
        except JavaMissing as e:
            return render.print_error(str(e), args.json)

    n_pairs = args.pairs or decide.default_pairs(len(pairs_of_cases), args.alpha / 2)
    max_pairs = args.max_pairs if args.max_pairs is not None else 3 * n_pairs
    if max_pairs and max_pairs < n_pairs:
        return render.print_error(f"--max-pairs {max_pairs} is below --pairs {n_pairs}: give at least as many, "
                                  "or 0 for a fixed number of pairs", args.json)
    warmup = 1 if args.warmup is None else args.warmup
    timeout_s = args.timeout or 900.0
    run_id = args.run_id or "ab-" + _new_run_id()
    run_dir = args.results / run_id
    try:
        lock = record.claim_run_dir(run_dir)  # noqa: F841 - held until this process ends
    except (record.RunLocked, record.StorageError) as e:
        return render.print_error(str(e), args.json)
    if (run_dir / "A" / record.RESULTS_FILE).exists():
        return render.print_error(f"{run_dir} already holds an A/B run; pass another --run-id", args.json)

    repo = checkouts = None
    try:
        for side in sides:
            if side.rev:
                repo = repo or git_root(Path(__file__).resolve().parent.parent)
                checkouts = checkouts or Path(run_dir / "checkouts")
                checkouts.mkdir(parents=True, exist_ok=True)
                side.code_root = checkout(repo, side.rev, checkouts / side.name)
    except AbError as e:
        _cleanup(repo, checkouts)
        return render.print_error(str(e), args.json)

    env = fingerprint()
    env["env_id"] = eid = env_id(env)
    record.write_json(run_dir / record.ENV_FILE, env)
    for side in sides:
        side.worker = WorkerHandle(
            WorkerSettings(run_id, run_dir / side.name, side.remote or args.master, side.conf, args.data,
                           seed=args.seed, timeout_s=timeout_s),
            run_dir / side.name / "worker.log", python=side.python, code_root=side.code_root)
    progress = Progress(len(pairs_of_cases), stream=sys.stderr)
    progress.message(f"ab {run_id}: {len(pairs_of_cases)} case(s), {n_pairs} pairs each (up to {max(max_pairs, n_pairs)} "
                     f"where undecided) after {warmup} warm-up(s) per side; A = {_say(sides[0])}; "
                     f"B = {_say(sides[1])}")
    rng = random.Random(args.seed)
    interrupted = start_failure = None
    old = _interrupts_raise()
    try:
        for i, (a, b) in enumerate(pairs_of_cases, 1):
            progress.start_case(i, b.label)
            if args.pin_cpu is not None:
                for side in sides:
                    side.worker.ensure_started()
                    pin_to_cpu(side.worker, args.pin_cpu)
            ra, rb = measure_pair(a, b, tuple(sides), n_pairs, warmup, timeout_s, rng, run_id, eid, progress,
                                  max_pairs, args.threshold, args.alpha)
            for side, r in zip(sides, (ra, rb)):
                record.append(run_dir / side.name / record.RESULTS_FILE, r)
                side.records.append(r)
            progress.end_case(_pair_summary(ra, rb, summary))
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        for side in sides:
            side.worker.kill("interrupted")
        progress.message(f"\ninterrupted: the finished cases are kept in {run_dir}")
    except WorkerStartFailed as e:
        start_failure = str(e)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for side in sides:
            side.worker.stop()
            # each side's folder is a run folder of its own (report, log, compare): its env says what ran it
            record.write_json(run_dir / side.name / record.ENV_FILE,
                              {**env, "spark": side.worker.spark_info, "workers": side.worker.starts,
                               "ab_side": side.describe()})
        _cleanup(repo, checkouts)
    looks = 2 if max_pairs > n_pairs else 1
    decision = decide.paired([(ra, rb) for ra, rb in zip(sides[0].records, sides[1].records)],
                             args.threshold, args.alpha, looks=looks,
                             first_look={rb.identity: n_pairs for rb in sides[1].records})
    context = {"run_id": run_id, "run_dir": str(run_dir), "pairs": n_pairs, "max_pairs": max_pairs, "looks": looks,
               "warmup": warmup,
               "order": "random within each pair", "pinned_cpu": args.pin_cpu,
               "sides": [s.describe() for s in sides]}
    out = render.to_json(decision, context)
    record.write_json(run_dir / "ab.json", out)
    report = None
    if not args.no_report and decision.cases:  # the paired report (RUN_DIR/report.html)
        from ..report import try_report

        report = try_report(run_dir, lambda line: print(line, file=sys.stderr), quiet=True)
    if args.no_mlflow is False:
        _log_mlflow(args, run_dir, run_id, env, sides)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        extended = "" if looks == 1 else f", up to {max_pairs} where the first {n_pairs} could not decide"
        preamble = [f"A/B {run_id}: PAIRED, interleaved ({n_pairs} pairs per case{extended}; order random within "
                    "a pair)",
                    f"  A: {_say(sides[0])}", f"  B: {_say(sides[1])}", f"  records: {run_dir}"]
        preamble += [f"  report:  {report}", ""] if report else [""]
        print(render.text(decision, preamble))
    if start_failure:
        return render.print_error(start_failure, args.json)
    if interrupted:
        return EXIT_TERMINATED if interrupted == signal.SIGTERM else EXIT_INTERRUPTED
    return decision.exit_code


def _overridden(shared: list[str], own: list[str]) -> list[str]:
    """The --set items left once a side's own --X-set names the same axis (the side's value wins)."""
    mine = {item.partition("=")[0].strip() for item in own}
    return [item for item in shared if item.partition("=")[0].strip() not in mine]


def _say(side: Side) -> str:
    parts = [f"rev {side.rev}" if side.rev else "this checkout"]
    if side.python != sys.executable:
        parts.append(f"python {side.python}")
    parts += [f"--set {s}" for s in side.sets] + [f"--conf {k}=..." for k in sorted(side.conf)]
    if side.remote:
        parts.append(f"through Spark Connect at {side.remote}")
    return ", ".join(parts)


def _pair_summary(ra, rb, summary) -> str:
    if ra.status == rb.status == "ok" and ra.stats.get("median"):
        return f"A {summary(ra)} | B median {rb.stats['median']:.4g} ({rb.stats['median'] / ra.stats['median']:.3f}x)"
    return f"A {ra.status} | B {rb.status}"


def _cleanup(repo, checkouts) -> None:
    if repo and checkouts and checkouts.exists():
        for path in checkouts.iterdir():
            remove_checkout(repo, path)
        checkouts.rmdir()


def _log_mlflow(args, run_dir: Path, run_id: str, env: dict, sides) -> None:
    """Each side as its own MLflow run (`<run_id>-A`, `<run_id>-B`); a failure never costs the records."""
    from ..sinks.mlflow import MlflowSink, tracking_uri

    uri = tracking_uri(args.tracking_uri, args.results)
    for side in sides:
        sink = MlflowSink(uri, args.results)
        if not sink.start(f"{run_id}-{side.name}", env, f"harness ab side {side.name}: {_say(side)}"):
            print(f"harness: warning: {sink.failure}; the records are kept in {run_dir}", file=sys.stderr)
            return
        for r in side.records:
            sink.case(r)
        sink.finish(side.records, [run_dir / side.name / record.RESULTS_FILE, run_dir / "ab.json"])
