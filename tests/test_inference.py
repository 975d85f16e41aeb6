"""The inference experiment with real models: trained, logged with MLflow's own flavours and registered in a real
SQLite store in the run folder, scored by every style on local Spark against the same model's own predictions,
and a real Structured Streaming query (rate source and Parquet files) stopped cleanly."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import free_port, run_case

ROWS = 3000  # scoring rows: the ~1,000 test rows of the co2 task, cycled
SMALL = dict(task="co2", model="linear", rows=ROWS, batch_size=256, max_records_per_batch=1000)
STREAM = dict(task="co2", model="linear", framework="torch", trigger_ms=500, warmup_s=4.0, duration_s=6.0,
              batch_size=256, max_records_per_batch=1000)


@pytest.fixture(scope="module")
def inference():
    from harness.experiments import inference as module
    from harness.registry import load_all

    load_all()
    return module


@pytest.fixture(scope="module")
def ictx(spark, tmp_path_factory):
    """One run context for the module, so each model is trained, logged and registered once; no tracking URI in
    the environment, so the models go to the run's own SQLite store."""
    from harness.context import RunContext

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        c = RunContext(run_id="test-inference", run_dir=tmp_path_factory.mktemp("inference-run"), master="local[2]",
                       cache_dir=Path(os.environ["HARNESS_TEST_CACHE"]))
        c._spark = spark
        yield c
        c.close()


def _run(ictx, style: str, **params):
    """Runs one case in-process; its record joins the run's results, as the coordinator shares it."""
    r = run_case(ictx, f"inference.{style}", timeout_s=600, **params)
    assert r.status == "ok", r.error
    ictx.results[r.identity] = r
    return r


def _matches(e: dict) -> None:
    assert e["max_abs_diff"] <= e["tolerance"]
    assert e["checksum"] == pytest.approx(e["checksum_reference"], abs=e["tolerance"] * ROWS)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_every_style_matches_the_local_limit(ictx, inference, framework):
    local = _run(ictx, "local_limit", framework=framework, **SMALL)
    _matches(local.extra)
    assert local.extra["rows"] == ROWS and local.extra["rows_per_s"] > 0
    uri = local.extra["model_uri"]
    for style in ("pyfunc_udf", "predict_batch_udf", "pandas_udf_iter"):
        r = _run(ictx, style, framework=framework, **SMALL)
        e = r.extra
        _matches(e)
        assert e["model_uri"] == uri  # every style scores the one registered version
        assert e["rows"] == ROWS and e["rows_per_s"] > 0 and e["slowdown_vs_local_limit"] > 0
        assert e["python_worker_peak_rss_mb"] > 0 and e["worker_threads"] == 1
        assert e["model_load_s"] >= 0  # pyfunc_udf: one load timed by a probe task; the others inside the UDF
        if style != "pyfunc_udf":
            assert e["speedup_vs_pyfunc_udf"] > 0
    # loads are counted inside the Python workers: once per task for the iterator UDF, once per worker for
    # predict_batch_udf (Spark caches the model there)
    it = ictx.find("inference", "pandas_udf_iter", {**SMALL, "framework": framework})
    assert it.extra["model_loads"] == it.extra["partitions"] == 4
    pb = ictx.find("inference", "predict_batch_udf", {**SMALL, "framework": framework})
    assert 1 <= pb.extra["model_loads"] == pb.extra["model_loading_processes"] <= pb.extra["partitions"]


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_models_are_logged_with_their_flavour_and_registered_in_the_run_folder(ictx, inference, framework):
    from mlflow import MlflowClient
    from mlflow.models import Model

    srv = inference.served(ictx, "co2", framework, "linear")
    assert srv.store["uri"] == f"sqlite:///{(ictx.work_dir / 'inference' / 'mlflow' / 'mlflow.db').resolve()}"
    name, version = srv.uri.split("/")[1:]
    mv = MlflowClient(srv.store["uri"]).get_model_version(name, version)
    assert mv.status == "READY" and mv.run_id == srv.info["mlflow_run_id"]
    flavours = Model.load(str(Path(srv.path) / "MLmodel")).flavors
    assert {"torch": "pytorch", "tensorflow": "tensorflow"}[framework] in flavours and "python_function" in flavours
    assert srv.info["model_test_r2"] > 0.9  # a real model, not noise
    assert Path(srv.path).resolve().is_relative_to(ictx.run_dir.resolve())


@pytest.mark.parametrize("task,model", [("co2", "linear"), ("tabular_cls", "mlp")])
def test_mllib_transform_matches_numpy_over_its_parameters(ictx, inference, task, model):
    """The no-Spark limit evaluates MLlib's fitted parameters in NumPy: the JVM's transform must agree (this
    checks the MLP's weight layout and activations, and the logistic model's raw scores)."""
    params = dict(SMALL, task=task, model=model, framework="mllib")
    local = _run(ictx, "local_limit", **params)
    r = _run(ictx, "mllib_transform", **{k: v for k, v in params.items()
                                        if k not in ("batch_size", "max_records_per_batch")})
    _matches(r.extra)
    assert r.extra["checksum_reference"] == local.extra["checksum_reference"]
    assert r.extra["output"] == ("double" if task == "co2" else "array<float>")
    assert r.extra["slowdown_vs_local_limit"] > 0 and r.extra["flavour"] == "mlflow.spark"


def test_a_wrong_prediction_fails_the_check(ictx, inference, spark):
    """The check is not a formality: predictions off by 0.01 from the model's own are an error."""
    from pyspark.sql import functions as F

    from harness.workload import CheckFailed

    srv = inference.served(ictx, "co2", "torch", "linear")
    df = inference.scoring_frame(ictx, srv, ROWS)
    right = inference.force(inference.fold(df.select(F.col("ref").alias("p"), "ref"), srv.kind))
    assert inference.check(right, srv, ROWS, "exact")["max_abs_diff"] == 0
    off = inference.force(inference.fold(df.select((F.col("ref") + 0.01).alias("p"), "ref"), srv.kind))
    with pytest.raises(CheckFailed, match="differs from the model's own"):
        inference.check(off, srv, ROWS, "off by 0.01")
    lost = dict(right, rows=ROWS - 1)
    with pytest.raises(CheckFailed, match="rows scored"):
        inference.check(lost, srv, ROWS, "a row lost")


def test_invalid_combinations_never_expand(inference):
    from harness.registry import load_all

    cases = load_all()["inference"].cases

    def n(case, **values):
        return len(cases[case].expand({k: v if isinstance(v, list) else [v] for k, v in values.items()}))

    assert n("pyfunc_udf", framework=["torch", "tensorflow", "mllib"]) == 2  # an MLlib pyfunc needs a JVM per worker
    assert n("mllib_transform", framework=["torch", "tensorflow", "mllib"]) == 1
    assert n("local_limit", framework="mllib", model="mlp", task="co2") == 0  # MLlib has no MLP regressor
    assert n("predict_batch_udf", model="cnn", task="co2") == 0 and n("predict_batch_udf", model="cnn", task="images")
    assert n("local_limit", rows=0) == 0 and n("streaming", input_rate=0) == 0


def test_streaming_rate_source_scores_every_row_and_stops_clean(ictx, inference, spark):
    r = _run(ictx, "streaming", source="rate", input_rate=200, **STREAM)
    e = r.extra
    assert r.metric == "latency_s" and r.better == "lower" and r.samples and all(s > 0 for s in r.samples)
    assert 0 < e["latency_p50_s"] <= e["latency_p95_s"] <= e["latency_p99_s"]
    assert e["sustained_rows_per_s"] > 0 and e["window_rows"] > 0 and isinstance(e["kept_up"], bool)
    assert e["max_abs_diff"] <= e["tolerance"] and e["rows_total"] >= e["window_rows"]
    assert e["max_sustained_input_rate"] in (None, 200) and (e["max_sustained_input_rate"] == 200) == e["kept_up"]
    assert e["streams_active_after"] == 0 and spark.streams.active == []
    streaming = ictx.work_dir / "inference" / "streaming"
    assert streaming.is_dir() and not any(streaming.iterdir())  # checkpoint folders went with the clean stop


def test_streaming_file_source(ictx, inference, spark):
    r = _run(ictx, "streaming", source="files", input_rate=300, **STREAM)
    e = r.extra
    assert e["files_written"] > 0 and 0 < e["rows_total"] <= e["rows_written"]
    assert e["max_abs_diff"] <= e["tolerance"] and e["latency_p50_s"] > 0
    assert spark.streams.active == []


def test_streaming_that_cannot_fit_its_timeout_is_refused(ictx, inference, spark):
    r = run_case(ictx, "inference.streaming", timeout_s=40, source="rate", input_rate=100,
                 **dict(STREAM, duration_s=60.0))
    assert r.status == "error" and "raise --timeout" in r.error["message"]
    assert spark.streams.active == []


def test_streaming_figures_tell_a_query_falling_behind(inference):
    """kept_up from the window's own figures. 1,000 rows/s offered and each 1 s trigger's rows processed in 0.2 s:
    kept up. The same rows taking the whole second of every trigger: busy all the time, yet still kept up (the
    batches do not grow). 2,000 rows/s offered of which 1,000 get through, later and later: fell behind."""
    B = inference.BatchFigures

    def run(busy_s, lag_growth=0.0):
        out, progress = [], []
        for i in range(10):
            start = 100.0 + i
            event = start - 0.5 - lag_growth * i
            out.append(B(i, start + busy_s, 1000, 0.0, 0.0, 0.0, i * 1000, i * 1000 + 999,
                         [(int(event * 100), 1000)]))
            progress.append({"timestamp": f"1970-01-01T00:01:{40 + i:02d}.000Z", "numInputRows": 1000,
                             "durationMs": {"triggerExecution": busy_s * 1000}, "inputRowsPerSecond": 1000.0,
                             "processedRowsPerSecond": 1000 / busy_s})
        return out, progress

    quick = inference.streaming_figures(*run(0.2), start=100.0, stop=110.0, input_rate=1000)
    assert quick["kept_up"] and quick["utilisation"] == pytest.approx(0.2)
    assert quick["latency_p50_s"] == pytest.approx(0.7, abs=0.01)  # 0.5 s of waiting + 0.2 s of processing
    busy = inference.streaming_figures(*run(1.0), start=100.0, stop=110.0, input_rate=1000)
    assert busy["kept_up"] and busy["utilisation"] == pytest.approx(1.0)
    behind = inference.streaming_figures(*run(1.0, lag_growth=0.5), start=100.0, stop=110.0, input_rate=2000)
    assert not behind["kept_up"] and behind["latency_trend"] > 1.5 and behind["sustained_rows_per_s"] < 1800


def test_report_draws_latency_against_input_rate_with_the_knee(tmp_path):
    from harness.record import Result
    from harness.report import draw, views

    def rec(rate, kept_up, p50):
        return Result(run_id="r", experiment="inference", case="streaming", params={"input_rate": rate, "task": "co2"},
                      metric="latency_s", unit="s", better="lower", env_id="e", samples=[p50], status="ok",
                      stats={"median": p50, "ci_low": p50, "ci_high": p50, "n": 1},
                      extra={"latency_p50_s": p50, "latency_p95_s": p50 * 1.5, "latency_p99_s": p50 * 2,
                             "sustained_rows_per_s": min(rate, 3000.0), "kept_up": kept_up, "utilisation": 0.5})

    charts = views.latency_vs_rate("inference", [rec(4000, False, 9.0), rec(1000, True, 0.8), rec(2000, True, 1.1)])
    assert len(charts) == 1
    chart = charts[0]
    assert chart.plot.knee == 2000 and chart.plot.rates == [1000.0, 2000.0, 4000.0]
    assert [row[0] for row in chart.table.rows] == ["1000", "2000", "4000"] and "knee: 2000" in chart.note
    png = draw.render(chart, tmp_path, 1)
    assert png.stat().st_size > 10_000


def test_model_store_takes_the_run_uri_and_never_a_dead_server(ictx, inference, tmp_path, monkeypatch):
    db = tmp_path / "run-store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    store = inference.model_store(ictx)
    assert store["uri"] == f"sqlite:///{db}" and store["artifacts"] == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    store = inference.model_store(ictx)
    assert store["uri"].startswith(f"sqlite:///{ictx.work_dir.resolve()}") and "unreachable" in store["note"]


def test_the_module_imports_no_heavy_library():
    """`harness list` imports every experiment module: this one must not pull Spark, MLflow or a framework."""
    out = subprocess.run([sys.executable, "-c", "import sys, harness.experiments.inference as m; "
                          "print(sorted(k for k in ('pyspark', 'mlflow', 'torch', 'tensorflow', 'pandas') "
                          "if k in sys.modules))"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
