"""The runner with real workloads (no Spark): warm-ups apart, failures and timeouts as records, child processes."""
import time

import pytest

from harness import isolation
from harness.context import RunContext
from harness.progress import Progress
from harness.registry import Experiment
from harness.runner import Runner, Settings
from harness.spec import CaseRun
from harness.workload import CheckFailed, Measurement, SelfTimed, Unavailable, Workload

EXP = Experiment("t", "runner tests")
calls = []


@EXP.case("counted", {"n": [1]})
def counted(ctx, n):
    def run():
        calls.append(n)
        return n * 2
    return Workload(run=run, after=lambda out, samples: {"last_out": out, "n": len(samples)}, extra={"static": 1})


@EXP.case("broken", {})
def broken(ctx):
    return Workload(run=lambda: 1 / 0)


@EXP.case("wrong", {})
def wrong(ctx):
    def after(out, samples):
        raise CheckFailed("row count 3 != 4")
    return Workload(run=lambda: 3, after=after)


@EXP.case("missing", {})
def missing(ctx):
    raise Unavailable("needs a GPU: CUDA is not available here")


@EXP.case("slow", {})
def slow(ctx):
    return Workload(run=lambda: time.sleep(0.4))


@EXP.case("child", {"fail": [False]})
def child(ctx, fail):
    def measure(warmup, repeats, timeout_s):
        code = "import sys; print('child says hello'); sys.exit(3)" if fail else "print('fine')"
        isolation.run_command(["python3", "-c", code], timeout_s)
        return Measurement(samples=[0.1] * repeats, warmup=[0.2] * warmup, extra={"ranks": 2})
    return SelfTimed(measure=measure)


def _runner(tmp_path, repeats=3, warmup=2, timeout=30.0):
    ctx = RunContext(run_id="rt", run_dir=tmp_path)
    return Runner(ctx, tmp_path / "results.jsonl", "env1", Settings(repeats, warmup, timeout),
                  progress=Progress(1, quiet=True))


def test_warmups_are_kept_apart_from_samples(tmp_path):
    calls.clear()
    r = _runner(tmp_path).run_case(CaseRun(EXP.cases["counted"], {"n": 4}))
    assert r.status == "ok" and len(calls) == 5
    assert len(r.warmup) == 2 and len(r.samples) == 3 and r.stats["n"] == 3
    assert r.extra == {"static": 1, "last_out": 8, "n": 3}
    assert r.env_id == "env1" and r.started_at <= r.ended_at


def test_failures_become_records_and_the_run_goes_on(tmp_path):
    runner = _runner(tmp_path, repeats=1, warmup=0, timeout=0.3)
    cases = [CaseRun(EXP.cases[n], {}) for n in ("broken", "wrong", "missing", "slow")]
    cases.append(CaseRun(EXP.cases["counted"], {"n": 1}))
    results = runner.run(cases)
    assert [r.status for r in results] == ["error", "error", "unavailable", "timeout", "ok"]
    assert results[0].error["type"] == "ZeroDivisionError" and "1 / 0" in results[0].error["message"]
    assert results[1].error == {"type": "CheckFailed", "message": "row count 3 != 4"}
    assert "CUDA" in results[2].error["message"]
    assert "0 s timeout" in results[3].error["message"]
    from harness import record
    assert [r.status for r in record.read(tmp_path / "results.jsonl")[0]] == [r.status for r in results]


def test_self_timed_cases_and_child_failure_output(tmp_path):
    runner = _runner(tmp_path)
    ok = runner.run_case(CaseRun(EXP.cases["child"], {"fail": False}))
    assert ok.status == "ok" and ok.samples == [0.1] * 3 and ok.warmup == [0.2] * 2 and ok.extra == {"ranks": 2}
    bad = runner.run_case(CaseRun(EXP.cases["child"], {"fail": True}))
    assert bad.status == "error" and "exited with 3" in bad.error["message"]
    assert "child says hello" in bad.error["message"]


def test_run_function_returns_values_and_kills_on_timeout():
    assert isolation.run_function("harness.experiments.calibration:spin_loop", {"iterations": 10}, 60) == \
        __import__("harness.experiments.calibration", fromlist=["x"]).spin_loop(10)
    with pytest.raises(Unavailable, match="on purpose"):
        isolation.run_function("tests_isolation_helpers:unavailable", {}, 60,
                               env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)})
    t0 = time.monotonic()
    with pytest.raises(isolation.ChildTimeout):
        isolation.run_command(["sleep", "30"], timeout_s=0.5)
    assert time.monotonic() - t0 < 10
