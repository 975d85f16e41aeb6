"""Security, with real processes: nothing the scaling launchers start listens beyond loopback; secret Spark confs
stay off every command line yet take effect; a tracking URI with credentials works and is never shown; masking
hides every form of secret and nothing else."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, harness_cli, run_case

from harness.distributed import loopback
from harness.masking import MASK, is_secret_name, mask_mapping, mask_text, scrub, secret_values

TINY = dict(model="mlp", batch_size=16, batches=2)


# ---- who listens where: read from /proc, independent of the code under test ---------------------------------

@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    ip: str
    port: int
    private: bool  # in a network namespace other than this test's
    interfaces: frozenset

    @property
    def loopback_only(self) -> bool:
        if self.private:
            return self.interfaces == {"lo"}
        return self.ip.startswith("127.") or self.ip in ("::1",) or self.ip.startswith("::ffff:127.")


def _ip(hex_address: str) -> tuple[str, int]:
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def listeners(root: int) -> set[Listener]:
    """Every listening TCP socket held by `root` or its descendants, read from each process's own /proc view
    (so sockets inside another network namespace are seen too)."""
    import psutil

    host_ns = os.readlink("/proc/self/ns/net")
    found = set()
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return found
    for proc in procs:
        base = f"/proc/{proc.pid}"
        try:
            inodes = set()
            for fd in os.listdir(f"{base}/fd"):
                with contextlib.suppress(OSError):  # an fd closed meanwhile (such as listdir's own)
                    link = os.readlink(f"{base}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
            ns = os.readlink(f"{base}/ns/net")
            tables = [Path(f"{base}/net/{t}").read_text() for t in ("tcp", "tcp6")]
            interfaces = frozenset(line.split(":")[0].strip() for line in
                                   Path(f"{base}/net/dev").read_text().splitlines()[2:])
            name = proc.name()
        except (OSError, psutil.Error):
            continue  # the process ended meanwhile
        for table in tables:
            for line in table.splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # state LISTEN, one of this process's sockets
                    ip, port = _ip(f[1])
                    found.add(Listener(proc.pid, name, ip, port, ns != host_ns, interfaces))
    return found


class ListenerWatch:
    """Polls the listeners of this process's tree (and of `roots`' trees) in the background while a block runs."""

    def __init__(self, *roots: int, every_s: float = 0.1):
        self.roots, self.every_s, self.seen, self._stop = (os.getpid(), *roots), every_s, set(), threading.Event()

    def _now(self) -> set[Listener]:
        return set().union(*(listeners(root) for root in self.roots))

    def __enter__(self):
        self.before = self._now()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.seen |= self._now()
            time.sleep(self.every_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def new(self) -> set[Listener]:
        return {x for x in self.seen if (x.ip, x.port, x.private) not in
                {(b.ip, b.port, b.private) for b in self.before}}


def test_the_watch_sees_a_wildcard_listener_and_a_namespaced_one():
    """The observer itself: a child bound to 0.0.0.0 is flagged; one inside a Namespace is private and lo-only.
    (The first is the one deliberate wildcard listener of the suite, up for about a second.)"""
    code = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); print('up', flush=True); "
            "time.sleep(30)")
    with ListenerWatch() as watch:
        exposed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert exposed.stdout.readline().strip() == "up"
        try:
            ns = loopback.Namespace()
        except loopback.NamespaceUnavailable as e:
            ns = None
            why = str(e)
        hidden = ns and subprocess.Popen(ns.wrap([sys.executable, "-c", code]), stdout=subprocess.PIPE, text=True)
        if hidden:
            assert hidden.stdout.readline().strip() == "up"
        time.sleep(0.5)
    for p in (exposed, hidden):
        if p:
            p.kill()
            p.wait()
            p.stdout.close()
    if ns:
        ns.close()
    flagged = [x for x in watch.new if not x.loopback_only]
    assert [(x.pid, x.ip) for x in flagged] == [(exposed.pid, "0.0.0.0")]
    if ns is None:
        pytest.skip(f"no private network namespace here: {why}")
    [inside] = [x for x in watch.new if x.pid == hidden.pid]
    assert inside.private and inside.interfaces == {"lo"} and inside.ip == "0.0.0.0"


def test_loopback_servers_rebind_wildcard_socketservers_only_while_open():
    with loopback.loopback_servers():
        with socketserver.TCPServer(("", 0), socketserver.BaseRequestHandler) as inside:
            assert inside.socket.getsockname()[0] == "127.0.0.1"
    with socketserver.TCPServer(("", 0), socketserver.BaseRequestHandler, bind_and_activate=False) as after:
        after.server_bind()  # bound, never listening
        assert after.socket.getsockname()[0] == "0.0.0.0"


def test_without_namespaces_a_launch_is_recorded_as_listening_beyond_loopback(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no unshare / nsenter / ip: a machine that can't isolate
    with loopback.namespace("horovodrun's Gloo rendezvous server") as (ns, extra):
        assert ns is None
    assert extra["network"] == "host"
    assert "horovodrun's Gloo rendezvous server listen(s) on every interface" in extra["listens_beyond_loopback"]
    assert "unshare" in extra["listens_beyond_loopback"]


LAUNCHERS = [
    pytest.param("horovod", {}, id="horovodrun"),
    pytest.param("horovod_spark", {}, id="horovod_spark"),
    pytest.param("torch_distributor", {"local_mode": True}, id="torch_distributor-local"),
    pytest.param("torch_distributor", {"local_mode": False}, id="torch_distributor-barrier",
                 marks=pytest.mark.slow),
    pytest.param("tf_multiworker", {}, id="tf_multiworker"),
]


@pytest.mark.parametrize("case,params", LAUNCHERS)
def test_scaling_launchers_listen_on_loopback_only(ctx, case, params):
    with ListenerWatch() as watch:
        r = run_case(ctx, f"scaling.{case}", workers=2, **TINY, **params)
    assert r.status == "ok", r.error
    if "listens_beyond_loopback" in r.extra:
        pytest.skip(r.extra["listens_beyond_loopback"])
    exposed = sorted((x.name, x.pid, x.ip, x.port) for x in watch.seen if not x.loopback_only)
    assert exposed == [], f"listening beyond loopback during scaling.{case}: {exposed}"
    assert watch.new, "the launcher's servers were never seen: the watch saw nothing to check"
    if case == "horovod_spark":
        # driver service + Gloo rendezvous here, task services in Spark's Python workers: all on 127.0.0.1
        assert r.extra["network"] == "host, servers bound to 127.0.0.1"
        assert os.getpid() in {x.pid for x in watch.new}, "the driver service was not seen"
        assert {x.pid for x in watch.new} - {os.getpid()}, "no task service was seen"
    else:
        assert r.extra["network"] == loopback.ISOLATED["network"]
        assert any(x.private for x in watch.new), "nothing was seen inside the launch's namespace"


# ---- secret Spark confs: off the command line, in effect ----------------------------------------------------

SESSION_SCRIPT = """
import os, sys, psutil
from harness.spark import create_session
value = os.environ["SECRET_UNDER_TEST"]
spark, _ = create_session("local[1]", {"spark.hadoop.fs.s3a.secret.key": value,
                                       "spark.hadoop.fs.s3a.endpoint": f"http://u:{value}@127.0.0.1:9"})
seen = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"]) if value in " ".join(p.info["cmdline"] or [])]
sc = spark.sparkContext
print("CMDLINES", seen)
print("CONF", sc.getConf().get("spark.hadoop.fs.s3a.secret.key") == value,
      sc._jsc.hadoopConfiguration().get("fs.s3a.secret.key") == value,
      sc._jsc.hadoopConfiguration().get("fs.s3a.endpoint") == f"http://u:{value}@127.0.0.1:9")
print("LEFT", os.environ.get("PYSPARK_SUBMIT_ARGS"))
spark.stop()
"""


def test_secret_confs_stay_off_every_command_line_and_take_effect(tmp_path):
    value = "S3cr3t-cmdline-5521"
    p = subprocess.run([sys.executable, "-c", SESSION_SCRIPT], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env={**os.environ, "SECRET_UNDER_TEST": value, "TMPDIR": str(tmp_path)})
    out = p.stdout
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "CMDLINES []" in out  # neither the JVM nor anything else shows it to `ps`
    assert "CONF True True True" in out
    assert "LEFT None" in out
    assert list(tmp_path.glob("harness-spark-conf-*")) == []  # the properties file is gone once read


# ---- end to end: every secret form masked, the false positives readable ----------------------------------------

def _grep_results(root: Path, values: list[str]) -> list[tuple[str, str]]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [(str(path), v) for v in values if v.encode() in data]
    return hits


def test_run_masks_every_secret_form_and_keeps_lookalikes_readable(tmp_path):
    conf_key, conf_opt, conf_pair, conf_url = "S1-conf-key-8812", "S2-java-opt-4471", "S3-pair-6620", "S4-url-3391"
    env_key, env_url, env_opt = "S5-env-key-9012", "S6-env-url-2230", "S7-env-opt-5520"
    secrets = [conf_key, conf_opt, conf_pair, conf_url, env_key, env_url, env_opt]
    token_file = str(tmp_path / "readable-token-file")
    p = harness_cli("run", "calibration.spark_noop", "--set", "rows=1000", "--repeats", "2", "--warmup", "0",
                    "--results", str(tmp_path / "results"), "--run-id", "masked", "--no-report",
                    "--conf", f"spark.hadoop.fs.s3a.secret.key={conf_key}",
                    "--conf", f"spark.driver.extraJavaOptions=-Dfs.s3a.secret.key={conf_opt} -Dharness.x=readable",
                    "--conf", f"spark.executorEnv.DB_OPTS=user=u password={conf_pair}",
                    "--conf", f"spark.hadoop.fs.s3a.endpoint=http://u:{conf_url}@127.0.0.1:9",
                    "--conf", "spark.authenticate=false",
                    "--conf", "spark.kubernetes.authenticate.driver.serviceAccountName=spark-sa",
                    env={"AWS_SECRET_ACCESS_KEY": env_key, "HARNESS_DB_URL": f"postgresql://u:{env_url}@h/db",
                         "SPARK_TEST_OPTS": f"-Djavax.net.ssl.trustStorePassword={env_opt}",
                         "HADOOP_TOKEN_FILE_LOCATION": token_file})
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert _grep_results(tmp_path / "results", secrets) == []  # JSONL, env.json, MLflow's store and artifacts
    assert not [s for s in secrets if s in p.stdout + p.stderr]
    env = json.loads((tmp_path / "results" / "masked" / "env.json").read_text())
    conf, environment = env["spark"]["conf"], env["environment"]
    # JVM options are java's arguments however they reach spark-submit: the run says so
    assert [w.split(" holds")[0] for w in env["spark"]["warnings"]] == ["spark.driver.extraJavaOptions"]
    assert conf["spark.hadoop.fs.s3a.secret.key"] == MASK
    # (Spark puts its own JVM options first)
    assert conf["spark.driver.extraJavaOptions"].endswith(f" -Dfs.s3a.secret.key={MASK} -Dharness.x=readable")
    assert conf["spark.executorEnv.DB_OPTS"] == f"user=u password={MASK}"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == f"http://u:{MASK}@127.0.0.1:9"
    assert conf["spark.authenticate"] == "false"
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark-sa"
    assert environment["AWS_SECRET_ACCESS_KEY"] == MASK
    assert environment["HARNESS_DB_URL"] == f"postgresql://u:{MASK}@h/db"
    assert environment["SPARK_TEST_OPTS"] == f"-Djavax.net.ssl.trustStorePassword={MASK}"
    assert environment["HADOOP_TOKEN_FILE_LOCATION"] == token_file


def test_masking_rule_follows_spark_and_spares_lookalikes():
    for name in ("PWD", "OLDPWD", "spark.authenticate", "spark.kubernetes.authenticate.driver.serviceAccountName",
                 "HADOOP_TOKEN_FILE_LOCATION", "spark.kubernetes.authenticate.oauthTokenFile", "spark.redaction.regex",
                 "spark.kerberos.keytab", "spark.cassandra.partitionKey", "JAVA_HOME", "AWS_PROFILE"):
        assert not is_secret_name(name), name
    for name in ("spark.authenticate.secret", "spark.ssl.keyStorePassword", "MLFLOW_TRACKING_TOKEN",
                 "spark.hadoop.fs.s3a.access.key", "fs.s3a.accesskey", "AWS_SECRET_ACCESS_KEY", "MYSQL_PWD",
                 "GOOGLE_APPLICATION_CREDENTIALS", "API_KEY", "fs.azure.account.key.acct.blob.core.windows.net",
                 "fs.azure.sas.container.acct", "db.passwd"):
        assert is_secret_name(name), name
    # PWD is the current directory: never scrubbed out of a message
    env = {"PWD": "/work/here", "HADOOP_TOKEN_FILE_LOCATION": "/run/tokens", "A_TOKEN": "tok-1234"}
    assert scrub("cannot read /work/here/data and /run/tokens (tok-1234)", secret_values(env)) == \
        f"cannot read /work/here/data and /run/tokens ({MASK})"
    assert mask_mapping(env) == {"PWD": "/work/here", "HADOOP_TOKEN_FILE_LOCATION": "/run/tokens", "A_TOKEN": MASK}


@pytest.mark.parametrize("text,masked", [
    ("-Xmx1g -Dfs.s3a.secret.key=abc123 -Dfoo=bar", f"-Xmx1g -Dfs.s3a.secret.key={MASK} -Dfoo=bar"),
    ("--conf spark.ssl.keyPassword=pw99 --conf spark.master=local",
     f"--conf spark.ssl.keyPassword={MASK} --conf spark.master=local"),
    ('{"password": "two words", "user": "u"}', f'{{"password": "{MASK}", "user": "u"}}'),
    ("https://u:p@ss@host:5000/x", f"https://u:{MASK}@host:5000/x"),
    ("http://host:5000/api?X-Amz-Signature=ab12&n=1", f"http://host:5000/api?X-Amz-Signature={MASK}&n=1"),
    ("jdbc:postgresql://h/db?user=u&password=pw1", f"jdbc:postgresql://h/db?user=u&password={MASK}"),
    ("spark.authenticate=true in /work/pwd/x", "spark.authenticate=true in /work/pwd/x"),
])
def test_secret_parts_inside_strings(text, masked):
    assert mask_text(text) == masked


# ---- a tracking URI with credentials ---------------------------------------------------------------------------

def test_tracking_uri_with_credentials_works_and_is_never_shown(tmp_path, mlflow_server):
    password = "Pw-tracking-7731"
    uri = mlflow_server.replace("http://", f"http://harness-user:{password}@")
    results = tmp_path / "results"
    p = harness_cli("run", "calibration.sleep", "--set", "ms=1", "--repeats", "2", "--warmup", "0", "--no-report",
                    "--results", str(results), "--run-id", "creds", "--tracking-uri", uri)
    assert p.returncode == 0, p.stdout + p.stderr
    assert password not in p.stdout + p.stderr
    assert f"mlflow:   http://harness-user:{MASK}@127.0.0.1" in p.stdout and "NOT logged" not in p.stdout
    again = harness_cli("log", str(results / "creds"), "--tracking-uri", uri)
    assert again.returncode == 0 and password not in again.stdout + again.stderr
    assert "(1 were already there)" in again.stdout
    assert _grep_results(results, [password]) == []

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("spark-ml-harness")
    runs = client.search_runs([exp.experiment_id], "tags.`harness.run_id` = 'creds'")
    assert {r.data.tags["harness.level"] for r in runs} == {"parent", "case"}
    for r in runs:
        assert password not in json.dumps([r.data.tags, r.data.params])
    parent = next(r for r in runs if r.data.tags["harness.level"] == "parent")
    env_json = Path(client.download_artifacts(parent.info.run_id, "env.json", str(tmp_path)))
    assert password not in env_json.read_text()


def test_unreachable_server_with_credentials_is_reported_masked(tmp_path):
    from support import free_port

    password = "Pw-down-5150"
    p = harness_cli("run", "calibration.sleep", "--set", "ms=1", "--repeats", "1", "--warmup", "0", "--no-report",
                    "--results", str(tmp_path), "--run-id", "down",
                    "--tracking-uri", f"http://bob:{password}@127.0.0.1:{free_port()}")
    assert p.returncode == 0, p.stderr  # results are kept; MLflow's failure is a warning
    assert "unreachable" in p.stderr + p.stdout
    assert password not in p.stdout + p.stderr
    assert _grep_results(tmp_path, [password]) == []
