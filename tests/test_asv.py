"""The asv suite: generated from the registry, importable without Spark, checked and run by real asv."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from support import ROOT

ASV = [sys.executable, "-m", "asv"]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder, not part of the installed package
    sys.path.insert(0, str(ROOT))


def test_classes_are_generated_from_the_registry_without_starting_spark():
    from harness.registry import load_all

    mod = importlib.import_module("benchmarks.calibration")
    helper = importlib.import_module("benchmarks._harness")
    spec = load_all()["calibration"].cases["spark_noop"]
    cls = mod.SparkNoop
    assert cls.param_names == sorted(spec.axes)
    assert cls.params == [list(spec.axes[n].default) for n in cls.param_names]
    assert cls.track_wall_s.unit == "s"
    assert {"Sleep", "Spin", "SparkNoop"} <= {n for n in vars(mod) if isinstance(vars(mod)[n], type)}
    assert helper._CONTEXT is None  # importing a suite never starts Spark; setup does


def test_a_family_that_is_not_registered_imports_with_no_classes():
    helper = importlib.import_module("benchmarks._harness")
    assert helper.scenarios("no_such_family", "benchmarks.none") == {}
    for family in ("ingestion", "udf", "training", "scaling"):  # written by others, maybe not yet
        mod = importlib.import_module(f"benchmarks.{family}")
        assert all(c.__module__ == mod.__name__ for c in vars(mod).values() if isinstance(c, type))


def _asv(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*ASV, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "HARNESS_ASV_REPEATS": "2", "HARNESS_ASV_WARMUP": "1"})


def test_asv_check_finds_no_problems():
    p = _asv("check", "--python=same")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No problems found" in p.stdout


@pytest.fixture
def asv_config(tmp_path):
    """The project's asv.conf.json with results and HTML under tmp_path (the real ones stay untouched)."""
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp_path / "results"),
                html_dir=str(tmp_path / "html"), env_dir=str(tmp_path / "env"))
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def test_quick_asv_run_of_calibration_fills_every_benchmark_and_publishes(asv_config, tmp_path):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert _asv("machine", "--yes").returncode == 0
    p = _asv("run", "--config", str(asv_config), "--python=same", "--quick", "--bench", "^calibration\\.",
             "--set-commit-hash", commit, "--show-stderr")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    files = [f for f in (tmp_path / "results").glob("*/*.json") if f.name != "machine.json"]
    assert len(files) == 1
    results = json.loads(files[0].read_text())["results"]
    assert set(results) == {"calibration.Sleep.track_wall_s", "calibration.Spin.track_wall_s",
                            "calibration.SparkNoop.track_wall_s", "calibration.SparkSpin.track_wall_s"}
    for name, row in results.items():
        values = row[0]
        assert values and all(isinstance(v, float) and v > 0 for v in values), (name, row)
    # the sleep case's median is its known answer (plus wake-up latency)
    assert 0.010 <= results["calibration.Sleep.track_wall_s"][0][0] < 0.5
    p = _asv("publish", "--config", str(asv_config))
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "html" / "index.html").is_file()
