"""SparkSession factory: local[N] by default, any --master URL; everything bound to 127.0.0.1.

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


def create_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "harness"):
    """Builds (or returns the active) SparkSession; returns (session, startup_s)."""
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


def describe(session, startup_s: float | None = None) -> dict[str, Any]:
    """Spark version, master, cores, the conf (masked) and any command-line exposure warnings, for env.json."""
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
