"""The report's answers: a winner is named only when its interval is clear of the runner-up's. Checked on records
whose intervals overlap and on records whose intervals are apart (5 samples each: the interval is min-max)."""
from __future__ import annotations

import pytest

from harness.record import Result
from harness.report import answers
from harness.report.answers import Entry, rank
from harness.stats import summarize

UDF_ROLES = {"reference": "row_udf", "limit": "native"}


def rec(exp: str, case: str, samples: list[float], params: dict | None = None, **kw) -> Result:
    return Result("t", exp, case, dict(params or {}), samples=samples, stats=summarize(samples), **kw)


def around(centre: float, spread: float = 0.02) -> list[float]:
    """Five samples within ±spread (relative) of centre: their min-max interval is centre ± spread."""
    return [centre * (1 + spread * f) for f in (-1, -0.5, 0, 0.5, 1)]


def test_rank_needs_a_clear_interval():
    apart = rank([Entry("a", 1.0, 0.9, 1.1), Entry("b", 2.0, 1.8, 2.2)], "lower")
    assert apart.clear and apart.best.label == "a" and [e.label for e in apart.tied] == ["a"]
    close = rank([Entry("a", 1.0, 0.9, 1.1), Entry("b", 1.05, 1.0, 1.2), Entry("c", 3, 2.9, 3.1)], "lower")
    assert not close.clear and [e.label for e in close.tied] == ["a", "b"]
    higher = rank([Entry("a", 1.0, 0.9, 1.1), Entry("b", 2.0, 1.8, 2.2)], "higher")
    assert higher.clear and higher.best.label == "b"


def udf_run(pandas_iter: float) -> list[Result]:
    p = {"workload": "plus_one", "rows": 1000}
    return [rec("udf", "native", around(0.3), p, extra={"roles": UDF_ROLES}),
            rec("udf", "row_udf", around(6.0), p, extra={"roles": UDF_ROLES}),
            rec("udf", "pandas_udf", around(2.0), p, extra={"roles": UDF_ROLES}),
            rec("udf", "pandas_udf_iter", around(pandas_iter), p, extra={"roles": UDF_ROLES})]


def test_udf_winner_only_when_clear():
    apart = answers.udf_styles(udf_run(1.5))  # 1.47-1.53 against 1.96-2.04: clear
    assert apart.verdict == "pandas_udf_iter wins by 1.33× over pandas_udf"
    line = apart.evidence[0]
    assert "pandas_udf_iter wins, 1.33× the runner-up pandas_udf" in line and "4.00× row_udf" in line
    # native SQL, the styles' limit, leads every UDF: 5× over the best, 20× over row_udf
    assert "native leads every UDF: 5.00× (over pandas_udf_iter) to 20.00× (over row_udf)" in line

    close = answers.udf_styles(udf_run(1.98))  # 1.94-2.02 overlaps 1.96-2.04
    assert close.verdict == "no clear difference between pandas_udf_iter, pandas_udf"
    assert "wins" not in " ".join(close.evidence)


def compaction_run(compacted: float) -> list[Result]:
    tree = {"n_files": 100, "file_kb": 10}
    return [rec("ingestion", "small_files", around(4.0), tree),
            rec("ingestion", "compact", around(6.0), {**tree, "target_files": 2}),
            rec("ingestion", "compacted", around(compacted), {**tree, "target_files": 2},
                extra={"roles": {"reference": "small_files", "limit": "pyarrow_limit"}})]


def test_compaction_pays_after_cost_over_saving():
    apart = answers.compaction(compaction_run(1.0))  # saves 3 s a read; compaction costs 6 s once
    assert apart.verdict == "Yes, after 2.0 reads"
    # the range the intervals allow: 5.88 / (4.08 - 0.98) to 6.12 / (3.92 - 1.02)
    assert f"({5.88 / 3.10:.1f}–{6.12 / 2.90:.1f} from the intervals)" in apart.evidence[0]

    close = answers.compaction(compaction_run(3.95))  # overlaps small_files' 3.92-4.08
    assert close.verdict == "No clear difference between reading the small files and the compacted Parquet"

    slower = answers.compaction(compaction_run(5.0))
    assert slower.verdict == "No: the compacted Parquet reads slower than the small files"


def training_run(torch_target: float, torch_r2: float) -> list[Result]:
    p = {"task": "co2", "model": "linear"}

    def extra(t, r2):
        return {"time_to_target_s": t, "test_r2": r2, "target_metric": "r2", "target": 0.95}

    return [rec("training", "mllib", around(1.0), p, extra=extra(1.0, 0.994)),
            rec("training", "torch", around(2.0), p, extra=extra(torch_target, torch_r2)),
            rec("training", "tensorflow", around(3.0), p, extra={**extra(None, 0.90)})]


def test_training_first_to_target_and_best_end():
    # torch reaches R^2 0.95 at 0.2 s of a 2 s training: interval scaled from the run's (0.196-0.204)
    apart = answers.training(training_run(0.2, 0.95))
    assert apart.verdict == "first to R² 0.95: torch, ends best: mllib"
    assert "never reached it: tensorflow" in apart.evidence[0]

    # 0.99 s of a 2 s run (0.970-1.010) overlaps mllib's 1.0 (0.98-1.02); R^2 within 0.005: no clear best
    close = answers.training(training_run(0.99, 0.992))
    assert close.verdict == "first to R² 0.95: no clear difference, ends best: no clear difference"


def scaling_run(two_workers: float) -> list[Result]:
    p = {"device": "cpu", "mode": "weak"}
    kw = dict(metric="samples_per_s", unit="samples/s", better="higher")
    return [rec("scaling", "horovod", around(100.0), {**p, "workers": 1}, **kw),
            rec("scaling", "horovod", around(two_workers), {**p, "workers": 2}, **kw)]


def test_scaling_change_only_when_clear():
    rises = answers.scaling(scaling_run(180.0))
    assert rises.verdict == "from 1 to 2 workers, throughput: rose clearly in 1 of 1; horovod: 1.80× (90% efficiency)"
    assert "1.80× the 1-worker throughput" in rises.evidence[0] and "90% efficiency" in rises.evidence[0]
    flat = answers.scaling(scaling_run(101.0))
    assert "throughput: no clear change in 1 of 1" in flat.verdict and "(intervals overlap)" in flat.evidence[0]


@pytest.mark.parametrize("question", [answers.compaction, answers.udf_styles, answers.training, answers.scaling])
def test_questions_the_run_cannot_answer_say_so(question):
    a = question([rec("calibration", "sleep", around(0.01), {"ms": 10})])
    assert not a.measured and a.verdict.startswith("not measured in this run: needs")
