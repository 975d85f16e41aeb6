"""The udf experiment: every style on small data against the native reference, the checksum check, the
workload/style pairs that must not expand, the Spark conf each case sets and restores."""
import sys

import pytest

from support import run_case

ROWS, GROUPS = 3000, 7  # small, and not a multiple of the group count


@pytest.fixture(scope="module")
def udf():
    from harness.experiments import udf as module
    from harness.registry import load_all

    load_all()
    return module


def _ok(result):
    assert result.status == "ok", result.error
    return result


@pytest.mark.parametrize("style,workload", [
    ("native", "plus_one"), ("row_udf", "plus_one"), ("arrow_udf", "plus_one"), ("pandas_udf", "plus_one"),
    ("pandas_udf_iter", "cdf"), ("map_in_pandas", "cdf"), ("apply_in_pandas", "plus_one"),
    ("pandas_agg", "subtract_mean"), ("row_udf", "subtract_mean"), ("arrow_udf", "subtract_mean"),
    ("apply_in_pandas", "subtract_mean"), ("map_in_arrow", "cdf"),
])
def test_style_matches_native(ctx, udf, style, workload):
    r = _ok(run_case(ctx, f"udf.{style}", workload=workload, rows=ROWS, groups=GROUPS))
    e = r.extra
    assert e["rows"] == ROWS and len(r.samples) == 1
    assert e["reference"] in ("native expression", "native case of this run")
    assert e["checksum"] == pytest.approx(e["checksum_reference"], rel=1e-9)
    assert e["checksum_rel_diff"] <= udf.REL_TOL
    assert e["arrow"] == ("off" if style in ("native", "row_udf") else "on")


def test_subtract_mean_checksum_is_not_trivial(ctx, udf):
    """Group-centred values sum to zero; the weights must keep a wrong centring from passing."""
    r = _ok(run_case(ctx, "udf.native", workload="subtract_mean", rows=ROWS, groups=GROUPS))
    assert abs(r.extra["checksum"]) > 1e-3 * r.extra["checksum_scale"]


def test_native_cdf_expression_is_exact(spark, udf):
    """Spark SQL has no erf: the Column expression must agree with scipy's normal CDF to double precision."""
    import numpy as np
    from pyspark.sql import functions as F
    from scipy.special import ndtr

    xs = np.concatenate([np.linspace(-40, 40, 4001), [0.0, 7.07106781186547, -7.07106781186547, 37.0, -37.5]])
    df = spark.createDataFrame([(float(x),) for x in xs], "x double")
    got = np.array([r[0] for r in df.select(udf.native_cdf(F.col("x"))).collect()])
    assert np.max(np.abs(got - ndtr(xs))) < 1e-14


@pytest.mark.parametrize("style,workload", [("row_udf", "image_size"), ("pandas_udf", "grayscale"),
                                            ("apply_in_pandas", "grayscale"), ("map_in_pandas", "image_size")])
def test_image_workloads(ctx, udf, style, workload):
    r = _ok(run_case(ctx, f"udf.{style}", workload=workload, rows=12, groups=3))
    assert r.extra["rows"] == 12
    assert r.extra["reference"] == "driver, PIL over the files"
    assert r.extra["checksum"] == pytest.approx(r.extra["checksum_reference"], rel=1e-12)


def _off_by_a_millionth(s):
    return s + 1.000001


def test_wrong_result_is_an_error_record(ctx, udf, monkeypatch):
    """A UDF that is slightly wrong must fail the checksum, through the real runner and real workers."""
    from pyspark import cloudpickle

    # workers cannot import this test module: ship the wrong kernel by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setitem(udf.VEC_KERNELS, "plus_one", _off_by_a_millionth)
    try:
        r = run_case(ctx, "udf.pandas_udf", workload="plus_one", rows=ROWS, groups=GROUPS)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert r.status == "error"
    assert r.error["type"] == "CheckFailed"
    assert "checksum" in r.error["message"] and "reference" in r.error["message"]
    assert len(r.samples) == 1  # it ran; the answer was wrong


def test_check_catches_lost_rows(udf):
    ref = {"rows": 10, "checksum": 5.0, "scale": 5.0, "source": "native expression"}
    from harness.workload import CheckFailed

    with pytest.raises(CheckFailed, match="9 output rows, expected 10"):
        udf.check({"rows": 9, "checksum": 5.0, "scale": 5.0}, ref, 10, "udf.x")
    assert udf.check({"rows": 10, "checksum": 5.0 + 1e-12, "scale": 5.0}, ref, 10, "udf.x") < udf.REL_TOL


def test_styles_that_cannot_express_a_workload_do_not_expand(udf):
    from harness.registry import load_all
    from harness.spec import plan

    from harness.spec import ConfigError

    reg = load_all()
    # a selection that expands to nothing is refused before anything runs, saying why
    for target, sets in ((["udf.pandas_agg"], ["workload=plus_one,cdf,image_size"]),
                         (["udf.native"], ["workload=image_size,grayscale", "rows=10"]),
                         *(([f"udf.{style}"], ["workload=subtract_mean"])
                           for style in ("pandas_udf", "pandas_udf_iter", "map_in_pandas", "map_in_arrow",
                                         "arrow_array_udf", "arrow_array_udf_iter"))):
        with pytest.raises(ConfigError):
            plan(target, sets, reg)
    cases = plan(["udf"], ["workload=subtract_mean", "rows=100"], reg).cases
    assert sorted(c.spec.name for c in cases) == ["apply_in_arrow", "apply_in_pandas", "arrow_array_agg", "arrow_udf",
                                                  "native", "pandas_agg", "row_udf"]
    every = plan(["udf"], ["workload=" + ",".join(udf.WORKLOADS), "rows=10"], reg).cases
    assert {(c.spec.name, c.params["workload"]) for c in every} == {
        (s, w) for s, ws in udf.STYLES.items() for w in ws}
    # references come first, so later styles find them in the run
    assert [c.spec.name for c in cases][:2] == ["native", "row_udf"]


def test_row_udf_turns_arrow_off_and_restores_conf(ctx, udf):
    spark = ctx.spark
    spark.conf.set(udf.PY_ARROW_KEY, "true")  # a session where plain @udf would use Arrow
    try:
        r = _ok(run_case(ctx, "udf.row_udf", workload="plus_one", rows=ROWS, groups=GROUPS))
        assert r.extra["python_udf_arrow_enabled"] == "false"
        assert spark.conf.get(udf.PY_ARROW_KEY) == "true"
    finally:
        spark.conf.unset(udf.PY_ARROW_KEY)


def test_max_records_per_batch_is_set_and_restored(ctx, udf):
    before = ctx.spark.conf.get(udf.BATCH_KEY)
    r = _ok(run_case(ctx, "udf.map_in_pandas", workload="plus_one", rows=ROWS, groups=GROUPS,
                     max_records_per_batch=256))
    assert r.extra["arrow_max_records_per_batch"] == 256
    assert r.params["max_records_per_batch"] == 256
    assert ctx.spark.conf.get(udf.BATCH_KEY) == before


def test_speedup_and_slowdown_against_references_of_the_run(ctx, udf, monkeypatch):
    """The references' records (run first, by the real runner) give speedup / slowdown of a later style."""
    from harness.coordinator import Coordinator, LocalWorker, Settings
    from harness.progress import Progress
    from harness.registry import load_all
    from harness.spec import plan

    reg = load_all()
    refs = plan(["udf.native", "udf.row_udf"], ["workload=plus_one", f"rows={ROWS}", f"groups={GROUPS}"], reg)
    Coordinator(ctx.run_id, ctx.run_dir / "results.jsonl", "test-env", Settings(1, 0, 600),
                progress=Progress(2, quiet=True)).run(refs.cases, LocalWorker(ctx))
    base = {"workload": "plus_one", "rows": ROWS, "groups": GROUPS}
    native, row = ctx.find("udf", "native", base), ctx.find("udf", "row_udf", base)
    assert native.status == row.status == "ok"

    params = {**base, "max_records_per_batch": 10_000}
    ctx.forget(lambda key: key[0] == "udf.reference")  # the references memoised one computed before their records
    wl = udf.build_case(ctx, "pandas_udf", params)
    try:
        out = wl.run()
        extra = wl.after(out, [0.25])
    finally:
        wl.teardown()
    assert extra["reference"] == "native case of this run"
    assert extra["rows_per_s"] == pytest.approx(ROWS / 0.25)
    assert extra["speedup_vs_row_udf"] == pytest.approx(row.stats["median"] / 0.25)
    assert extra["slowdown_vs_native"] == pytest.approx(0.25 / native.stats["median"])
    assert "speedup_vs_row_udf" not in wl.after(out)  # without samples there is nothing to compare


def test_too_many_generated_images_is_a_clear_error(ctx, udf):
    r = run_case(ctx, "udf.pandas_udf", workload="image_size", rows=udf.MAX_IMAGE_ROWS + 1, groups=GROUPS)
    assert r.status == "error"
    assert "--set rows=N" in r.error["message"]


def test_every_repeat_runs_the_udf_stage_again(ctx, udf):
    """Re-running one DataFrame would reuse its shuffle files and skip the UDF stage: each repeat must not."""
    sc = ctx.spark.sparkContext
    tracker = sc.statusTracker()
    wl = udf.build_case(ctx, "row_udf", {"workload": "plus_one", "rows": ROWS, "groups": GROUPS})
    tasks = []
    try:
        for i in range(2):
            group = f"udf-repeat-{i}"
            sc.setJobGroup(group, "repeat check")
            wl.run()
            stages = [tracker.getStageInfo(s) for j in tracker.getJobIdsForGroup(group)
                      for s in tracker.getJobInfo(j).stageIds]
            tasks.append(sum(s.numCompletedTasks for s in stages if s is not None))
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        wl.teardown()
    assert tasks[0] > 0 and tasks[1] == tasks[0]
