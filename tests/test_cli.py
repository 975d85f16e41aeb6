"""The `harness` command driven as a user would: real runs, a real MLflow store, interrupt and resume, secrets."""
import json
import signal
import subprocess
import sys
import time

from conftest import ROOT, free_port, harness_cli

from harness import record


def test_help_imports_no_heavy_framework():
    code = ("import sys\nfrom harness.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pyspark', 'torch', 'tensorflow', 'mlflow', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert "usage: harness" in out and "HEAVY []" in out


def test_list_json_names_cases_and_axes():
    p = harness_cli("list", "--json")
    assert p.returncode == 0
    listing = {e["experiment"]: e for e in json.loads(p.stdout)}
    sleep = next(c for c in listing["calibration"]["cases"] if c["case"] == "sleep")
    assert sleep["axes"]["ms"] == {"default": [10], "type": "int"}


def test_bad_arguments_exit_2_listing_every_problem(tmp_path):
    p = harness_cli("run", "calibration.sleep", "nosuch", "--set", "ms=fast", "--set", "colour=red",
                    "--conf", "novalue", "--data", str(tmp_path / "missing"), "--results", str(tmp_path))
    assert p.returncode == 2
    for text in ("unknown experiment 'nosuch'", "takes int values, got 'fast'", "axis 'colour'",
                 "--conf 'novalue'", "no such file or folder"):
        assert text in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was run or written


def test_run_records_jsonl_and_mlflow_with_secrets_masked(tmp_path):
    secret_conf, secret_env = "S3CR3T-conf-value-91", "S3CR3T-env-value-27"
    p = harness_cli("run", "calibration.sleep", "calibration.spark_noop", "--set", "ms=20", "--set", "rows=1000",
                    "--repeats", "4", "--warmup", "1", "--results", str(tmp_path), "--run-id", "r1",
                    "--conf", f"spark.hadoop.fs.s3a.secret.key={secret_conf}", "--no-report",
                    env={"MY_SERVICE_TOKEN": secret_env, "SPARK_TEST_PASSWORD": secret_env})
    assert p.returncode == 0, p.stderr
    results, problems = record.read(tmp_path / "r1" / "results.jsonl")
    assert problems == [] and [r.name for r in results] == ["calibration.sleep", "calibration.spark_noop"]
    assert all(r.status == "ok" and len(r.samples) == 4 and len(r.warmup) == 1 for r in results)
    env = json.loads((tmp_path / "r1" / "env.json").read_text())
    assert env["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == "****"
    assert env["spark"]["conf"]["spark.driver.host"] == "127.0.0.1"
    assert results[0].env_id == env["env_id"]
    assert "mlflow:" in p.stdout and "results:" in p.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spark-ml-harness")
    parent = client.search_runs([exp.experiment_id], "tags.`harness.level` = 'parent'")[0]
    assert parent.data.tags["harness.run_id"] == "r1"
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_case = {c.data.tags["case"]: c for c in children}
    assert set(by_case) == {"sleep", "spark_noop"}
    sleep = by_case["sleep"]
    assert sleep.data.params == {"ms": "20"} and sleep.data.tags["status"] == "ok"
    assert len(client.get_metric_history(sleep.info.run_id, "wall_s")) == 4
    assert abs(sleep.data.metrics["wall_s_median"] - results[0].stats["median"]) < 1e-9
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.jsonl", "env.json"} <= artifacts

    # no secret value anywhere under the results folder: JSONL, env.json, MLflow's database and artifacts
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret_conf.encode() not in data and secret_env.encode() not in data, path


def test_timeout_is_recorded_and_exits_1(tmp_path):
    p = harness_cli("run", "calibration.sleep", "calibration.spin", "--set", "ms=3000", "--set", "iterations=1000",
                    "--timeout", "1", "--repeats", "1", "--warmup", "0", "--no-mlflow", "--no-report",
                    "--results", str(tmp_path), "--run-id", "t")
    assert p.returncode == 1
    statuses = {r.case: r.status for r in record.read(tmp_path / "t" / "results.jsonl")[0]}
    assert statuses == {"sleep": "timeout", "spin": "ok"}
    assert "TIMEOUT" in p.stdout


def test_interrupt_keeps_finished_cases_and_resume_completes(tmp_path):
    args = ["run", "calibration.sleep", "--set", "ms=150,151,152,153,154,155", "--repeats", "2", "--warmup", "0",
            "--no-mlflow", "--no-report", "--results", str(tmp_path), "--run-id", "int"]
    results_file = tmp_path / "int" / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results_file.exists() and results_file.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    kept = record.read(results_file)[0]
    assert 2 <= len(kept) < 6 and all(r.status == "ok" for r in kept)

    again = harness_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently appends to an old run

    resumed = harness_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = record.read(results_file)[0]
    assert len(final) == 6 and len({r.identity for r in final}) == 6
    assert [r.identity for r in final[:len(kept)]] == [r.identity for r in kept]


def test_unreachable_tracking_server_keeps_results_then_log_uploads(tmp_path, mlflow_server):
    dead = f"http://127.0.0.1:{free_port()}"
    p = harness_cli("run", "calibration.sleep", "--set", "ms=5", "--repeats", "3", "--tracking-uri", dead,
                    "--no-report", "--results", str(tmp_path), "--run-id", "offline")
    assert p.returncode == 0, p.stderr
    assert "unreachable" in p.stderr and "harness log" in p.stderr
    assert "NOT logged" in p.stdout
    assert len(record.read(tmp_path / "offline" / "results.jsonl")[0]) == 1

    bad = harness_cli("log", str(tmp_path / "offline"), "--tracking-uri", dead)
    assert bad.returncode == 2 and "unreachable" in bad.stderr

    for attempt in range(2):  # a second `log` adds nothing: logging is idempotent
        p = harness_cli("log", str(tmp_path / "offline"), "--tracking-uri", mlflow_server)
        assert p.returncode == 0, p.stderr
        assert f"logged {1 - attempt} case(s)" in p.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("spark-ml-harness")
    runs = client.search_runs([exp.experiment_id], "tags.`harness.run_id` = 'offline'")
    assert sorted(r.data.tags["harness.level"] for r in runs) == ["case", "parent"]


def test_run_logs_straight_to_a_real_server(tmp_path, mlflow_server):
    p = harness_cli("run", "calibration.spin", "--set", "iterations=5000", "--repeats", "3", "--no-report",
                    "--tracking-uri", mlflow_server, "--results", str(tmp_path), "--run-id", "online")
    assert p.returncode == 0, p.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("spark-ml-harness")
    case = client.search_runs([exp.experiment_id], "tags.`harness.run_id` = 'online' and tags.`case` = 'spin'")[0]
    assert len(client.get_metric_history(case.info.run_id, "wall_s")) == 3
    parent = client.get_run(case.data.tags["mlflow.parentRunId"])
    assert {"results.jsonl", "env.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_data_path_is_checked_before_anything_runs(tmp_path):
    empty = tmp_path / "empty"
    (empty / "001.cat").mkdir(parents=True)
    (empty / "001.cat" / "notes.txt").write_text("not an image")
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b\n")
    for path, text in ((empty, "holds no JPEG files"), (header_only, "at least one data row"),
                       (tmp_path / "x.parquet", "no such file")):
        p = harness_cli("run", "calibration.sleep", "--data", str(path), "--results", str(tmp_path / "r"))
        assert p.returncode == 2 and text in p.stderr and str(path) in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
