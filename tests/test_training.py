"""The training experiment end to end through the real runner: Spark preprocessing, framework processes, feeders."""
from __future__ import annotations

import numpy as np
import pytest
from support import DATASETS, run_case

CO2_CSV = DATASETS / "co2_emissions_canada.csv"
ZOO_CSV = DATASETS / "zoo.csv"
CO2_ROWS = 7385  # data rows in datasets/co2_emissions_canada.csv


def test_generated_co2_has_the_real_schema_and_relations():
    import pandas as pd

    from harness.data.tabular import co2_frame

    real = pd.read_csv(CO2_CSV, nrows=5)
    gen = co2_frame(3000, seed=1)
    assert list(gen.columns) == list(real.columns)
    city, hwy, comb = (gen[f"Fuel Consumption {k} (L/100 km)"] for k in ("City", "Hwy", "Comb"))
    assert (hwy < city).mean() > 0.95 and ((comb - (0.55 * city + 0.45 * hwy)).abs() <= 0.051).all()
    ratio = gen["CO2"] / comb
    by_fuel = ratio.groupby(gen["Fuel Type"]).median()
    assert by_fuel["D"] > by_fuel["X"] > by_fuel["E"]  # diesel > petrol > E85 per litre, as in the real data
    assert np.corrcoef(gen["Engine Size(L)"], city)[0, 1] > 0.7
    assert co2_frame(50, seed=1).equals(co2_frame(50, seed=1))


def test_models_have_the_same_parameter_count_in_both_frameworks():
    pytest.importorskip("tensorflow")
    import torch

    from harness.models import count_params, tf_model, torch_model

    for name, shape in (("linear", (12,)), ("mlp", (12,)), ("cnn", (16, 16, 3)), ("mlp", (8, 8, 3))):
        tm, km = torch_model(name, shape, 5), tf_model(name, shape, 5)
        assert count_params(tm) == count_params(km), name
        out = tm(torch.zeros((2, *shape)))
        assert tuple(out.shape) == (2, 5) and tuple(km(np.zeros((2, *shape), np.float32)).shape) == (2, 5)
    with pytest.raises(ValueError, match="choose one of"):
        torch_model("resnet", (3,), 1)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        tf_model("cnn", (12,), 1)


@pytest.fixture(scope="module")
def co2_ctx(tmp_path_factory, spark):
    """One run over the real CO2 CSV for this module: its preprocessing is shared by every case, as in a run."""
    import os
    from pathlib import Path

    from harness.context import RunContext

    c = RunContext(run_id="test-co2", run_dir=tmp_path_factory.mktemp("co2run"), master="local[2]",
                   data=CO2_CSV, cache_dir=Path(os.environ["HARNESS_TEST_CACHE"]))
    c._spark = spark
    return c


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("feeder", ["arrow", "petastorm", "pandas"])
def test_framework_x_feeder_one_epoch_on_real_co2(co2_ctx, framework, feeder):
    """One epoch of the linear model on the real CO2 CSV through each feeder.

    The issue's check: a linear model reaches test R^2 >= 0.95 (a least-squares fit: 0.99); one epoch at
    batch size 32 (185 Adam steps) already gets there when features and label are scaled properly.
    """
    r = run_case(co2_ctx, f"training.{framework}", task="co2", model="linear", feeder=feeder, epochs=1,
                 batch_size=32)
    assert r.status == "ok", r.error
    e = r.extra
    assert e["rows_train"] + e["rows_test"] == CO2_ROWS and e["rows_per_epoch"] == e["rows_train"]
    assert e["epochs"] == 1 and len(e["quality_series"]) == 1 and len(r.samples) == 1
    assert e["test_r2"] >= 0.95, e["quality_series"]
    assert e["reached_target"] and e["time_to_target_s"] == pytest.approx(e["train_wall_s"])
    assert e["threads"] == e["intra_op_threads"] == co2_ctx.cores
    assert e["peak_rss_mb"] > 0 and e["samples_per_s"] > 0 and e["materialize_s"] >= 0
    assert e["framework"] == framework and e["feeder"] == feeder and e["optimizer"].startswith("Adam")


def test_mllib_linear_reaches_095_r2_on_real_co2(co2_ctx):
    r = run_case(co2_ctx, "training.mllib", task="co2", model="linear")
    assert r.status == "ok", r.error
    assert r.extra["test_r2"] >= 0.95 and r.extra["reached_target"]
    assert "normal" in r.extra["solver"] and r.extra["threads"] == co2_ctx.cores
    assert r.extra["rows_train"] + r.extra["rows_test"] == CO2_ROWS


def test_mllib_cnn_and_mlp_regression_are_unavailable(ctx):
    r = run_case(ctx, "training.mllib", task="images", model="cnn")
    assert r.status == "unavailable" and "convolution" in r.error["message"]
    r = run_case(ctx, "training.mllib", task="co2", model="mlp")
    assert r.status == "unavailable" and "regressor" in r.error["message"]


def test_tabular_classification_generated_and_zoo(ctx):
    r = run_case(ctx, "training.mllib", task="tabular_cls", model="linear", rows=1500)
    assert r.status == "ok", r.error
    assert r.extra["n_outputs"] == 5 and r.extra["test_accuracy"] > 0.6  # chance is 0.2
    r = run_case(ctx, "training.torch", task="tabular_cls", model="mlp", feeder="arrow", rows=1500, epochs=2,
                 batch_size=32)
    assert r.status == "ok", r.error
    assert r.extra["test_accuracy"] > 0.5 and r.extra["params_count"] > 1000
    ctx.data = ZOO_CSV
    r = run_case(ctx, "training.mllib", task="tabular_cls", model="linear")
    assert r.status == "ok", r.error
    assert r.extra["label_column"] == "class_type" and "animal_name" in r.extra["dropped_columns"]
    assert r.extra["n_outputs"] == 7 and r.extra["test_accuracy"] > 0.6


def test_feed_cases_deliver_every_row(ctx):
    rates = {}
    for feeder in ("limit", "pandas", "arrow", "petastorm"):
        r = run_case(ctx, f"training.feed_{feeder}", framework="torch", task="co2", rows=3000, repeats=2)
        assert r.status == "ok", r.error
        assert r.extra["rows"] == r.extra["rows_train"] and len(r.samples) == 2
        rates[feeder] = r.extra["rows_per_s"]
    assert all(v > 0 for v in rates.values())


def test_csv_fitting_no_task_is_a_clear_error(ctx, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    ctx.data = bad
    r = run_case(ctx, "training.mllib", task="co2", model="linear")
    assert r.status == "error" and "fits no training task" in r.error["message"]


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_ipc_feeder_trains_and_feeds_on_real_co2(co2_ctx, framework):
    """The ipc feeder in a training run and in its feed case: every row, the feature checksum, the cold epoch."""
    r = run_case(co2_ctx, f"training.{framework}", task="co2", model="linear", feeder="ipc", epochs=1, batch_size=32)
    assert r.status == "ok", r.error
    assert r.extra["rows_per_epoch"] == r.extra["rows_train"] and r.extra["test_r2"] >= 0.95
    r = run_case(co2_ctx, "training.feed_ipc", framework=framework, task="co2", repeats=2, warmup=1)
    assert r.status == "ok", r.error
    e = r.extra
    assert e["rows"] == e["rows_train"] and e["epochs_timed"] == 3 and len(r.samples) == 2
    assert e["cold_epoch_s"] == r.warmup[0] and e["features_sumsq"] > 0 and e["materialize_s"] > 0


def test_feed_ipc_on_a_damaged_file_is_an_error(co2_ctx):
    """A short IPC file under a feed case is a failed check (`error`), never a fast wrong answer."""
    r = run_case(co2_ctx, "training.feed_ipc", framework="torch", task="co2")
    assert r.status == "ok", r.error
    part = sorted(co2_ctx.work_dir.glob("training/*/ipc/part-*.arrow"))[0]
    whole = part.read_bytes()
    try:
        part.write_bytes(whole[:-64])
        r = run_case(co2_ctx, "training.feed_ipc", framework="torch", task="co2")
        assert r.status == "error" and "short or replaced file" in r.error["message"]
    finally:
        part.write_bytes(whole)
