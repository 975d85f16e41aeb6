"""Spark Connect: a real Connect server started by scripts/spark-connect.sh on a free loopback port, cases run
through it with `harness run --remote`, and the command line's answers to a wrong --remote.

The server and the Connect client need the Spark 4 stack (.venv-spark4): the `spark4_stack` fixture builds it
(`make setup STACK=spark4`, cached by its inputs) the first time. The argument checks run on any stack.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from support import ROOT, free_port, harness_cli

from harness import record

SPARK4_PYTHON = ROOT / ".venv-spark4" / "bin" / "python"
SCRIPT = ROOT / "scripts" / "spark-connect.sh"
# a DataFrame case (a generated frame fed to torch through Arrow), and one that builds an RDD from the SparkContext
DATAFRAME_CASE, DATAFRAME_SET = "training.feed_arrow", ["--set", "framework=torch", "--set", "task=co2",
                                                        "--set", "rows=500"]
CLASSIC_CASE, CLASSIC_SET = "calibration.spark_spin", ["--set", "iterations=1000"]


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=300)


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process and its descendants listen on."""
    import psutil

    root = psutil.Process(pid)
    out = []
    for p in [root, *root.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # Java's ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_cases_run_through_a_loopback_connect_server(spark4_stack, tmp_path):
    port = free_port()
    env = {"SPARK_CONNECT_PORT": str(port), "SPARK_CONNECT_DIR": str(tmp_path / "server"),
           "SPARK_CONNECT_CORES": "2", "SPARK_CONNECT_MEMORY": "1g", "PYTHON": str(SPARK4_PYTHON)}
    started = _script("start", env)
    pid = None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"sc://127.0.0.1:{port}" in started.stdout
        pid = int((tmp_path / "server" / "server.pid").read_text())
        listening = _listening(pid)
        assert ("127.0.0.1", port) in [(a.removeprefix("::ffff:"), p) for a, p in listening], listening
        assert all(_loopback(a) for a, _ in listening), f"the server listens beyond loopback: {listening}"

        url = f"sc://127.0.0.1:{port}"
        p = subprocess.run([str(SPARK4_PYTHON), "-m", "harness", "run", DATAFRAME_CASE, CLASSIC_CASE,
                            *DATAFRAME_SET, *CLASSIC_SET, "--repeats", "2", "--warmup", "0", "--remote", url,
                            "--results", str(tmp_path / "results"), "--run-id", "c1", "--no-mlflow", "--no-report"],
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert p.returncode == 0, p.stdout + p.stderr
        results, bad = record.read(tmp_path / "results" / "c1" / "results.jsonl")
        assert bad == []
        by_name = {r.name: r for r in results}
        ok, classic = by_name[DATAFRAME_CASE], by_name[CLASSIC_CASE]
        assert ok.status == "ok" and len(ok.samples) == 2, ok.error
        assert ok.extra["spark_connect"]["url"] == url and ok.extra["spark_connect"]["server_version"]
        assert "Spark Connect" in ok.extra["spark"]["unavailable"]  # the server's event log is not this client's
        assert classic.status == "unavailable"
        assert "needs the classic SparkContext" in classic.error["message"]
        env_json = json.loads((tmp_path / "results" / "c1" / "env.json").read_text())
        assert env_json["spark"]["connect"]["url"] == url and env_json["invocation"]["remote"] == url

        # classic Spark (A) against the same case through the server (B), paired: what the split costs
        p = subprocess.run([str(SPARK4_PYTHON), "-m", "harness", "ab", DATAFRAME_CASE, *DATAFRAME_SET,
                            "--b-remote", url, "--pairs", "3", "--max-pairs", "0", "--warmup", "0", "--json",
                            "--results", str(tmp_path / "results"), "--run-id", "ab1", "--no-mlflow", "--no-report"],
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
        out = json.loads(p.stdout)
        assert p.returncode == out["exit_code"] in (0, 1), p.stderr[-3000:]
        (case,) = out["cases"]
        assert case["case"] == DATAFRAME_CASE.split(".")[1] and case["ratio"] > 0
        assert [s["remote"] for s in out["sides"]] == [None, url]
        (a,), _ = record.read(tmp_path / "results" / "ab1" / "A" / "results.jsonl")
        (b,), _ = record.read(tmp_path / "results" / "ab1" / "B" / "results.jsonl")
        assert a.status == b.status == "ok" and len(a.samples) == len(b.samples) == 3
        assert "spark_connect" not in a.extra and b.extra["spark_connect"]["url"] == url
    finally:
        import psutil

        started_procs = [] if pid is None else [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        stopped = _script("stop", env)
    assert stopped.returncode == 0, stopped.stderr
    if pid is not None:  # the JVM and every Python worker it started are gone
        gone, alive = psutil.wait_procs(started_procs, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
        with pytest.raises(OSError):  # nothing accepts connections there any more
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_remote_and_master_together_exit_2_with_one_line(tmp_path):
    p = harness_cli("run", "calibration.sleep", "--remote", "sc://127.0.0.1:15002", "--master", "local[2]",
                    "--results", str(tmp_path))
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "give one" in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_remote_to_a_closed_port_exits_2_naming_the_start_command(tmp_path):
    port = free_port()  # nothing listens there
    for command in (["run", "calibration.sleep"], ["ab", "calibration.sleep"]):
        p = harness_cli(*command, "--remote", f"sc://127.0.0.1:{port}", "--results", str(tmp_path))
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "scripts/spark-connect.sh start" in p.stderr and f"SPARK_CONNECT_PORT={port}" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_remote_url_must_be_sc_and_master_must_not_be(tmp_path):
    p = harness_cli("run", "calibration.sleep", "--remote", "http://127.0.0.1:15002", "--results", str(tmp_path))
    assert p.returncode == 2 and "expected sc://HOST:PORT" in p.stderr
    p = harness_cli("run", "calibration.sleep", "--master", "sc://127.0.0.1:15002", "--results", str(tmp_path))
    assert p.returncode == 2 and "goes to --remote" in p.stderr


def test_server_script_refuses_a_stack_without_the_connect_jar(tmp_path):
    """pyspark 3.5's pip package has no Connect server: exit 2 and one line saying how to get the Spark 4 stack."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python} is missing (make setup builds it)")
    p = _script("start", {"PYTHON": str(python), "SPARK_CONNECT_DIR": str(tmp_path), "SPARK_CONNECT_PORT": "1"})
    jars = subprocess.run([str(python), "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
                          capture_output=True, text=True).stdout.strip()
    if list(Path(jars, "jars").glob("spark-connect_*.jar")):
        pytest.skip(f"{python}'s pyspark ships a Connect server")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Spark 4 stack" in p.stderr and "make setup STACK=spark4" in p.stderr
