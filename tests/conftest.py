"""Shared fixtures: one real local SparkSession for the in-process tests, a runner helper, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"  # the real CSVs shipped with the repository


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


def run_case(ctx, target: str, repeats: int = 1, warmup: int = 0, timeout_s: float = 600, **params):
    """Runs one case in-process through the coordinator and the worker's own request handling (LocalWorker,
    on this test's RunContext; no timeouts there) and returns its Result."""
    from harness.coordinator import Coordinator, LocalWorker, Settings
    from harness.registry import load_all
    from harness.spec import CaseRun

    exp, _, case = target.partition(".")
    spec = load_all()[exp].cases[case]
    full = {n: a.default[0] for n, a in spec.axes.items()}
    full.update(params)
    coordinator = Coordinator(ctx.run_id, ctx.run_dir / "results.jsonl", "test-env", Settings(repeats, warmup, timeout_s))
    return coordinator.run_case(CaseRun(spec, full), LocalWorker(ctx))


def harness_cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path | None = None,
                input: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m harness ARGS` the way a user would; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, input=input)


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory):
    """Generated data sets are shared by every test in a session (they are cached by their parameters)."""
    if "HARNESS_TEST_CACHE" not in os.environ:
        os.environ["HARNESS_TEST_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    os.environ.setdefault("HARNESS_CACHE", os.environ["HARNESS_TEST_CACHE"])
    yield


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
