"""The emulated cluster (scripts/emulated-cluster.sh) really built: namespaces, a bridge, rate-limited veths and
real Spark standalone daemons in them, torn down without a trace; the communication model's arithmetic with
exact numbers; and one scaling case through the cluster's rate-limited links."""
from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from support import ROOT, harness_cli

SCRIPT = ROOT / "scripts" / "emulated-cluster.sh"
PREFIX = "hclt"  # not the default `hcl`: a user's cluster on this machine is left alone
SUBNET = "10.213.8"


# ---- the model: pure arithmetic, exact numbers ------------------------------------------------------------------

def test_fit_recovers_an_exact_line_and_the_ring_link():
    from harness.distributed.commmodel import fit_line, link_from_fit

    # t = 1 ms + size * 1 us/KB: every point on the line, residuals 0
    fit = fit_line([0.0, 1000.0, 2000.0, 4000.0], [1e-3, 2e-3, 3e-3, 5e-3])
    assert fit["alpha_s"] == pytest.approx(1e-3) and fit["beta_s_per_byte"] == pytest.approx(1e-6)
    assert fit["max_abs_residual"] == pytest.approx(0.0, abs=1e-12)
    # 2 ranks: alpha = 2 L, beta = 2 / (2 B) -> L = 0.5 ms, B = 1 MB/s
    link = link_from_fit(fit["alpha_s"], fit["beta_s_per_byte"], 2)
    assert link.latency_s == pytest.approx(5e-4) and link.bandwidth_Bps == pytest.approx(1e6)
    # 4 ranks: alpha = 6 L, beta = 6 / (4 B)
    link4 = link_from_fit(6e-3, 1.5e-6, 4)
    assert link4.latency_s == pytest.approx(1e-3) and link4.bandwidth_Bps == pytest.approx(1e6)
    with pytest.raises(ValueError):
        link_from_fit(1e-3, 1e-6, 1)


def test_fit_residuals_and_a_negative_intercept():
    from harness.distributed.commmodel import fit_line

    fit = fit_line([1.0, 2.0], [1.0, 2.0])  # through the origin exactly
    assert fit["alpha_s"] == pytest.approx(0.0, abs=1e-12) and fit["beta_s_per_byte"] == pytest.approx(1.0)
    # points that would give alpha < 0 are refit through the origin (weighted by 1/t^2): beta = sum(1/t)/sum(x/t)
    fit = fit_line([1.0, 2.0], [0.5, 2.0])
    assert fit["alpha_s"] == 0.0
    beta = (1 / 0.5 * 1 + 2 / 4 * 2) / (1 / 0.25 + 4 / 4)  # sum(w x y) / sum(w x^2)
    assert fit["beta_s_per_byte"] == pytest.approx(beta)
    assert fit["residuals"] == pytest.approx([(beta - 0.5) / 0.5, (2 * beta - 2.0) / 2.0])
    with pytest.raises(ValueError):
        fit_line([1.0, 1.0], [1.0, 2.0])


def test_ring_allreduce_prediction_with_fusion_buckets():
    from harness.distributed.commmodel import Link, model_error, predict, ring_allreduce_s

    link = Link(latency_s=1e-3, bandwidth_Bps=1e8)
    assert ring_allreduce_s(1e8, 1, link) == 0.0
    # 2 ranks, 100 MB: 2 latencies + 2 * 1/2 * 1 s
    assert ring_allreduce_s(1e8, 2, link) == pytest.approx(2e-3 + 1.0)
    # 4 ranks: 6 latencies + 6/4 s; fused into 64 MiB buckets: 2 buckets -> 12 latencies
    assert ring_allreduce_s(1e8, 4, link) == pytest.approx(6e-3 + 1.5)
    assert ring_allreduce_s(1e8, 4, link, 64 * 2**20) == pytest.approx(12e-3 + 1.5)
    p = predict(0.5, 1e8, link, None, (1, 2, 4))
    assert p["step_s"] == pytest.approx([0.5, 1.502, 2.006])
    assert p["efficiency"] == pytest.approx([1.0, 0.5 / 1.502, 0.5 / 2.006])
    assert model_error(0.75, 1.0) == {"model_error": -0.25, "model_missed": False}  # exactly at the line
    assert model_error(0.3, 0.5)["model_missed"] is True


def test_link_model_from_rank_sweeps():
    from harness.experiments.scaling import link_model

    # two ranks; per repeat the slower rank's time counts, per size the median repeat; the line is 1 ms + 1 ns/byte
    def rank(scale):
        return {"sweep_s": {"1000": [0.001001 * scale, 0.001001], "1000000": [0.002, 0.002 * scale]}}

    out = link_model([rank(1.0), rank(0.5)], 2, 0.01, 1e6, 64 * 2**20, 0.5, 0.013)
    assert out["comm_sweep_s"]["1000"] == [0.001001, 0.001001]
    fit = out["link_fit"]
    assert fit["alpha_s"] == pytest.approx(1e-3) and fit["beta_s_per_byte"] == pytest.approx(1e-9)
    assert fit["latency_s"] == pytest.approx(5e-4) and fit["bandwidth_Bps"] == pytest.approx(1e9)
    # predicted: compute 10 ms + 2 x 0.5 ms + 1 MB / 1 GB/s = 12 ms -> efficiency 10/12; measured 0.5
    assert out["predicted_step_s"] == pytest.approx(0.012)
    assert out["predicted_efficiency"] == pytest.approx(10 / 12)
    assert out["model_error"] == pytest.approx((10 / 12 - 0.5) / 0.5) and out["model_missed"] is True
    assert out["prediction"]["workers"][-1] == 256
    assert link_model([rank(1.0)], 2, None, 1e6, 1, None, 1.0)["prediction_note"].startswith("no 1-worker")
    # one stray repeat (a small message delayed 10x by the scheduler) does not bend the line
    stray = {"sweep_s": {"1000": [0.001001, 0.01, 0.001001], "1000000": [0.002, 0.002, 0.002]}}
    assert link_model([stray], 2, None, 1e6, 1, None, 1.0)["link_fit"]["alpha_s"] == pytest.approx(1e-3)


def test_core_sharing_from_affinity_and_topology():
    from harness.distributed.emulated import core_of_cpu, core_sharing

    topo = {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)}  # two cores with two hyperthreads each
    out = core_sharing({0: [0], 1: [2]}, topo)  # two logical cpus of one physical core
    assert out["ranks_sharing_a_core"] == [[0, 1]] and out["physical_cores"] == 2
    assert core_sharing({0: [0], 1: [1]}, topo)["ranks_sharing_a_core"] == []
    real = core_of_cpu()
    assert len(real) == os.cpu_count()


def test_network_axis_values():
    from harness.distributed.emulated import Network, rate_bits

    assert Network("1GBIT") == "1gbit" and rate_bits("100mbit") == 100_000_000
    with pytest.raises(ValueError):
        Network("fast")


# ---- the script and a real cluster --------------------------------------------------------------------------------

def _script(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def test_bad_input_is_one_line_and_exit_2():
    for args in (["up", "two", "--rate", "1gbit"], ["up", "2", "--rate", "fast"], ["up", "2"], ["rate", "1gb"],
                 ["sideways"]):
        done = _script(*args, env=dict(os.environ), timeout=30)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "emulated-cluster:" in done.stderr


def _namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "the emulated cluster needs root (network namespaces, veth, tc)"
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`ip netns` does not work here: {e}"
    return None if done.returncode == 0 else f"`ip netns` does not work here: {done.stderr.strip()}"


def _running(pid: int) -> bool:
    """True while pid runs (an exited process waiting to be reaped by init is not running)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _ours() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _namespaces_usable()
    if why:
        pytest.skip(why)
    state = tmp_path_factory.mktemp("emulated")
    env = {**os.environ, "HCL_PREFIX": PREFIX, "HCL_SUBNET": SUBNET, "HCL_DIR": str(state), "WORKER_MEMORY": "1g"}
    if _ours():
        pytest.skip(f"namespaces {_ours()} are left over from an earlier run: HCL_PREFIX={PREFIX} "
                    f"{SCRIPT} down removes them")
    try:
        up = _script("up", "2", "--rate", "1gbit", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"env": env, "dir": state, "up": up.stdout}
    finally:
        pids = [int(p.read_text()) for p in state.glob("*.pid")]
        down = _script("down", env=env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        # `down` leaves no namespace, link or process behind
        assert _ours() == []
        assert [p for p in pids if _running(p)] == []
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, timeout=10).stdout
        assert "v-w1" not in links and "hcl0" not in links  # nothing ever made in the machine's own namespace


def test_cluster_up_registers_workers_at_their_addresses_with_the_rate(cluster):
    env = cluster["env"]
    assert f"spark://{SUBNET}.2:7077" in cluster["up"] and f"ip netns exec {PREFIX}-driver" in cluster["up"]
    state = dict(line.split("=", 1) for line in (cluster["dir"] / "state").read_text().splitlines())
    assert state["RATE"] == "1gbit" and state["WORKERS"] == f"{SUBNET}.11 {SUBNET}.12"
    master_log = (cluster["dir"] / "logs" / "master.log").read_text()
    for i in (1, 2):
        assert f"Registering worker {SUBNET}.1{i}:" in master_log
    qdisc = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-hub", "tc", "qdisc", "show"], capture_output=True,
                           text=True, timeout=10).stdout
    for host in ("master", "driver", "w1", "w2"):
        assert f"dev v-{host} root" in qdisc
    assert qdisc.count("rate 1Gbit") == 4
    inside = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-w1", "tc", "qdisc", "show", "dev", "hcl0"],
                            capture_output=True, text=True, timeout=10).stdout
    assert "tbf" in inside and "rate 1Gbit" in inside  # both directions of the link
    # nothing in the cluster listens on every interface: each daemon binds its host's address
    for ns in ("master", "w1", "w2"):
        listening = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-{ns}", "ss", "-ltnH"], capture_output=True,
                                   text=True, timeout=10).stdout.splitlines()
        assert listening, ns
        for line in listening:
            local = line.split()[3]
            assert not local.startswith(("0.0.0.0:", "*:", "[::]:")), (ns, line)
            assert SUBNET in local or "127.0.0.1" in local, (ns, line)
    # the rate of the running cluster changes in place
    done = _script("rate", "100mbit", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    qdisc = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-hub", "tc", "qdisc", "show"], capture_output=True,
                           text=True, timeout=10).stdout
    assert qdisc.count("rate 100Mbit") == 4
    assert "RATE=100mbit" in (cluster["dir"] / "state").read_text()
    _script("rate", "1gbit", env=env, timeout=60)


def test_a_second_up_is_refused(cluster):
    done = _script("up", "1", "--rate", "1gbit", env=cluster["env"], timeout=30)
    assert done.returncode == 2 and "already up" in done.stderr


@pytest.mark.slow
def test_scaling_through_the_emulated_links(cluster, tmp_path):
    """horovod_spark at 1 and 2 workers on the cluster's hosts at 1gbit: ranks on two hosts, the link fit from
    the allreduce sweep, the prediction and its error in the 2-worker record."""
    env = cluster["env"]
    results = tmp_path / "results"
    driver = f"{SUBNET}.3"
    cmd = ["ip", "netns", "exec", f"{PREFIX}-driver", "env", f"SPARK_LOCAL_IP={driver}", f"HCL_DIR={env['HCL_DIR']}",
           str(ROOT / ".venv" / "bin" / "python"), "-m", "harness", "run", "scaling.horovod_spark",
           "--master", f"spark://{SUBNET}.2:7077", "--conf", f"spark.driver.host={driver}",
           "--conf", f"spark.driver.bindAddress={driver}", "--set", "workers=1,2", "--set", "network=1gbit",
           "--set", "model=mlp", "--set", "batch_size=16", "--set", "batches=2", "--repeats", "2", "--warmup", "1",
           "--no-mlflow", "--no-report", "--results", str(results), "--run-id", "emulated"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (results / "emulated" / "results.jsonl").open()]
    assert [r["status"] for r in records] == ["ok", "ok"], [r["error"] for r in records]
    two = next(r["extra"] for r in records if r["params"]["workers"] == 2)
    assert two["link_rate"] == "1gbit" and set(two["link_rate_applied"].values()) == {"1Gbit"}
    assert two["threads_per_worker"] == 1 and "emulated cluster" in two["network"]
    fit = two["link_fit"]
    # the fitted bandwidth cannot beat the shaped 1 Gbit/s by much (tbf's bucket lets a little through at once)
    assert 0 < fit["bandwidth_gbit_s"] < 1.2 and len(fit["residuals"]) == 8  # one point per size: its median repeat
    assert math.isfinite(two["predicted_efficiency"]) and isinstance(two["model_missed"], bool)
    assert two["core_sharing"]["physical_cores"] >= 1
