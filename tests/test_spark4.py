"""The Spark 4 stack (`make setup STACK=spark4`, .venv-spark4) runs real cases, and the Spark-4-only cases are
`unavailable` with the version they need on the Spark 3.5 stack.

The second stack is built only when a test here that needs it is selected (once; the stamp caches it by its
inputs, so later sessions start at once); its cases run through `.venv-spark4/bin/harness run`, as a user would.
"""
from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from support import ROOT, harness_cli, run_case

SUITE = """
description = "Spark 4 stack check"
[defaults]
repeats = 1
warmup = 0
timeout = 600
[[run]]
target = "udf.pandas_udf"
set = { workload = ["plus_one"], rows = [3000], groups = [7] }
[[run]]
target = "udf.map_in_arrow"
set = { workload = ["plus_one"], rows = [3000], groups = [7] }
[[run]]
target = "udf.apply_in_arrow"
set = { workload = ["plus_one"], rows = [3000], groups = [7] }
[[run]]
target = "udf.arrow_array_udf"
set = { workload = ["plus_one"], rows = [3000], groups = [7] }
[[run]]
target = "udf.arrow_array_agg"
set = { workload = ["subtract_mean"], rows = [3000], groups = [7] }
[[run]]
target = "training.feed_toarrow"
set = { framework = ["torch"], task = ["co2"], rows = [500] }
[[run]]
target = "training.feed_petastorm"
set = { framework = ["torch"], task = ["co2"], rows = [500] }
[[run]]
target = "ingestion.compacted"
set = { n_files = [40], file_kb = [4], target_files = [2], cold = ["first_read"] }
"""


def _pyspark_major() -> int:
    import pyspark

    return int(pyspark.__version__.split(".")[0])


@pytest.fixture(scope="module")
def spark4_run(spark4_stack, tmp_path_factory):
    """One `harness run` on the Spark 4 stack over a small suite; returns (records by case, env.json)."""
    tmp = tmp_path_factory.mktemp("spark4")
    suite = tmp / "spark4.toml"
    suite.write_text(textwrap.dedent(SUITE))
    p = subprocess.run([str(spark4_stack / "bin" / "harness"), "run", str(suite), "--results", str(tmp / "results"),
                        "--no-mlflow"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    (run_dir,) = [d for d in (tmp / "results").iterdir() if d.is_dir()]
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return {f"{r['experiment']}.{r['case']}": r for r in records}, json.loads((run_dir / "env.json").read_text())


def test_stack_pins_spark4_numpy2_and_connect_client(spark4_stack):
    code = ("import pyspark, numpy, pyarrow, grpc, zstandard, google.rpc, importlib.util as u; "
            "print(pyspark.__version__, numpy.__version__, pyarrow.__version__, u.find_spec('petastorm') is None)")
    p = subprocess.run([str(spark4_stack / "bin" / "python"), "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    spark, numpy, pyarrow, no_petastorm = p.stdout.split()
    assert spark.startswith("4.") and numpy.startswith("2.") and int(pyarrow.split(".")[0]) >= 18
    assert no_petastorm == "True"


def test_cases_run_on_spark4_and_record_it(spark4_run):
    records, env = spark4_run
    assert env["spark"]["version"].startswith("4.") and env["packages"]["pyspark"].startswith("4.")
    for name in ("udf.pandas_udf", "udf.map_in_arrow", "udf.apply_in_arrow", "udf.arrow_array_udf",
                 "udf.arrow_array_agg", "training.feed_toarrow", "ingestion.compacted"):
        r = records[name]
        assert r["status"] == "ok", f"{name}: {r['status']} {r['error']}"


def test_spark4_udf_styles_match_the_reference(spark4_run):
    records, _ = spark4_run
    for name in ("udf.map_in_arrow", "udf.apply_in_arrow", "udf.arrow_array_udf", "udf.arrow_array_agg"):
        e = records[name]["extra"]
        assert e["rows"] == 3000 and e["arrow"] == "on"
        assert e["checksum"] == pytest.approx(e["checksum_reference"], rel=1e-9)


def test_toarrow_feeder_delivers_every_row(spark4_run):
    records, _ = spark4_run
    e = records["training.feed_toarrow"]["extra"]
    assert e["feeder"] == "toarrow" and e["rows"] == e["rows_train"] > 0 and e["materialize_s"] > 0


def test_petastorm_is_unavailable_on_spark4_with_the_reason(spark4_run):
    records, _ = spark4_run
    r = records["training.feed_petastorm"]
    assert r["status"] == "unavailable"
    message = r["error"]["message"]
    assert "petastorm is not installed in this stack" in message and "pyarrow < 15" in message


@pytest.mark.skipif(_pyspark_major() >= 4, reason="checks the Spark 3.5 stack; this interpreter has Spark 4")
@pytest.mark.parametrize("target,params,needs", [
    ("udf.apply_in_arrow", dict(workload="plus_one"), "4.0"),
    ("udf.arrow_array_udf", dict(workload="plus_one"), "4.1"),
    ("udf.arrow_array_udf_iter", dict(workload="cdf"), "4.1"),
    ("udf.arrow_array_agg", dict(workload="subtract_mean"), "4.1"),
    ("training.feed_toarrow", dict(framework="torch"), "4.0"),
    ("training.torch", dict(feeder="toarrow"), "4.0"),
])
def test_spark4_only_cases_are_unavailable_on_35(ctx, target, params, needs):
    import pyspark

    r = run_case(ctx, target, **params)  # the gate comes before any data is made (default sizes stay cheap)
    assert r.status == "unavailable", r.error
    assert f"needs Spark >= {needs} (this stack has {pyspark.__version__})" in r.error["message"]
    assert not list(ctx.run_dir.glob("work/training/*")), "data was prepared before the version gate"


def test_ab_35_vs_4_measures_a_spark4_only_case_alone(spark4_stack, tmp_path):
    """`harness ab` across the stacks: a case only Spark 4 has is not comparable (A unavailable), and side B's
    record still carries its samples, marked unpaired, rather than an `ok` with none."""
    p = harness_cli("ab", "udf.apply_in_arrow", "--set", "workload=plus_one", "--set", "rows=3000", "--set",
                    "groups=7", "--a-python", str(ROOT / ".venv" / "bin" / "python"), "--b-python",
                    str(spark4_stack / "bin" / "python"), "--pairs", "3", "--max-pairs", "0", "--run-id", "x",
                    "--results", str(tmp_path), "--no-mlflow", "--no-report", "--json")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert [c["case"] for c in out["not_comparable"]] == ["apply_in_arrow"] and out["cases"] == []
    (a,) = [json.loads(line) for line in (tmp_path / "x" / "A" / "results.jsonl").read_text().splitlines()]
    (b,) = [json.loads(line) for line in (tmp_path / "x" / "B" / "results.jsonl").read_text().splitlines()]
    assert a["status"] == "unavailable" and "needs Spark >= 4.0" in a["error"]["message"]
    assert b["status"] == "ok" and len(b["samples"]) == 3 and all(v > 0 for v in b["samples"])
    assert b["extra"]["ab_unpaired"] == "side A: unavailable; samples taken alone" and b["extra"]["ab_pairs"] == 0
