"""Spark's own figures per case, read from the event log the worker keeps in the run folder, and the Spark History
Server opening that log: one real `harness run` (local Spark) shared by the tests of this module."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from support import free_port, harness_cli
from harness import record

ROWS = 30_000


@pytest.fixture(scope="module")
def spark_run(tmp_path_factory):
    """small_files vs compacted (the issue's example), a Python UDF, a plain Spark job and a case without Spark."""
    root = tmp_path_factory.mktemp("spark-metrics")
    p = harness_cli("run", "ingestion.small_files", "ingestion.compacted", "udf.pandas_udf", "calibration.spark_noop",
                    "calibration.sleep", "--set", "n_files=120", "--set", "file_kb=4", "--set", "target_files=1",
                    "--set", "cold=first_read", "--set", "workload=plus_one", "--set", f"rows={ROWS}",
                    "--set", "ms=1", "--repeats", "2", "--warmup", "1", "--no-mlflow", "--no-report",
                    "--results", str(root), "--run-id", "m")
    assert p.returncode == 0, p.stdout + p.stderr
    results = {r.case: r for r in record.read(root / "m" / "results.jsonl")[0]}
    return root / "m", results


def test_every_spark_case_records_sparks_own_figures_per_timed_sample(spark_run):
    run_dir, results = spark_run
    assert "spark" not in results["sleep"].extra  # no Spark in that case, no Spark figures
    for case in ("small_files", "compacted", "pandas_udf", "spark_noop"):
        spark = results[case].extra["spark"]
        assert spark["scope"] == "median per timed sample" and "incomplete" not in spark, (case, spark)
        assert spark["jobs"] >= 1 and spark["stages"] >= 1 and spark["tasks"] >= 1
        assert spark["executor_run_time_s"] > 0 and spark["task_max_s"] >= spark["task_median_s"] > 0
        for key in ("executor_cpu_time_s", "jvm_gc_time_s", "input_bytes", "shuffle_read_bytes",
                    "shuffle_write_bytes", "memory_spill_bytes", "disk_spill_bytes", "task_skew"):
            assert key in spark, (case, key)
        # the two timed samples apart, the warm-up apart from them
        assert len(spark["per_sample"]["tasks"]) == 2 and spark["warmup"]["jobs"] >= 1
        assert "not reported by Spark 3.5" in spark["python_worker_time"]
        assert (run_dir / spark["event_log"]).is_file()  # completed (renamed from .inprogress) at the run's end

    noop = results["spark_noop"].extra
    assert noop["spark"]["per_sample"]["tasks"] == [noop["partitions"]] * 2  # one task per partition, per sample
    assert noop["spark"]["per_sample"]["input_records"] == [ROWS, ROWS]  # spark.range reports its rows as read

    udf = results["pandas_udf"].extra["spark"]
    assert udf["python_data_sent_bytes"] > 0 and udf["python_data_returned_bytes"] > 0

    small, compacted = results["small_files"].extra["spark"], results["compacted"].extra["spark"]
    assert small["input_records"] == compacted["input_records"] == 120  # every file read once per sample
    assert small["tasks"] > compacted["tasks"]  # why small files lose: many tasks for the same bytes


def test_the_history_server_opens_the_runs_event_log_on_loopback(spark_run, tmp_path):
    run_dir, results = spark_run
    app_id = Path(results["spark_noop"].extra["spark"]["event_log"]).name
    from pyspark.find_spark_home import _find_spark_home

    spark_home = _find_spark_home()
    port = free_port()
    conf = tmp_path / "history.properties"
    conf.write_text(f"spark.history.fs.logDirectory={(run_dir / 'spark-events').resolve().as_uri()}\n"
                    f"spark.history.ui.port={port}\n")
    # the README's command: the UI binds SPARK_LOCAL_IP, every interface without it
    server = subprocess.Popen([f"{spark_home}/bin/spark-class", "org.apache.spark.deploy.history.HistoryServer",
                               "--properties-file", str(conf)],
                              env={**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        listed, deadline = "", time.monotonic() + 120
        while app_id not in listed and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/applications", timeout=5) as r:
                    listed = r.read().decode()
            except OSError:
                time.sleep(1)
        assert app_id in listed, f"the History Server did not list {app_id}: {listed!r}"
        import psutil

        java = [server.pid] + [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
        listening = [c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN
                     and c.pid in java]
        assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), listening
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_report_shows_sparks_figures_beside_the_times(spark_run):
    from harness.report.views import SPARK_COLUMN, comparison

    _, results = spark_run
    table = comparison("ingestion", [results["small_files"], results["compacted"]])[0].table
    cells = {row[0]: row[table.columns.index(SPARK_COLUMN)] for row in table.rows}
    for case in ("small_files", "compacted"):
        spark = results[case].extra["spark"]
        assert cells[case].startswith(f"{spark['tasks']} · "), cells
    assert "event log" in table.caption
