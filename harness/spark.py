"""SparkSession factory: local[N] by default, any --master URL, or a Spark Connect server (--remote sc://...);
everything bound to 127.0.0.1.

One session per harness run, reused across cases. Its start-up (JVM + session) is timed once here and
recorded in env.json's `spark` section, never inside a case.

Secret confs never reach a command line: pyspark hands every builder conf to spark-submit as `--conf k=v`,
which `ps` shows to any local user, so secret ones go through a 0600 properties file in a private temporary
folder instead (`--properties-file` in PYSPARK_SUBMIT_ARGS), removed once the JVM has read it.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .masking import is_secret_name, mask_mapping, mask_text, spark_redaction_regex

DEFAULT_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # the UI binds every interface by default; benchmarks don't need it (re-enable with --conf)
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
}


EVENT_LOG_DIR = "spark-events"  # inside the run folder


def event_log_conf(run_dir: Path) -> dict[str, str]:
    """Spark's event log in the run folder: per-case metrics are read from it (harness.spark_metrics), and the
    Spark History Server opens it. Plain and unrolled, so it can be read while it grows. The log holds the conf,
    which Spark redacts by its own rule: here the harness's wider one (URL passwords, more secret names)."""
    folder = Path(run_dir).resolve() / EVENT_LOG_DIR
    folder.mkdir(parents=True, exist_ok=True)  # Spark refuses to start on a missing folder
    return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": folder.as_uri(),
            "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
            "spark.redaction.regex": spark_redaction_regex()}


class JavaMissing(RuntimeError):
    pass


def check_java() -> None:
    """Raises JavaMissing with the fix when Java 17 is not usable."""
    from .env import java_major, java_version

    major = java_major()
    if major is None:
        raise JavaMissing("Java is required (Spark runs on the JVM) but `java -version` does not work: "
                          "install Java 17 (e.g. apt-get install openjdk-17-jre-headless) or fix JAVA_HOME/PATH")
    if major != 17:
        raise JavaMissing(f"Java 17 is required, found {java_version()!r}: put Java 17 first on PATH or set JAVA_HOME")


def loopback_environment() -> None:
    """Spark picks another interface unless told; its Python workers must run this interpreter."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


def default_master() -> str:
    return f"local[{os.cpu_count() or 2}]"


CONNECT_SCHEME = "sc://"
CONNECT_START = "scripts/spark-connect.sh start"
# what a case that reaches for the classic driver-side API gets under Connect
NEEDS_CLASSIC = "needs the classic SparkContext (RDD/JVM API), which Spark Connect does not offer"
# confs a Connect client cannot set: they belong to the server's JVM (driver, UI, event log), fixed at its start
_SERVER_ONLY = ("spark.driver.", "spark.ui.", "spark.eventLog.", "spark.executor.", "spark.master",
                "spark.redaction.regex")


def is_remote(master: str | None) -> bool:
    """Whether Spark is reached through a Spark Connect server (`--remote sc://HOST:PORT`)."""
    return bool(master) and master.startswith(CONNECT_SCHEME)


def remote_address(url: str) -> tuple[str, int] | None:
    """(host, port) of an sc:// URL (port 15002 when none is given, as in pyspark), None when malformed."""
    from urllib.parse import urlparse

    if not is_remote(url):
        return None
    try:
        parsed = urlparse("http://" + url[len(CONNECT_SCHEME):].split(";", 1)[0])
        host, port = parsed.hostname, parsed.port or 15002
    except ValueError:
        return None
    return (host, port) if host else None


def remote_problem(url: str, timeout_s: float = 3.0, flag: str = "--remote") -> str | None:
    """What is wrong with a Spark Connect URL given as `flag` (malformed, or nothing accepts connections there),
    or None."""
    import socket

    address = remote_address(url)
    if address is None:
        return f"{flag} {url!r}: expected sc://HOST:PORT, e.g. {flag} sc://127.0.0.1:15002"
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return None
    except OSError as e:
        return (f"{flag} {url}: no Spark Connect server answers there ({e.strerror or e}); start one with "
                f"{CONNECT_START} (SPARK_CONNECT_PORT={address[1]} for that port)")


def connect_client_problem() -> str | None:
    """Why this interpreter cannot be a Spark Connect client (pyspark's Connect extras missing), or None.
    Looked up without importing pyspark (the command line stays quick)."""
    missing = [name for name in ("grpc", "google.rpc.status_pb2", "pyarrow", "pandas") if not _has_module(name)]
    pyspark = _find("pyspark")
    if pyspark is None or not (Path(pyspark).parent / "sql" / "connect" / "session.py").is_file():
        missing.insert(0, "pyspark.sql.connect")
    if not missing:
        return None
    return (f"--remote: this interpreter ({sys.executable}) is no Spark Connect client (missing "
            f"{', '.join(missing)}); Connect needs the Spark 4 stack: make setup STACK=spark4, then use "
            ".venv-spark4/bin/harness")


def _find(name: str) -> str | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec else None


def _has_module(name: str) -> bool:
    return _find(name) is not None


def is_connect_session(session) -> bool:
    """Whether `session` is a Spark Connect client session (no SparkContext, no JVM in this process)."""
    return type(session).__module__.startswith("pyspark.sql.connect")


def create_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "harness"):
    """Builds (or returns the active) SparkSession; returns (session, startup_s). An sc:// master connects to
    a Spark Connect server instead of starting a driver here."""
    if is_remote(master):
        return _connect_session(master, conf or {}, app_name)
    check_java()
    loopback_environment()
    from pyspark.sql import SparkSession

    master = master or default_master()
    settings = {**DEFAULT_CONF, **(conf or {})}
    if master.startswith("local"):
        # few shuffle partitions suit one machine; a user's --conf wins
        settings.setdefault("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    secret = {k: v for k, v in settings.items() if is_secret_name(k) or mask_text(v) != v}
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        if k not in secret:
            builder = builder.config(k, v)
    with _properties_file(secret):
        t0 = time.perf_counter()
        session = builder.getOrCreate()
        startup_s = time.perf_counter() - t0
    session.sparkContext.setLogLevel("ERROR")
    return session, startup_s


def _connect_session(url: str, conf: dict[str, str], app_name: str):
    """A Spark Connect client session on `url`. The server's JVM owns the driver, UI and event log confs (set
    when scripts/spark-connect.sh starts it), and its log level; the client sets only session (SQL) confs."""
    os.environ["PYSPARK_PYTHON"] = sys.executable  # a UDF pickled here is unpickled by the server's Python
    from pyspark.sql import SparkSession

    settings = {k: v for k, v in {**DEFAULT_CONF, **conf}.items() if not k.startswith(_SERVER_ONLY)}
    builder = SparkSession.builder.remote(url).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    t0 = time.perf_counter()
    session = builder.getOrCreate()
    session.range(1).collect()  # the session is made lazily: the first call reaches the server
    return session, time.perf_counter() - t0


@contextlib.contextmanager
def _properties_file(conf: dict[str, str]) -> Iterator[None]:
    """While open, spark-submit reads `conf` from a 0600 file (plus spark-defaults.conf, which a properties file
    replaces) instead of taking it on its command line."""
    if not conf:
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="harness-spark-conf-"))  # 0700
    path = folder / "secret.properties"
    lines = [f"{_escape(k, key=True)}={_escape(v)}" for k, v in conf.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in [*_spark_defaults(), *lines]))
    old = os.environ.get("PYSPARK_SUBMIT_ARGS")
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(str(path))} {old or 'pyspark-shell'}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = old
        shutil.rmtree(folder, ignore_errors=True)


def _spark_defaults() -> list[str]:
    """The lines of the spark-defaults.conf spark-submit would have read (none in a pip-installed pyspark)."""
    from pyspark.find_spark_home import _find_spark_home

    path = Path(os.environ.get("SPARK_CONF_DIR") or Path(_find_spark_home(), "conf"), "spark-defaults.conf")
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _escape(text: str, key: bool = False) -> str:
    """Java properties escaping (backslashes, line breaks; separators and spaces in keys)."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if key:
        for c in "=: ":
            text = text.replace(c, "\\" + c)
    return text


def command_line_warnings(conf: dict[str, str]) -> list[str]:
    """Secrets that no way of passing confs keeps off a command line: JVM options become java's arguments."""
    return [f"{k} holds a secret ({mask_text(v)}): JVM options are on the java command line, which every local "
            "user can read (ps); pass Hadoop secrets as --conf spark.hadoop.NAME=VALUE instead"
            for k, v in conf.items() if k.endswith("extraJavaOptions") and mask_text(v) != v]


def describe(session, startup_s: float | None = None, remote: str | None = None) -> dict[str, Any]:
    """Spark version, master, cores, the conf (masked) and any command-line exposure warnings, for env.json."""
    if is_connect_session(session):
        return _describe_connect(session, startup_s, remote)
    sc = session.sparkContext
    conf = dict(sorted(sc.getConf().getAll()))
    info = {
        "version": session.version,
        "master": sc.master,
        "default_parallelism": sc.defaultParallelism,
        "startup_s": startup_s,
        "conf": mask_mapping(conf),
    }
    if warnings := command_line_warnings(conf):
        info["warnings"] = warnings
    return info


def _describe_connect(session, startup_s: float | None, remote: str | None) -> dict[str, Any]:
    """The same description through Spark Connect: the version is the server's, the conf what the session can
    read of it (spark.conf), the cores those of the server's local[N] master where it says so."""
    conf: dict[str, str] = {}
    try:
        conf = dict(session.conf.getAll)  # pyspark >= 4.0; the server's Spark conf as this session sees it
    except Exception:  # noqa: BLE001 - an older client: the keys that matter one by one
        for key in ("spark.master", "spark.app.name", "spark.sql.shuffle.partitions", "spark.default.parallelism"):
            value = session.conf.get(key, None)
            if value is not None:
                conf[key] = value
    server_master = conf.get("spark.master")
    parallelism = conf.get("spark.default.parallelism")
    if parallelism is None and server_master:
        parallelism = local_cores(server_master)
    return {
        "version": session.version,
        "master": remote,
        "default_parallelism": int(parallelism) if parallelism else None,
        "startup_s": startup_s,
        "conf": mask_mapping(dict(sorted(conf.items()))),
        "connect": {"url": remote, "server_version": session.version, "server_master": server_master,
                    "client_pyspark": _client_version()},
    }


def local_cores(master: str) -> int | None:
    """N of local[N] (local[*]: this machine's CPUs), None for any other master."""
    import re

    m = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    return os.cpu_count() if m.group(1) in (None, "*") else int(m.group(1))


def _client_version() -> str | None:
    try:
        import pyspark

        return pyspark.__version__
    except (ImportError, AttributeError):
        return None


def app_id(spark) -> str:
    """The Spark application's id on either API (classic: the driver's; Connect: the server's), e.g. as part of
    a memo key that must change with the session."""
    return spark.conf.get("spark.app.id")


def partition_count(df) -> int | None:
    """df's partitions where the RDD API exists (classic); None through Spark Connect, which has no cheap way
    to ask (counting them would run a job)."""
    if is_connect_session(df.sparkSession):
        return None
    return df.rdd.getNumPartitions()


def classic_only(exc: BaseException) -> str | None:
    """The reason a case is unavailable under Spark Connect when `exc` (or what caused it) is pyspark's Connect
    refusal of a classic-only API: the SparkContext, RDDs or the JVM (JVM_ATTRIBUTE_NOT_SUPPORTED, `rdd`), or
    a feature Connect does not implement; it names the harness line that asked. None for any other failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        condition, params = _condition(exc), _params(exc)
        where = _caller(exc)
        if condition == "JVM_ATTRIBUTE_NOT_SUPPORTED":
            return f"{NEEDS_CLASSIC} (it uses {params.get('attr_name', 'a JVM attribute')}{where})"
        if condition == "NOT_IMPLEMENTED":
            feature = params.get("feature", "")
            if feature.strip("()") in ("rdd", "sparkContext", "_jvm", "_jsc"):
                return f"{NEEDS_CLASSIC} (it uses {feature}{where})"
            return f"uses {feature or 'an API'}, which Spark Connect does not implement{where}"
        if isinstance(exc, AttributeError) and "'NoneType' object has no attribute '_j" in str(exc):
            # pyspark code that looks up SparkContext._active_spark_context, which no Connect client has
            return f"{NEEDS_CLASSIC} ({exc}{where})"
        exc = exc.__cause__ or exc.__context__
    return None


def _caller(exc: BaseException) -> str:
    """', at harness/FILE.py:LINE': the innermost line of the harness's own code (not this module) in exc's
    traceback, or ''."""
    import traceback

    package = Path(__file__).resolve().parent
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(package) and path != Path(__file__).resolve():
            found = f", at {path.relative_to(package.parent)}:{frame.lineno}"
    return found


def _condition(exc: BaseException) -> str | None:
    for getter in ("getCondition", "getErrorClass"):  # pyspark 4 / 3.5 names of the same thing
        f = getattr(exc, getter, None)
        if callable(f):
            try:
                return f()
            except Exception:  # noqa: BLE001
                return None
    return None


def _params(exc: BaseException) -> dict[str, str]:
    f = getattr(exc, "getMessageParameters", None)
    try:
        return dict(f() or {}) if callable(f) else {}
    except Exception:  # noqa: BLE001
        return {}


def session_conf(spark, settings: dict[str, str]) -> Callable[[], None]:
    """Sets runtime SQL conf for one case; returns the function (a case's teardown) that puts it back."""
    old = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)

    def restore() -> None:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)

    return restore
