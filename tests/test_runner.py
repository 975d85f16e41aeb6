"""The coordinator and the worker with real workloads (no Spark): warm-ups apart, the per-sample hook, failures
as records, child processes, run-scoped memos, code versions, and real worker processes driven sample by sample."""
import json
import random
import shutil
import time
from pathlib import Path

import psutil
import pytest
from support import ROOT, harness_cli

from harness import isolation, record
from harness.context import RunContext
from harness.coordinator import (Coordinator, LocalWorker, Settings, WorkerHandle, WorkerSettings,
                                 WorkerStartFailed)
from harness.registry import Experiment, code_version, load_all
from harness.spec import CaseRun
from harness.workload import CheckFailed, Measurement, SelfTimed, Unavailable, Workload

EXP = Experiment("t", "runner tests")
calls = []


@EXP.case("counted", {"n": [1]})
def counted(ctx, n):
    def run():
        calls.append(("run", n))
        return n * 2

    def after(out, samples, warmup):
        return {"last_out": out, "n": len(samples), "warmups_seen": len(warmup)}

    return Workload(run=run, before=lambda phase: calls.append(("before", phase)), after=after, extra={"static": 1})


@EXP.case("broken", {})
def broken(ctx):
    return Workload(run=lambda: 1 / 0)


@EXP.case("wrong", {})
def wrong(ctx):
    def after(out, samples, warmup):
        raise CheckFailed("row count 3 != 4")
    return Workload(run=lambda: 3, after=after)


@EXP.case("missing", {})
def missing(ctx):
    raise Unavailable("needs a GPU: CUDA is not available here")


@EXP.case("child", {"fail": [False]})
def child(ctx, fail):
    def measure(warmup, repeats, timeout_s):
        code = "import sys; print('child says hello'); sys.exit(3)" if fail else "print('fine')"
        isolation.run_command(["python3", "-c", code], timeout_s)
        return Measurement(samples=[0.1] * repeats, warmup=[0.2] * warmup, extra={"ranks": 2})
    return SelfTimed(measure=measure)


def _coordinator(tmp_path, repeats=3, warmup=2):
    return Coordinator("rt", tmp_path / "results.jsonl", "env1", Settings(repeats, warmup, 30))


def _local(tmp_path):
    return LocalWorker(RunContext(run_id="rt", run_dir=tmp_path))


def test_warmups_are_kept_apart_from_samples(tmp_path):
    calls.clear()
    r = _coordinator(tmp_path).run_case(CaseRun(EXP.cases["counted"], {"n": 4}), _local(tmp_path))
    assert r.status == "ok" and [c for c in calls if c[0] == "run"] == [("run", 4)] * 5
    assert len(r.warmup) == 2 and len(r.samples) == 3 and r.stats["n"] == 3
    assert r.extra == {"static": 1, "last_out": 8, "n": 3, "warmups_seen": 2}
    assert r.env_id == "env1" and r.started_at <= r.ended_at
    assert r.version == code_version(counted) and r.machine["cores"] >= 1 and "load_start" in r.machine


def test_before_runs_untimed_before_every_sample_including_warmups(tmp_path):
    calls.clear()
    _coordinator(tmp_path, repeats=3, warmup=2).run_case(CaseRun(EXP.cases["counted"], {"n": 1}), _local(tmp_path))
    assert calls == [("before", "warmup"), ("run", 1)] * 2 + [("before", "repeat"), ("run", 1)] * 3


def test_failures_become_records_and_the_run_goes_on(tmp_path):
    cases = [CaseRun(EXP.cases[n], {}) for n in ("broken", "wrong", "missing")]
    cases.append(CaseRun(EXP.cases["counted"], {"n": 1}))
    results = _coordinator(tmp_path, repeats=1, warmup=0).run(cases, _local(tmp_path))
    assert [r.status for r in results] == ["error", "error", "unavailable", "ok"]
    assert results[0].error["type"] == "ZeroDivisionError" and "1 / 0" in results[0].error["message"]
    assert results[1].error == {"type": "CheckFailed", "message": "row count 3 != 4"}
    assert "CUDA" in results[2].error["message"]
    assert [r.status for r in record.read(tmp_path / "results.jsonl")[0]] == [r.status for r in results]


def test_self_timed_cases_and_child_failure_output(tmp_path):
    coordinator, worker = _coordinator(tmp_path), _local(tmp_path)
    ok = coordinator.run_case(CaseRun(EXP.cases["child"], {"fail": False}), worker)
    assert ok.status == "ok" and ok.samples == [0.1] * 3 and ok.warmup == [0.2] * 2 and ok.extra == {"ranks": 2}
    bad = coordinator.run_case(CaseRun(EXP.cases["child"], {"fail": True}), worker)
    assert bad.status == "error" and "exited with 3" in bad.error["message"]
    assert "child says hello" in bad.error["message"]


def test_run_function_returns_values_and_kills_on_timeout():
    assert isolation.run_function("harness.experiments.calibration:spin_loop", {"iterations": 10}, 60) == \
        __import__("harness.experiments.calibration", fromlist=["x"]).spin_loop(10)
    with pytest.raises(Unavailable, match="on purpose"):
        isolation.run_function("tests_isolation_helpers:unavailable", {}, 60,
                               env={"PYTHONPATH": str(Path(__file__).parent)})
    t0 = time.monotonic()
    with pytest.raises(isolation.ChildTimeout):
        isolation.run_command(["sleep", "30"], timeout_s=0.5)
    assert time.monotonic() - t0 < 10


def test_settings_precedence_command_line_then_suite_entry_then_suite_defaults():
    spec = EXP.cases["broken"]
    entry = CaseRun(spec, {}, repeats=7, warmup=None, timeout=None)
    suite = {"repeats": 9, "warmup": 3}
    assert vars(Settings(suite=suite).for_case(entry)) == {"repeats": 7, "warmup": 3, "timeout_s": 900.0}
    assert vars(Settings(2, 0, 5.0, suite=suite).for_case(entry)) == {"repeats": 2, "warmup": 0, "timeout_s": 5.0}
    assert vars(Settings().for_case(CaseRun(spec, {}))) == {"repeats": 5, "warmup": 1, "timeout_s": 900.0}


def test_memos_are_made_once_and_released_with_the_context(tmp_path):
    ctx, made, released = RunContext(run_id="m", run_dir=tmp_path), [], []

    def factory(name):
        made.append(name)
        return name.upper()

    for _ in range(2):
        assert ctx.memo(("t.data", "a"), lambda: factory("a"), release=released.append) == "A"
    ctx.memo(("t.data", "b"), lambda: factory("b"), release=released.append)
    ctx.forget(lambda k: k == ("t.data", "a"))
    assert made == ["a", "b"] and released == ["A"]
    ctx.close()
    assert released == ["A", "B"] and ctx.memo(("t.data", "a"), lambda: factory("a")) == "A" and made[-1] == "a"


def test_code_version_follows_the_builder_and_its_helpers():
    reg = load_all()
    styles = {code_version(c.build) for c in reg["udf"].cases.values()}
    assert len(styles) == len(reg["udf"].cases)  # one builder closure, a version per style
    assert code_version(counted) == code_version(counted) and len(code_version(counted)) == 12
    exp = Experiment("v", "versions")
    exp.case("pinned", version="2")(lambda ctx: None)
    assert code_version(exp.cases["pinned"].build) == "2"


def test_resume_reruns_a_case_whose_code_version_changed(tmp_path):
    args = ["run", "calibration.sleep", "--set", "ms=1,2", "--repeats", "1", "--warmup", "0", "--no-mlflow",
            "--no-report", "--results", str(tmp_path), "--run-id", "v"]
    assert harness_cli(*args).returncode == 0
    results_file = tmp_path / "v" / "results.jsonl"
    current = code_version(load_all()["calibration"].cases["sleep"].build)
    lines = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert [d["version"] for d in lines] == [current, current]
    lines[0]["version"] = "an-older-one"  # as if ms=1 had been recorded by other code
    results_file.write_text("".join(json.dumps(d) + "\n" for d in lines))

    resumed = harness_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"rerunning calibration.sleep ms=1: its code changed" in resumed.stderr
    assert f"an-older-one -> {current}" in resumed.stderr
    final = record.read(results_file)[0]
    assert [(r.params["ms"], r.version) for r in final] == [(1, "an-older-one"), (2, current), (1, current)]


# ---- real worker processes ----

def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_two_workers_driven_sample_by_sample(tmp_path):
    """What `harness ab` needs: two worker processes, each warmed up, then pairs of single samples in random order."""
    spec = load_all()["calibration"].cases["spin"]
    sides = {name: WorkerHandle(WorkerSettings(f"ab-{name}", tmp_path), tmp_path / f"worker-{name}.log")
             for name in ("a", "b")}
    iterations = {"a": 2000, "b": 20000}
    taken = {"a": [], "b": []}
    try:
        for name, w in sides.items():
            w.ensure_started()
            built = w.build(CaseRun(spec, {"iterations": iterations[name]}), time.monotonic() + 60)
            assert built["version"] == code_version(spec.build) and built["kind"] == "Workload"
            assert [p for p, _, _ in w.samples(2, 0, time.monotonic() + 60)] == ["warmup", "warmup"]
        for _ in range(8):
            for name in random.sample(["a", "b"], 2):
                taken[name] += [v for _, _, v in sides[name].samples(0, 1, time.monotonic() + 60)]
        extras = {name: w.finish(time.monotonic() + 60) for name, w in sides.items()}
        pids = [w.pid for w in sides.values()]
    finally:
        for w in sides.values():
            w.stop()
    assert extras == {"a": {"iterations": 2000}, "b": {"iterations": 20000}}
    assert len(taken["a"]) == len(taken["b"]) == 8
    assert sorted(taken["a"])[4] < sorted(taken["b"])[4]  # 10x the work takes longer
    assert len(set(pids)) == 2 and all(_gone(pid) for pid in pids)
    assert all((tmp_path / f"worker-{n}.log").is_file() for n in "ab")


def test_a_worker_speaking_another_protocol_version_is_refused(tmp_path):
    other = tmp_path / "checkout"
    shutil.copytree(ROOT / "harness", other / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    proto = other / "harness" / "protocol.py"
    proto.write_text(proto.read_text().replace("\nVERSION = 1\n", "\nVERSION = 999\n"))
    w = WorkerHandle(WorkerSettings("old", tmp_path), tmp_path / "worker.log", code_root=other)
    with pytest.raises(WorkerStartFailed) as e:
        w.ensure_started()
    assert "protocol" in str(e.value) and "999" in str(e.value) and str(other) in str(e.value)
    assert w.proc is None
