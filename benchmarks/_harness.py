"""The one helper behind the asv suites: turns a registered experiment's cases into asv benchmark classes.

Each case becomes a CamelCase class (`calibration.spark_noop` -> `SparkNoop`) whose `params`/`param_names` are
the case's axes with their (small) default values, and whose `track_<metric>` method runs the case through the
harness's own runner and returns the median it measured, in the case's unit. asv's clock is not used: the
harness runner owns timing (warm-ups apart, repeats, checks), so asv and `harness run` report the same figure.

Spark is started once per benchmark process, in `setup` (never at import), and reused by every case that
process runs. A family whose experiment module is missing (an older commit, or not written yet) yields no
classes instead of failing the import. Settings: HARNESS_ASV_REPEATS (default 5), HARNESS_ASV_WARMUP (1),
HARNESS_ASV_TIMEOUT (seconds per case, default 1800), HARNESS_ASV_MASTER (Spark master, default local[N]).
"""
from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

_CONTEXT: Any = None  # the process's RunContext, holding its one SparkSession


def _prefer_installed_harness() -> None:
    """Benchmark the harness of the commit asv installed, not this working tree.

    asv puts the checkout's root on sys.path to import `benchmarks`, which would also make the working tree's
    `harness` shadow the one built from the benchmarked commit (`asv continuous`, `asv run A..B`). With
    --python=same ("existing" environment) nothing is installed per commit, and the working tree is meant.
    """
    if os.environ.get("ASV_ENV_TYPE", "existing") == "existing" or "harness" in sys.modules:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != root]


_prefer_installed_harness()


def _setting(name: str, default: float) -> float:
    return float(os.environ.get(f"HARNESS_ASV_{name}", default))


def _context():
    """This process's RunContext; its SparkSession starts on the first Spark case's setup."""
    global _CONTEXT
    if _CONTEXT is None:
        from harness.context import RunContext

        run_dir = tempfile.mkdtemp(prefix="harness-asv-")
        _CONTEXT = RunContext(run_id="asv", run_dir=Path(run_dir),
                              master=os.environ.get("HARNESS_ASV_MASTER") or None,
                              timeout_s=_setting("TIMEOUT", 1800))

        def stop() -> None:
            try:
                _CONTEXT.stop()
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)

        atexit.register(stop)
    return _CONTEXT


def _registered(experiment_id: str):
    """The experiment's registry entry, or None when its module does not exist (yet) or fails to import."""
    try:
        from harness import registry
    except ImportError:
        return None
    try:
        importlib.import_module(f"harness.experiments.{experiment_id}")
    except ImportError:
        pass
    exp = registry._REGISTRY.get(experiment_id)
    if exp is None:
        try:  # the family may be registered from a module of another name
            exp = registry.load_all().get(experiment_id)
        except Exception:  # noqa: BLE001 - another family's broken module must not hide this one
            return None
    return exp


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _make_class(spec) -> type:
    names = sorted(spec.axes)

    def setup(self, *values):
        params = dict(zip(names, values))
        if spec.valid is not None and not spec.valid(params):
            raise NotImplementedError(f"{spec.target} {params}: not a valid combination")
        ctx = _context()
        if spec.spark:
            ctx.spark  # noqa: B018 - started here, once per process, never at import
        self._params = params

    def track(self, *values):
        from harness.coordinator import Coordinator, LocalWorker, Settings
        from harness.spec import CaseRun

        ctx = _context()
        settings = Settings(repeats=int(_setting("REPEATS", 5)), warmup=int(_setting("WARMUP", 1)),
                            timeout_s=ctx.timeout_s)
        # in this process: asv already runs each benchmark in a process of its own and enforces its timeout
        coordinator = Coordinator(ctx.run_id, ctx.run_dir / "results.jsonl", "asv", settings)
        result = coordinator.run_case(CaseRun(spec, dict(self._params)), LocalWorker(ctx))
        if result.status == "unavailable":
            raise NotImplementedError((result.error or {}).get("message", "unavailable"))
        if result.status != "ok" or not result.stats.get("n"):
            msg = (result.error or {}).get("message", "no samples")
            raise RuntimeError(f"{spec.target} {self._params}: {result.status}: {msg}")
        return result.stats["median"]

    track.unit = spec.unit
    track.__doc__ = spec.doc
    attrs = {
        "__doc__": f"{spec.target}: {spec.doc} (median {spec.metric}, measured by the harness runner)",
        "params": [list(spec.axes[n].default) for n in names],
        "param_names": names,
        "unit": spec.unit,
        "timeout": _setting("TIMEOUT", 1800),
        "setup": setup,
        f"track_{spec.metric}": track,
    }
    return type(camel(spec.name), (), attrs)


def scenarios(experiment_id: str, module: str) -> dict[str, type]:
    """{ClassName: benchmark class} for every case of the experiment; {} when it is not registered here."""
    exp = _registered(experiment_id)
    if exp is None:
        return {}
    out = {}
    for spec in exp.cases.values():
        cls = _make_class(spec)
        cls.__module__ = module
        out[cls.__name__] = cls
    return out
