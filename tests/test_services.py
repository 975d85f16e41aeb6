"""Real distributed components: a Spark standalone cluster on loopback, and horovodrun with Gloo."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, free_port, harness_cli

from harness import record
from harness.distributed import loopback

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """scripts/spark-cluster.sh: a master and two workers on 127.0.0.1, stopped afterwards."""
    port = free_port()
    env = {**os.environ, "SPARK_MASTER_PORT": str(port), "PYTHON": sys.executable,
           "SPARK_CLUSTER_DIR": str(tmp_path_factory.mktemp("cluster"))}
    script = ROOT / "scripts" / "spark-cluster.sh"
    p = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, timeout=180)
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        yield f"spark://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True, env=env, timeout=60)


def test_spark_noop_runs_on_the_standalone_cluster(tmp_path, standalone_cluster):
    p = harness_cli("run", "calibration.spark_noop", "--set", "rows=200000", "--repeats", "2",
                    "--master", standalone_cluster, "--no-mlflow", "--no-report",
                    "--results", str(tmp_path), "--run-id", "cluster")
    assert p.returncode == 0, p.stdout + p.stderr
    [r] = record.read(tmp_path / "cluster" / "results.jsonl")[0]
    assert r.status == "ok" and r.stats["n"] == 2 and r.extra["rows"] == 200000
    spark = json.loads((tmp_path / "cluster" / "env.json").read_text())["spark"]
    assert spark["master"] == standalone_cluster
    assert spark["default_parallelism"] == 2  # two workers of one core each


ALLREDUCE = """
import horovod.torch as hvd
import torch
hvd.init()
total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum)
print(f"rank {hvd.rank()} of {hvd.size()}: sum {total.item()}", flush=True)
"""


def test_horovodrun_gloo_allreduce_two_ranks(tmp_path):
    horovodrun = Path(sys.executable).parent / "horovodrun"
    assert horovodrun.exists(), "horovod is part of the built environment (scripts/build-horovod.sh)"
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE)
    cmd = [str(horovodrun), "-np", "2", "--gloo", "--network-interface", "lo", sys.executable, str(script)]
    with loopback.namespace("horovodrun") as (ns, _):  # its rendezvous server binds every interface
        p = subprocess.run(ns.wrap(cmd) if ns else cmd, capture_output=True, text=True, timeout=180,
                           env={**os.environ, "HOROVOD_GLOO_IFACE": "lo"})
    assert p.returncode == 0, p.stdout + p.stderr
    lines = sorted(line.split("]<stdout>:")[-1].strip() for line in p.stdout.splitlines() if "sum" in line)
    assert lines == ["rank 0 of 2: sum 3.0", "rank 1 of 2: sum 3.0"], p.stdout


def test_setup_reports_missing_java(tmp_path):
    # a PATH without java: the check must stop with the fix, not a stack trace
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "sed", "head", "cat"):
        os.symlink(shutil.which(tool), bindir / tool)
    p = subprocess.run(["bash", str(ROOT / "scripts" / "check-java.sh")], capture_output=True, text=True,
                       env={"PATH": str(bindir)})
    assert p.returncode == 2 and "Java 17 is required" in p.stderr and "install" in p.stderr
    q = harness_cli("run", "calibration.spark_noop", "--no-mlflow", "--results", str(tmp_path / "r"),
                    env={"PATH": str(bindir), "JAVA_HOME": ""})
    assert q.returncode == 2 and "Java" in q.stderr
