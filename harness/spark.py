"""SparkSession factory: local[N] by default, any --master URL; everything bound to 127.0.0.1.

One session per harness run, reused across cases. Its start-up (JVM + session) is timed once here and
recorded in env.json's `spark` section, never inside a case.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from .masking import mask_mapping

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
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    t0 = time.perf_counter()
    session = builder.getOrCreate()
    startup_s = time.perf_counter() - t0
    session.sparkContext.setLogLevel("ERROR")
    return session, startup_s


def describe(session, startup_s: float | None = None) -> dict[str, Any]:
    """Spark version, master, cores and the conf (masked) for env.json."""
    sc = session.sparkContext
    return {
        "version": session.version,
        "master": sc.master,
        "default_parallelism": sc.defaultParallelism,
        "startup_s": startup_s,
        "conf": mask_mapping(dict(sorted(sc.getConf().getAll()))),
    }


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
