"""Shared fixtures: one real local SparkSession for the in-process tests, a RunContext on it, a real MLflow
server. Plain helpers (the CLI runner, run_case, free_port) are in support.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, free_port


@pytest.fixture(scope="session")
def spark():
    from harness.spark import create_session

    session, _ = create_session("local[2]", {"spark.sql.shuffle.partitions": "4"}, app_name="harness-tests")
    yield session
    session.stop()


@pytest.fixture
def ctx(tmp_path, spark):
    """A RunContext sharing the test session's SparkSession; data cached per test session."""
    from harness.context import RunContext

    c = RunContext(run_id="test", run_dir=tmp_path / "run", master="local[2]",
                   cache_dir=Path(os.environ.get("HARNESS_TEST_CACHE", tmp_path / "cache")))
    c._spark = spark
    yield c
    c.close()  # its cached DataFrames leave the shared session


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory):
    """Generated data sets are shared by every test in a session (they are cached by their parameters)."""
    if "HARNESS_TEST_CACHE" not in os.environ:
        os.environ["HARNESS_TEST_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    os.environ.setdefault("HARNESS_CACHE", os.environ["HARNESS_TEST_CACHE"])
    yield


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free loopback port, stopped at the end of the session."""
    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow-server")
    env = {**os.environ, "MLFLOW_SERVER_DIR": str(folder), "VENV": str(Path(sys.executable).parent.parent)}
    script = ROOT / "scripts" / "mlflow-server.sh"
    started = subprocess.run(["bash", str(script), "start", str(port)], capture_output=True, text=True, env=env,
                             timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"http://127.0.0.1:{port}"
    subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="session")
def spark4_stack():
    """.venv-spark4, built by `make setup STACK=spark4` the first time a test needs it (later calls are instant:
    its stamp caches it by the stack's inputs)."""
    p = subprocess.run(["make", "-s", "setup", "STACK=spark4"], cwd=ROOT, capture_output=True, text=True,
                       timeout=3600)
    assert p.returncode == 0, f"make setup STACK=spark4 failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return ROOT / ".venv-spark4"
