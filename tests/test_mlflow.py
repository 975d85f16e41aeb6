"""MLflow as its users read it, on a real tracking server: runs listed as model-training runs, the median as the
headline metric, case runs lasting as long as their cases, readable unique names, machine and version tags, a
parent that summarises the run and stays FINISHED when a case fails; `harness log` gives the same shape. The UI
itself is checked in headless Chromium (screenshots saved in the test's folder)."""
from __future__ import annotations

import shutil
import subprocess
from datetime import datetime

import pytest

from support import harness_cli
from harness import record

SUITE = """description = "MLflow shape check"
[[run]]
target = "calibration.sleep"
set = { ms = 5 }
repeats = 3
[[run]]
target = "calibration.spark_noop"
set = { rows = 1000 }
repeats = 3
[[run]]
target = "calibration.sleep"
set = { ms = 4000 }
repeats = 1
warmup = 0
timeout = 1
"""
NAMES = {"calibration.sleep ms=5", "calibration.spark_noop rows=1000", "calibration.sleep ms=4000"}


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _runs(uri: str, experiment: str):
    # a client of its own: mlflow.set_tracking_uri would also set MLFLOW_TRACKING_URI for every later test's runs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("harness.level") == "parent")
    return parent, {r.info.run_name: r for r in runs if r is not parent}


def _shape(run) -> dict:
    """What a user sees of a run, less what differs between two uploads of it (run ids, upload times)."""
    tags = {k: v for k, v in run.data.tags.items() if k not in ("mlflow.parentRunId", "mlflow.runName", "mlflow.user")}
    return {"name": run.info.run_name, "status": run.info.status, "start": run.info.start_time,
            "end": run.info.end_time, "params": run.data.params, "metrics": run.data.metrics, "tags": tags}


@pytest.fixture(scope="module")
def logged(tmp_path_factory, mlflow_server):
    root = tmp_path_factory.mktemp("mlflow-shape")
    suite = root / "shape.toml"
    suite.write_text(SUITE)
    p = harness_cli("run", str(suite), "--tracking-uri", mlflow_server, "--no-report", "--results", str(root),
                    "--run-id", "shape", env={"HARNESS_MLFLOW_EXPERIMENT": "shape-live"})
    assert p.returncode == 1, p.stdout + p.stderr  # the 4 s sleep past its 1 s timeout
    assert "workflowType=machine_learning" in p.stdout  # the link that opens the runs view
    assert "View run" not in p.stdout  # MLflow's own per-run lines stay out of the terminal
    return root / "shape", mlflow_server


def test_runs_are_listed_with_the_median_as_headline_and_their_real_times(logged):
    run_dir, uri = logged
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name("shape-live")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not a GenAI (traces) experiment
    parent, cases = _runs(uri, "shape-live")
    results = {r.identity: r for r in record.read(run_dir / "results.jsonl")[0]}
    assert set(cases) == NAMES

    for name, run in cases.items():
        r = results[run.data.tags["harness.identity"]]
        assert (run.info.start_time, run.info.end_time) == (_ms(r.started_at), _ms(r.ended_at))
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for tag in ("spark.version", "machine.cpu", "machine.cores", "env_id", "code.version"):
            assert run.data.tags[tag] not in ("", "None"), (name, tag)
        if r.status == "ok":
            assert run.info.status == "FINISHED"
            assert run.data.metrics["wall_s"] == pytest.approx(r.stats["median"])  # the headline is the median
            history = MlflowClient(uri).get_metric_history(run.info.run_id, "wall_s_sample")
            assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(r.samples)
        else:
            assert run.info.status == "FAILED" and run.data.tags["status"] == "timeout"
    noop = cases["calibration.spark_noop rows=1000"]
    assert noop.data.tags["spark.master"].startswith("local") and noop.data.metrics["spark_tasks"] >= 1

    # the parent: named after the run, summarising it, FINISHED although a case timed out
    assert parent.info.run_name == "shape" and parent.info.status == "FINISHED"
    assert parent.data.tags["harness.status"] == "1 of 3 case(s) failed"
    assert parent.data.params["suite"] == "MLflow shape check" and parent.data.params["master"].startswith("local")
    m = parent.data.metrics
    assert (m["cases_ok"], m["cases_timeout"], m["cases_error"]) == (2, 1, 0)
    assert m["total_wall_s"] == pytest.approx(sum((_ms(r.ended_at) - _ms(r.started_at)) / 1000
                                                  for r in results.values()))


def test_harness_log_gives_the_same_shape(logged):
    run_dir, uri = logged
    for attempt in range(2):  # idempotent: the second upload adds nothing
        p = harness_cli("log", str(run_dir), "--tracking-uri", uri, env={"HARNESS_MLFLOW_EXPERIMENT": "shape-log"})
        assert p.returncode == 0, p.stderr
        assert f"logged {3 if attempt == 0 else 0} case(s)" in p.stdout
    live_parent, live = _runs(uri, "shape-live")
    log_parent, logged_runs = _runs(uri, "shape-log")
    assert {n: _shape(r) for n, r in logged_runs.items()} == {n: _shape(r) for n, r in live.items()}
    a, b = _shape(live_parent), _shape(log_parent)
    assert (a["name"], a["status"], a["end"], a["params"], a["metrics"], a["tags"]) == \
        (b["name"], b["status"], b["end"], b["params"], b["metrics"], b["tags"])


def _chromium(url: str, *flags: str, height: int = 1000) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                           f"--window-size=1600,{height}", "--virtual-time-budget=15000", *flags, url],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_mlflow_ui_shows_model_training_runs_with_the_median(logged, tmp_path):
    run_dir, uri = logged
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name("shape-live")
    _, cases = _runs(uri, "shape-live")
    noop = cases["calibration.spark_noop rows=1000"]
    # the link `harness run` prints: MLflow 3.17's UI picks its view from this parameter (or the browser's last
    # choice), not from the experiment's tag
    page = f"{uri}/#/experiments/{exp.experiment_id}?workflowType=machine_learning"
    run_page = f"{uri}/#/experiments/{exp.experiment_id}/runs/{noop.info.run_id}?workflowType=machine_learning"
    for name, url, height in (("experiment.png", page, 1000), ("case-run.png", run_page, 1900)):
        shot = _chromium(url, f"--screenshot={tmp_path / name}", height=height)  # tall enough for the metrics
        assert (tmp_path / name).stat().st_size > 20_000, shot.stderr[-2000:]
    print(f"screenshots: {tmp_path}")

    listing = _chromium(page, "--dump-dom").stdout
    assert "Runs" in listing and ">shape<" in listing and "Detect Issues" not in listing  # runs, not traces
    run_text = _chromium(run_page, "--dump-dom").stdout
    median = f"{noop.data.metrics['wall_s']}"
    assert "calibration.spark_noop rows=1000" in run_text and median[:8] in run_text, median
