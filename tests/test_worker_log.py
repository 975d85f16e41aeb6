"""What the worker's log hides reaches the terminal, and what it must not hold (secret values) never reaches it.

The cases here belong to the test: they run in a copy of the harness package with one experiment added
(`leaky`), through the real CLI, coordinator and worker process, on local Spark.
"""
from __future__ import annotations

import shutil

from support import ROOT, harness_cli
from harness import record

SECRET_CONF, SECRET_ENV, SECRET_JVM = "Xq7-conf-secret-5521", "Xq7-env-secret-9043", "Xq7-jvm-secret-1178"

LEAKY = '''"""Test-only cases: one prints secret values every way a case or its children can, then fails; one reports
a server listening beyond loopback."""
import os
import subprocess
import sys

from ..registry import experiment
from ..workload import Workload

EXP = experiment("leaky", "cases that print secrets and warnings (tests only)")


@EXP.case("prints", {"n": [1]}, spark=True)
def prints(ctx, n):
    secret = ctx.conf["spark.hadoop.fs.s3a.secret.key"]
    print(secret)
    print("env says", os.environ["MY_SERVICE_TOKEN"], file=sys.stderr, flush=True)
    subprocess.run(["sh", "-c", f"echo child process prints {secret}"], check=True)
    sys.stdout.write(f"no newline at the end {secret}")
    sys.stdout.flush()
    raise RuntimeError(f"could not connect with key {secret}")


@EXP.case("exposed", {"n": [1]})
def exposed(ctx, n):
    return Workload(run=lambda: None, extra={"network": "host",
                                             "listens_beyond_loopback": "a test server listens on 0.0.0.0:4242"})
'''


def test_worker_log_masks_secrets_and_the_terminal_shows_the_workers_warnings(tmp_path):
    code = tmp_path / "code"
    shutil.copytree(ROOT / "harness", code / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    (code / "harness" / "experiments" / "leaky.py").write_text(LEAKY)
    p = harness_cli("run", "leaky.prints", "leaky.exposed", "--repeats", "1", "--warmup", "0", "--no-mlflow",
                    "--no-report", "--results", str(tmp_path / "results"), "--run-id", "leak",
                    "--conf", f"spark.hadoop.fs.s3a.secret.key={SECRET_CONF}",
                    "--conf", f"spark.driver.extraJavaOptions=-Dfs.s3a.secret.key={SECRET_JVM}",
                    env={"MY_SERVICE_TOKEN": SECRET_ENV}, cwd=code)
    assert p.returncode == 1, p.stdout + p.stderr  # the failing case

    run_dir = tmp_path / "results" / "leak"
    log = (run_dir / "worker.log").read_text()
    assert "Setting default log level" in log  # the JVM's own output goes through the same pipe
    assert log.count("****") >= 4 and "child process prints ****" in log and "no newline at the end ****" in log
    results = {r.case: r for r in record.read(run_dir / "results.jsonl")[0]}
    error = results["prints"].error["message"]
    assert results["prints"].status == "error" and "could not connect with key ****" in error
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in (SECRET_CONF, SECRET_ENV, SECRET_JVM)), path
    for text in (p.stdout, p.stderr):
        assert not any(s in text for s in (SECRET_CONF, SECRET_ENV, SECRET_JVM))

    # printed on the terminal, not only into the worker's log: a secret on java's command line (masked) ...
    assert "spark.driver.extraJavaOptions holds a secret (-Dfs.s3a.secret.key=****)" in p.stderr
    # ... and a case whose server listens beyond loopback
    assert "harness: warning: leaky.exposed: a test server listens on 0.0.0.0:4242" in p.stderr
