"""The scaling experiment: every CPU launcher really launched at 1 and 2 workers (tiny model, few batches),
the per-rank figures combined, speedup/efficiency against the 1-worker record, unavailable rows that say why,
and horovod.spark.run against a real standalone cluster from scripts/spark-cluster.sh."""
from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from support import ROOT, free_port, harness_cli, run_case

# small enough for a loaded 2-core machine; the model is the training issue's mlp unless a test says otherwise
TINY = dict(model="mlp", batch_size=16, batches=2)


def _scale(ctx, case: str, workers=(1, 2), **params) -> dict:
    """Runs case at each worker count in one run (so speedup finds its 1-worker record)."""
    out = {}
    for n in workers:
        r = run_case(ctx, f"scaling.{case}", repeats=2, warmup=1, workers=n, **{**TINY, **params})
        assert r.status == "ok", r.error
        ctx.results[r.identity] = r  # what the runner does between cases of one run
        out[n] = r
    return out


def _check(results: dict) -> None:
    for n, r in results.items():
        e = r.extra
        assert e["workers"] == n and len(e["rank_samples_per_s"]) == n
        assert len(r.samples) == 2 and len(r.warmup) == 1 and all(s > 0 for s in r.samples)
        assert r.metric == "samples_per_s" and r.better == "higher"
        assert e["samples_per_s"] == pytest.approx(r.stats["median"])
        assert e["samples_per_s_per_worker"] == pytest.approx(e["samples_per_s"] / n)
        assert 0.0 <= e["comm_share"] <= 1.0 and e["comm_allreduce_s"] > 0
        assert e["launcher_overhead_s"] >= 0 and e["launch_wall_s"] >= e["train_s"]
        assert math.isfinite(e["loss_first"]) and math.isfinite(e["loss_last"])
        assert e["oversubscribed"] is (n > (os.cpu_count() or 1))
    one, two = results[1], results[2]
    assert one.extra["speedup"] == 1.0 and one.extra["efficiency"] == 1.0
    assert two.extra["speedup"] == pytest.approx(two.stats["median"] / one.stats["median"])
    assert two.extra["efficiency"] == pytest.approx(two.extra["speedup"] / 2)


# ---- no processes ----------------------------------------------------------------------------------------------

def test_listing_and_invalid_strong_splits_never_expand():
    from harness.registry import load_all

    exp = load_all()["scaling"]
    assert set(exp.cases) == {"horovod", "horovod_spark", "torch_distributor", "tf_multiworker", "horovod_tf"}
    td = exp.cases["torch_distributor"]
    assert set(td.axes) == {"workers", "device", "model", "batch_size", "mode", "data", "batches", "local_mode",
                            "network"}
    runs = td.expand({"workers": [1, 2, 3], "batch_size": [4], "mode": ["strong"], "local_mode": [True]})
    # a global batch of 4 splits over 1 and 2 workers, not 3
    assert sorted(r.params["workers"] for r in runs) == [1, 2]
    listing = json.loads(harness_cli("list", "--json").stdout)
    axes = next(c for e in listing if e["experiment"] == "scaling" for c in e["cases"]
                if c["case"] == "horovod")["axes"]
    assert axes["device"]["choices"] == ["cpu", "gpu"] and axes["model"]["choices"] == ["mlp", "cnn", "resnet"]


def test_combine_sums_every_rank_measured_rate_and_rejects_diverged_replicas():
    from harness.experiments.scaling import combine
    from harness.workload import CheckFailed

    cfg = {"batch": 10, "batches": 5}  # 50 samples per iteration per rank

    def rank(r, times, checksum=1.0):
        return {"rank": r, "world": 2, "samples_s": times, "warmup_s": [1.0], "comm_s": [0.01], "setup_s": 0.1,
                "train_s": 1.0, "loss_first": 2.3, "loss_last": 2.0, "param_checksum": checksum, "n_params": 100,
                "threads": 1, "backend": "gloo", "device": "cpu", "host": "h"}

    # rank 1 is twice as slow: the total is 50/0.5 + 50/1.0, not rank 0's 100 x 2
    samples, warm, extra = combine([rank(1, [1.0, 1.0]), rank(0, [0.5, 0.5])], cfg, 2, 2, 1)
    assert samples == [150.0, 150.0] and warm == [100.0]
    assert extra["rank_samples_per_s"] == [100.0, 50.0]
    # one step: the ranks' medians are 0.5 / 5 and 1.0 / 5 s, so 0.15 s; the allreduce alone took 0.01 s
    assert extra["step_s"] == pytest.approx(0.15) and extra["comm_share"] == pytest.approx(0.01 / 0.15)
    with pytest.raises(CheckFailed, match="different weights"):
        combine([rank(0, [1.0, 1.0], 1.0), rank(1, [1.0, 1.0], 1.5)], cfg, 2, 2, 1)
    with pytest.raises(CheckFailed, match="ranks 0..1"):
        combine([rank(0, [1.0, 1.0])], cfg, 2, 2, 1)


def test_resnet_is_the_same_net_in_both_frameworks():
    import numpy as np
    import torch

    from harness.distributed.nets import tf_net, torch_net

    shape = (32, 32, 3)
    tnet, knet = torch_net("resnet", shape, 10), tf_net("resnet", shape, 10)
    trainable_torch = sum(p.numel() for p in tnet.parameters())
    trainable_keras = sum(int(np.prod(w.shape)) for w in knet.trainable_weights)
    assert trainable_torch == trainable_keras > 50_000
    x = np.random.default_rng(0).standard_normal((2, *shape), dtype=np.float32)  # NHWC for both
    assert tuple(tnet(torch.from_numpy(x)).shape) == (2, 10)
    assert tuple(knet(x).shape) == (2, 10)


def test_network_rates_are_unavailable_off_the_emulated_cluster(ctx, tmp_path, monkeypatch):
    """A rate runs only the Spark-hosted launchers, and only on the emulated cluster: otherwise unavailable with
    the reason and the command that starts the cluster."""
    monkeypatch.setenv("HCL_DIR", str(tmp_path / "no-cluster"))
    r = run_case(ctx, "scaling.horovod", workers=1, network="1gbit", **TINY)
    assert r.status == "unavailable" and "horovod_spark and torch_distributor" in r.error["message"]
    r = run_case(ctx, "scaling.torch_distributor", workers=1, network="1gbit", local_mode=True, **TINY)
    assert r.status == "unavailable" and "local_mode=false" in r.error["message"]
    r = run_case(ctx, "scaling.horovod_spark", workers=1, network="100mbit", **TINY)
    assert r.status == "unavailable" and "emulated-cluster.sh up 2 --rate 100mbit" in r.error["message"]
    bad = harness_cli("run", "scaling.horovod_spark", "--set", "network=fast", "--no-mlflow", "--no-report",
                      "--results", str(tmp_path / "results"))
    assert bad.returncode == 2 and "network takes loopback or a link rate like 1gbit" in bad.stderr


def test_horovod_tf_is_unavailable_with_the_keras3_reason(ctx):
    r = run_case(ctx, "scaling.horovod_tf", workers=1)
    assert r.status == "unavailable"
    assert "Keras 3" in r.error["message"] and "tf_multiworker" in r.error["message"]


def _gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return out.count("GPU ")


@pytest.mark.skipif(_gpus() > 0, reason="a GPU is present: scripts/gpu-check.sh runs the GPU rows")
@pytest.mark.parametrize("case", ["horovod", "horovod_spark", "torch_distributor", "tf_multiworker"])
def test_gpu_rows_are_unavailable_without_a_gpu(ctx, case):
    r = run_case(ctx, f"scaling.{case}", workers=1, device="gpu", **TINY)
    assert r.status == "unavailable", r.error
    assert "GPU" in r.error["message"]


# ---- real launchers on CPU -------------------------------------------------------------------------------------

def test_horovodrun_1_and_2_workers_resnet(ctx):
    results = _scale(ctx, "horovod", model="resnet", batch_size=8)
    _check(results)
    e = results[2].extra
    assert e["backend"] == "horovod" and e["global_batch"] == 16 and e["launcher"] == "horovodrun"
    assert e["n_params"] > 50_000  # the ResNet-style net, not the mlp


def test_horovod_spark_1_and_2_workers_on_the_run_session(ctx):
    results = _scale(ctx, "horovod_spark")
    _check(results)
    assert results[2].extra["master"] == "local[2]" and results[2].extra["task_slots"] == 2


def test_torch_distributor_local_mode_strong_scaling(ctx):
    results = _scale(ctx, "torch_distributor", local_mode=True, mode="strong")
    _check(results)
    # strong scaling: the global batch stays 16, split over the workers
    assert [results[n].extra["batch_per_worker"] for n in (1, 2)] == [16, 8]
    assert {results[n].extra["global_batch"] for n in (1, 2)} == {16}
    assert results[2].extra["backend"] == "torch.distributed"


@pytest.mark.slow
def test_torch_distributor_barrier_mode(ctx):
    _check(_scale(ctx, "torch_distributor", local_mode=False))


def test_tf_multiworker_1_and_2_workers(ctx):
    results = _scale(ctx, "tf_multiworker")
    _check(results)
    assert results[2].extra["backend"] == "tf.MultiWorkerMirrored"


def test_parquet_feeder_sharded_over_oversubscribed_workers(ctx):
    """Three ranks on two cores read disjoint shards of Spark-written Parquet; the record says oversubscribed."""
    cores = os.cpu_count() or 1
    n = cores + 1
    r = run_case(ctx, "scaling.horovod", repeats=1, warmup=0, workers=n, data="parquet", **TINY)
    assert r.status == "ok", r.error
    assert r.extra["oversubscribed"] is True and r.extra["workers"] == n
    assert r.extra["parquet_rows"] >= n * TINY["batch_size"] and r.extra["threads_per_worker"] == 1


def test_too_many_workers_for_the_task_slots_is_unavailable(ctx):
    r = run_case(ctx, "scaling.horovod_spark", workers=3, **TINY)
    assert r.status == "unavailable"
    assert "task slots" in r.error["message"] and "local[3]" in r.error["message"]


# ---- a real standalone cluster -------------------------------------------------------------------------------

@pytest.fixture
def standalone_cluster(tmp_path):
    """scripts/spark-cluster.sh on a free port in a tmp dir: two workers of one core; stopped afterwards."""
    port = free_port()
    env = {**os.environ, "SPARK_MASTER_PORT": str(port), "SPARK_CLUSTER_DIR": str(tmp_path / "cluster"),
           "WORKERS": "2", "WORKER_CORES": "1", "WORKER_MEMORY": "1g"}
    script = str(ROOT / "scripts" / "spark-cluster.sh")
    try:
        started = subprocess.run(["bash", script, "start"], capture_output=True, text=True, env=env,
                                 timeout=180, cwd=ROOT)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"spark://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", script, "stop"], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


@pytest.mark.slow
def test_horovod_spark_on_standalone_cluster(standalone_cluster, tmp_path):
    from test_security import ListenerWatch

    daemons = [int(f.read_text()) for f in (tmp_path / "cluster").glob("*.pid")]  # master, workers: executors
    with ListenerWatch(*daemons) as watch:
        done = harness_cli("run", "scaling.horovod_spark", "--master", standalone_cluster, "--set", "workers=1,2",
                           "--set", "model=mlp", "--set", "batch_size=16", "--set", "batches=2", "--repeats", "2",
                           "--warmup", "1", "--no-mlflow", "--no-report", "--results", str(tmp_path / "results"),
                           "--run-id", "cluster", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the task services run in the cluster's executors' Python workers: on 127.0.0.1 there too
    assert [x for x in watch.seen if not x.loopback_only] == []
    assert {x.pid for x in watch.new} - {os.getpid(), *daemons}
    records = [json.loads(line) for line in (tmp_path / "results" / "cluster" / "results.jsonl").open()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    two = next(r for r in records if r["params"]["workers"] == 2)
    assert two["extra"]["master"] == standalone_cluster and two["extra"]["task_slots"] == 2
    assert two["extra"]["speedup"] is not None and two["extra"]["efficiency"] == pytest.approx(
        two["extra"]["speedup"] / 2)
