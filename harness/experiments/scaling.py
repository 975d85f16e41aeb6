"""Scaling: training throughput from 1 to N workers, CPU vs GPU, and which launcher wastes least.

Cases are launchers: `horovod` (horovodrun --gloo on lo, PyTorch), `horovod_spark` (horovod.spark.run on the
run's SparkSession: local[N] or a standalone cluster via --master), `torch_distributor` (TorchDistributor,
local_mode true/false, DDP with Gloo on CPU / NCCL on GPU), `tf_multiworker` (MultiWorkerMirroredStrategy,
TF_CONFIG on 127.0.0.1, custom loop) and `horovod_tf` (always unavailable: Horovod's TF binding and Keras 3).

Timed, inside every rank with harness.timing: `warmup` + `repeats` iterations of `batches` training steps each
(synthetic tensors reused, as in Horovod's synthetic benchmark, or `data=parquet` / `data=ipc` batches from the
Arrow / IPC feeder, sharded by rank). A sample is one iteration's total throughput: the SUM over ranks of each
rank's measured samples/s, never rank 0's rate times N. Then, apart, an allreduce of a gradient-sized buffer is
timed alone: `comm_share` = its time / one step's time (an upper bound: it ignores overlap with the backward pass).
Not timed: process start-up, imports, model build, rendezvous, data preparation (Parquet is written by Spark in
the builder and cached); the launcher's cost is reported apart as `launcher_overhead_s` = the launch call's wall
time minus the longest rank's time inside the training function.

Network: nothing a launcher starts may listen beyond loopback, and none of these libraries can be told so
(harness.distributed.loopback). horovodrun, torchrun and the TF workers run in a private loopback-only network
namespace; Python servers in the harness and in Spark's workers (horovod.spark's services, TorchDistributor's
log server) bind 127.0.0.1. Each record's `network` says which; where the machine can't make a namespace,
`listens_beyond_loopback` says what is exposed (and a warning is printed).

Network: `network=loopback` (the default) runs as above. `network=RATE` (e.g. 1gbit, 100mbit) runs the
Spark-hosted launchers (horovod_spark, torch_distributor with local_mode false) on the emulated cluster of
scripts/emulated-cluster.sh: the run's master must be that cluster's and the harness run in its driver namespace;
the case sets the cluster's link rate before it runs and records the rate tc applied. Each emulated host has one
core (threads_per_worker 1 at every worker count), ranks talk over the namespace's rate-limited veth (Gloo on
`hcl0`). Multi-worker rows then also time the allreduce alone at message sizes from 4 KB to 64 MB (the link fit:
harness.distributed.commmodel) and predict step time and efficiency for 1..256 workers from the 1-worker row's
step time and the gradient size, with the model's error at the measured point.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import uuid
from importlib import metadata, util
from pathlib import Path
from typing import Any, Callable

from .. import isolation, timing
from ..distributed import commmodel, emulated, loopback
from ..registry import experiment
from ..spec import Axis
from ..workload import CheckFailed, Measurement, SelfTimed, Unavailable

EXP = experiment("scaling", "training throughput vs workers: Horovod, TorchDistributor, TF MultiWorkerMirrored")

INPUT_SHAPE = (32, 32, 3)  # channels-last images, as harness.models takes them
CLASSES = 10
LR = 0.01
COMM_REPEATS = 5
PARQUET_ROWS = 2048
# Every rank's environment. OpenMP threads spin while waiting by default; on a shared or oversubscribed machine
# the spinning threads steal the cores the work needs (a 2-thread ResNet step measured here fell from ~110 to
# ~15 samples/s under load), so ranks wait passively. Recorded in each record's `rank_env`.
RANK_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

AXES: dict[str, Any] = {
    "workers": [1, 2],
    "device": Axis("device", ("cpu",), str, choices=("cpu", "gpu")),
    "model": Axis("model", ("resnet",), str, choices=("mlp", "cnn", "resnet")),
    "batch_size": [32],  # per worker in weak mode; the global batch in strong mode
    "mode": Axis("mode", ("weak",), str, choices=("weak", "strong")),
    "data": Axis("data", ("synthetic",), str, choices=("synthetic", "parquet", "ipc")),
    "batches": [10],  # training steps per timed iteration
    # loopback, or a link rate of the emulated cluster (scripts/emulated-cluster.sh) for the Spark-hosted launchers
    "network": Axis("network", (emulated.Network(emulated.LOOPBACK),), emulated.Network,
                    help="loopback, or an emulated cluster's link rate such as 10gbit, 1gbit, 100mbit"),
}
# the allreduce alone at each message size (4 KB .. 64 MB), on an emulated network only: the link fit's points
SWEEP_BYTES = [4096 * 4**k for k in range(8)]
SWEEP_REPEATS = 3


def _valid(p: dict) -> bool:
    if p["workers"] < 1 or p["batch_size"] < 1 or p["batches"] < 1:
        return False
    # strong scaling splits a fixed global batch evenly: every worker needs a whole, non-empty share
    return p["mode"] == "weak" or p["batch_size"] % p["workers"] == 0


def _case(name: str, extra_axes: dict | None = None, spark: bool = False):
    return EXP.case(name, {**AXES, **(extra_axes or {})}, valid=_valid, metric="samples_per_s",
                    unit="samples/s", better="higher", spark=spark)


# ---- planning: worker count, GPU cap, batch split, threads ---------------------------------------------------

def _gpu_count() -> int:
    """GPUs the driver shows (nvidia-smi), without importing a framework into the harness process."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _check_gpu_stack(framework: str) -> int:
    """Raises Unavailable unless GPUs and a CUDA build of `framework` are present; returns the GPU count."""
    gpus = _gpu_count()
    if gpus == 0:
        raise Unavailable("device=gpu: no NVIDIA GPU found (nvidia-smi -L lists none); GPU rows need a CUDA "
                          "machine, see scripts/gpu-check.sh")
    if framework == "torch":
        import torch

        if torch.version.cuda is None or not torch.cuda.is_available():
            raise Unavailable(f"device=gpu: torch {torch.__version__} has no usable CUDA (CPU wheel or driver "
                              "mismatch): install the CUDA wheel of the pinned torch version")
    else:
        names = {d.metadata["Name"].lower() for d in metadata.distributions()}
        if "tensorflow-cpu" in names and "tensorflow" not in names:
            raise Unavailable("device=gpu: tensorflow-cpu has no GPU support: install tensorflow[and-cuda] "
                              "of the pinned version instead of tensorflow-cpu")
    return gpus


def _plan(ctx, launcher: str, p: dict, framework: str) -> dict:
    """The rank configuration and the record's static figures for these params."""
    requested = p["workers"]
    cores = os.cpu_count() or 1
    info: dict[str, Any] = {"workers_requested": requested, "cores": cores, "launcher": launcher}
    if p["device"] == "gpu":
        gpus = _check_gpu_stack(framework)
        n = min(requested, gpus)  # one process per GPU
        info.update(gpus=gpus, gpu_capped=n < requested)
        if n < requested:
            info["gpu_note"] = f"workers capped at the {gpus} GPU(s) present: {n} ran, {requested} asked"
    else:
        n = requested
    batch = p["batch_size"] if p["mode"] == "weak" else p["batch_size"] // n
    if batch < 1:
        raise Unavailable(f"mode=strong: global batch {p['batch_size']} is smaller than {n} workers")
    # the same rule for every launcher, so thread counts match across rows; an emulated host has one core
    threads = 1 if p["network"] != emulated.LOOPBACK else max(1, cores // n)
    info.update(rank_env=dict(RANK_ENV), workers=n, oversubscribed=p["device"] == "cpu" and n > cores,
                threads_per_worker=threads, batch_per_worker=batch, global_batch=batch * n, model=p["model"])
    cfg = {"model": p["model"], "device": p["device"], "batch": batch, "batches": p["batches"],
           "threads": threads, "seed": ctx.seed, "input_shape": list(INPUT_SHAPE), "classes": CLASSES,
           "lr": LR, "comm_repeats": COMM_REPEATS, "data": p["data"], "rank_env": dict(RANK_ENV)}
    if p["network"] != emulated.LOOPBACK and n >= 2:
        cfg.update(sweep_bytes=SWEEP_BYTES, sweep_repeats=SWEEP_REPEATS)
    if p["data"] != "synthetic":
        from ..distributed.data import prepare

        cfg["data_path"] = str(prepare(ctx.spark, ctx.cache_dir, INPUT_SHAPE, CLASSES, PARQUET_ROWS, ctx.seed,
                                       fmt=p["data"]))
        info[f"{p['data']}_rows"] = PARQUET_ROWS
    return {"n": n, "cfg": cfg, "info": info}


def _need(module: str, fix: str) -> None:
    if util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed: {fix}")


def _need_horovod(device: str) -> None:
    _need("horovod.torch", HOROVOD_FIX)
    if device == "gpu":
        import horovod.torch as hvd

        if not hvd.nccl_built():
            raise Unavailable("device=gpu: Horovod was built without NCCL: rebuild it with "
                              "HOROVOD_GPU_OPERATIONS=NCCL scripts/build-horovod.sh .venv (scripts/gpu-check.sh does)")


# ---- combining the ranks' figures ----------------------------------------------------------------------------

def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def combine(ranks: list[dict], cfg: dict, n: int, repeats: int, warmup: int) -> tuple[list, list, dict]:
    """Per-iteration total throughput (sum of every rank's measured rate), with checks; raises CheckFailed."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    if [r["rank"] for r in ranks] != list(range(n)) or any(r["world"] != n for r in ranks):
        raise CheckFailed(f"expected figures from ranks 0..{n - 1} of a world of {n}, got "
                          f"{[(r['rank'], r['world']) for r in ranks]}")
    per_iter = cfg["batch"] * cfg["batches"]
    for r in ranks:
        if len(r["samples_s"]) != repeats or len(r["warmup_s"]) != warmup:
            raise CheckFailed(f"rank {r['rank']} measured {len(r['samples_s'])} iterations, expected {repeats}")
        for loss in (r["loss_first"], r["loss_last"]):
            if loss is not None and not math.isfinite(loss):
                raise CheckFailed(f"rank {r['rank']}: training loss is {loss} (diverged)")
    # data parallelism keeps replicas identical: differing weights mean the gradients were not exchanged
    sums = [r["param_checksum"] for r in ranks]
    if max(sums) - min(sums) > 1e-5 * max(1.0, abs(sums[0])):
        raise CheckFailed(f"ranks ended with different weights (parameter sums {sums}): no gradient exchange")
    samples = [sum(per_iter / r["samples_s"][i] for r in ranks) for i in range(repeats)]
    warm = [sum(per_iter / r["warmup_s"][i] for r in ranks) for i in range(warmup)]
    step_s = _median([_median(r["samples_s"]) / cfg["batches"] for r in ranks])
    comm_s = _median([_median(r["comm_s"]) for r in ranks])
    rank_rates = [per_iter / _median(r["samples_s"]) for r in ranks]
    extra = {
        "samples_per_s": _median(samples),
        "samples_per_s_per_worker": _median(samples) / n,
        "rank_samples_per_s": rank_rates,
        # how unevenly the ranks ran: (slowest - fastest) / median, 0 when they kept pace
        "rank_spread": (max(rank_rates) - min(rank_rates)) / _median(rank_rates),
        "step_s": step_s,
        "comm_allreduce_s": comm_s,
        "comm_share": min(1.0, comm_s / step_s) if step_s > 0 else None,
        "grad_mb": ranks[0]["n_params"] * 4 / 1e6,
        "n_params": ranks[0]["n_params"],
        "loss_first": ranks[0]["loss_first"], "loss_last": ranks[0]["loss_last"],
        "train_s": max(r["train_s"] for r in ranks), "rank_setup_s": max(r["setup_s"] for r in ranks),
        "rank_threads": ranks[0]["threads"], "backend": ranks[0]["backend"], "rank_device": ranks[0]["device"],
        "hosts": sorted({r["host"] for r in ranks}),
    }
    if all("affinity" in r for r in ranks):
        extra["core_sharing"] = emulated.core_sharing({r["rank"]: r["affinity"] for r in ranks},
                                                      emulated.core_of_cpu())
    return samples, warm, extra


def link_model(ranks: list[dict], n: int, compute_s: float | None, grad_bytes: float, bucket_bytes: float,
               measured_efficiency: float | None, measured_step_s: float) -> dict:
    """The link fit from the ranks' allreduce sweep and, given the 1-worker step time, the predicted step time and
    efficiency at 1..256 workers and the model's error at n. A repeat's time is its slowest rank's; the line is
    fitted to each size's median repeat, because single repeats of small messages on a shared machine stray by
    several times (a 4 KB allreduce measured 0.2 and 7.6 ms in one sweep) and would bend the line."""
    sweep = {}
    for key in ranks[0]["sweep_s"]:
        reps = len(ranks[0]["sweep_s"][key])
        sweep[key] = [max(r["sweep_s"][key][i] for r in ranks) for i in range(reps)]
    fit = commmodel.fit_line([float(k) for k in sweep], [statistics.median(ts) for ts in sweep.values()])
    link = commmodel.link_from_fit(fit["alpha_s"], fit["beta_s_per_byte"], n)
    out: dict[str, Any] = {"comm_sweep_s": sweep, "link_fit": {
        **fit, "ranks": n, "latency_s": link.latency_s, "bandwidth_Bps": link.bandwidth_Bps,
        "bandwidth_gbit_s": link.bandwidth_Bps * 8 / 1e9}}
    if compute_s is None:
        out["prediction_note"] = "no 1-worker step time in this run: run --set workers=1,N together"
        return out
    workers = tuple(sorted(set(commmodel.PREDICT_WORKERS) | {n}))
    pred = commmodel.predict(compute_s, grad_bytes, link, bucket_bytes, workers)
    at = workers.index(n)
    out.update(prediction=pred, predicted_step_s=pred["step_s"][at], predicted_efficiency=pred["efficiency"][at],
               step_model_error=(pred["step_s"][at] - measured_step_s) / measured_step_s)
    if measured_efficiency:
        out.update(commmodel.model_error(pred["efficiency"][at], measured_efficiency))
    return out


def _one_worker(ctx, case: str, params: dict):
    """This run's ok workers=1 record of the same launcher and other params (the reference for speedup,
    efficiency and the model's compute time), or None."""
    ref = ctx.find("scaling", case, {**params, "workers": 1})
    return ref if ref is not None and ref.status == "ok" else None


def _speedup(case: str, params: dict, n: int, median: float, ref) -> dict:
    """speedup / efficiency against `ref`, the same launcher's 1-worker record in this run (_one_worker)."""
    if params["workers"] == 1:
        return {"speedup": 1.0, "efficiency": 1.0, "reference_samples_per_s": median}
    if ref is None or not ref.stats.get("median"):
        return {"speedup": None, "efficiency": None,
                "speedup_note": f"no ok workers=1 record of scaling.{case} with the same other params in this "
                                "run: run --set workers=1,N together"}
    s = median / ref.stats["median"]
    return {"speedup": s, "efficiency": s / n, "reference_samples_per_s": ref.stats["median"]}


def _self_timed(ctx, case: str, params: dict, plan: dict, launch: Callable[[dict, float], dict]) -> SelfTimed:
    """Wraps a launcher: times the launch call, combines the ranks, adds speedup and overhead."""

    def measure(warmup: int, repeats: int, timeout_s: float) -> Measurement:
        if repeats < 1:
            raise Unavailable("scaling needs --repeats >= 1 (timed iterations per rank)")
        cfg = {**plan["cfg"], "warmup": warmup, "repeats": repeats}
        sw = timing.Stopwatch()
        out = launch(cfg, timeout_s)
        wall = sw.elapsed()
        n = plan["n"]
        samples, warm, extra = combine(out["ranks"], cfg, n, repeats, warmup)
        fn_s = out.get("fn_s") or max(r.get("fn_s", 0.0) for r in out["ranks"])
        extra.update(plan["info"])
        extra.update(launch_wall_s=wall, launcher_overhead_s=max(0.0, wall - fn_s), rank_fn_s=fn_s,
                     **out.get("launch_info", {}))
        if "listens_beyond_loopback" in extra:
            print(f"harness: warning: scaling.{case}: {extra['listens_beyond_loopback']}", file=sys.stderr)
        ref = None if params["workers"] == 1 else _one_worker(ctx, case, params)
        extra.update(_speedup(case, params, n, extra["samples_per_s"], ref))
        if cfg.get("sweep_bytes"):
            compute_s = ref.extra.get("step_s") if ref is not None else None
            extra.update(link_model(out["ranks"], n, compute_s, extra["n_params"] * 4, plan["bucket_bytes"],
                                    extra.get("efficiency"), extra["step_s"]))
            if extra.get("model_missed"):
                print(f"harness: warning: scaling.{case}: the communication model misses the measured efficiency "
                      f"by {extra['model_error']:+.0%} (flagged model_missed)", file=sys.stderr)
        return Measurement(samples=samples, warmup=warm, extra=extra)

    return SelfTimed(measure=measure)


def _in_thread(fn: Callable[[], Any], timeout_s: float, on_timeout: Callable[[], None], what: str) -> Any:
    """Runs an in-process launcher (Spark jobs, TorchDistributor) with a deadline that kills its ranks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=target, name=f"scaling-{what}", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        on_timeout()
        t.join(30)
        raise isolation.ChildTimeout(f"{what} ran past {timeout_s:.0f} s; its Spark jobs and ranks were killed")
    if "err" in box:
        raise box["err"]
    return box["out"]


def _kill_ranks(marker: str) -> None:
    """Kills this process's descendants whose command line holds `marker` (ranks a launcher left behind)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(child.cmdline()):
                child.kill()
        except psutil.Error:
            pass


@contextlib.contextmanager
def _no_signal_handlers():
    """horovod.spark.run's Gloo launcher installs SIGINT/SIGTERM handlers, which Python allows on the main
    thread only; the runner runs cases on a worker thread and handles Ctrl-C and timeouts itself (cancelling
    the Spark job, killing the ranks), so the launcher gets its shutdown event without the handlers."""
    from horovod.runner import gloo_run

    original = gloo_run.register_shutdown_event
    if threading.current_thread() is not threading.main_thread():
        gloo_run.register_shutdown_event = threading.Event
    try:
        yield
    finally:
        gloo_run.register_shutdown_event = original


@contextlib.contextmanager
def _output_on_error(log: io.StringIO):
    """A launcher that failed in-process: its captured output's tail goes into the error record."""
    try:
        yield
    except (Unavailable, CheckFailed, isolation.ChildTimeout):
        raise
    except Exception as e:
        tail = isolation.tail(log.getvalue(), 30)
        if not tail:
            raise
        raise isolation.ChildFailed(f"{type(e).__name__}: {e}\n--- launcher output ---\n{tail}") from e


def _margin(timeout_s: float) -> float:
    # stop a little before the runner's own deadline so the ranks are killed and the error says why
    return max(10.0, timeout_s - 15.0)


def _task_slots(ctx, n: int) -> int:
    slots = ctx.cores
    if n > slots:
        raise Unavailable(f"{n} workers need {n} concurrent Spark task slots; this session has {slots} "
                          f"({ctx.spark.sparkContext.master}): use --master local[{n}] or a larger cluster")
    return slots


def _loopback_only(p: dict, launcher: str) -> None:
    if p["network"] != emulated.LOOPBACK:
        raise Unavailable(f"network={p['network']}: {launcher} starts its ranks on this machine, not on Spark "
                          "executors, so it can't run on the emulated cluster's hosts: only horovod_spark and "
                          "torch_distributor (local_mode=false) take a network rate")


def _cluster(ctx, p: dict, plan: dict) -> dict | None:
    """None on loopback; else the emulated cluster at the case's rate (set now), its facts in the record.
    Unavailable (with the command that fixes it) when the run is not on that cluster."""
    rate = p["network"]
    if rate == emulated.LOOPBACK:
        return None
    sc = ctx.spark.sparkContext
    _, why = emulated.check(sc.master, sc.getConf().get("spark.driver.host"), rate)
    if why:
        raise Unavailable(why)
    state = emulated.set_rate(rate)
    plan["info"].update(link_rate=rate, link_rate_bits_per_s=emulated.rate_bits(rate),
                        link_rate_applied=state["applied"], cluster_hosts=state.get("WORKERS", "").split())
    want = emulated.rate_bits(rate)
    if not state["applied"] or any(_tc_bits(v) != want for v in state["applied"].values()):
        raise CheckFailed(f"tc shows {state['applied']} on the cluster's links, not {rate}")
    return state


def _tc_bits(shown: str) -> int | None:
    """tc's rate text (1Gbit, 100Mbit) in bits/s; None when it is not one."""
    try:
        return emulated.rate_bits(shown.lower())
    except ValueError:
        return None


def _emulated_info(state: dict) -> dict:
    return {"network": f"emulated cluster ({state['MASTER']}): ranks on its hosts' namespaces, Gloo on "
                       f"{state['IFACE']}, links {state['RATE']} (tbf, both directions)"}


# ---- the cases -----------------------------------------------------------------------------------------------

HOROVOD_FIX = "build it with scripts/build-horovod.sh .venv (PyTorch + Gloo; GPUs: HOROVOD_GPU_OPERATIONS=NCCL)"


@_case("horovod")
def horovod(ctx, **p) -> SelfTimed:
    """horovodrun -np N --gloo on loopback, PyTorch ranks."""
    _loopback_only(p, "horovodrun")
    plan = _plan(ctx, "horovodrun", p, "torch")
    _need_horovod(p["device"])
    horovodrun = Path(sys.executable).with_name("horovodrun")
    if not horovodrun.exists():
        raise Unavailable(f"horovodrun not found next to {sys.executable}: {HOROVOD_FIX}")

    def launch(cfg: dict, timeout_s: float) -> dict:
        n = plan["n"]
        work = ctx.work_dir / f"scaling-horovod-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        (work / "config.json").write_text(json.dumps(cfg))
        out = work / "ranks.json"
        cmd = [str(horovodrun), "-np", str(n), "-H", f"localhost:{n}", "--gloo", "--network-interface", "lo",
               sys.executable, "-m", "harness.distributed.torch_ranks", str(work / "config.json"), str(out)]
        env = {**RANK_ENV, "HOROVOD_GLOO_IFACE": "lo", "OMP_NUM_THREADS": str(cfg["threads"])}
        with loopback.namespace("horovodrun's Gloo rendezvous server") as (ns, network):
            try:
                isolation.run_command(ns.wrap(cmd) if ns else cmd, _margin(timeout_s), env)
            except isolation.ChildFailed:
                if out.exists() and "__raise__" in (got := json.loads(out.read_text())):
                    raise Unavailable(got["message"]) from None
                raise
        return {**json.loads(out.read_text()), "launch_info": network}

    return _self_timed(ctx, "horovod", p, plan, launch)


@_case("horovod_spark", spark=True)
def horovod_spark(ctx, **p) -> SelfTimed:
    """horovod.spark.run on the run's SparkSession (local[N] or a standalone cluster via --master)."""
    _need("horovod.spark", HOROVOD_FIX)
    plan = _plan(ctx, "horovod.spark.run", p, "torch")
    _need_horovod(p["device"])
    slots = _task_slots(ctx, plan["n"])
    plan["info"].update(task_slots=slots, master=ctx.spark.sparkContext.master)
    state = _cluster(ctx, p, plan)
    iface = state["IFACE"] if state else "lo"
    fusion = int(os.environ.get("HOROVOD_FUSION_THRESHOLD", commmodel.HOROVOD_FUSION_BYTES))
    plan["bucket_bytes"] = plan["info"]["bucket_bytes"] = fusion

    def launch(cfg: dict, timeout_s: float) -> dict:
        import horovod.spark

        from ..distributed.torch_ranks import horovod_fn

        log = io.StringIO()
        env = {**os.environ, **RANK_ENV, "HOROVOD_GLOO_IFACE": iface, "OMP_NUM_THREADS": str(cfg["threads"])}

        def go():
            with _no_signal_handlers():
                return horovod.spark.run(horovod_fn, args=(cfg,), num_proc=plan["n"], use_gloo=True, nics={iface},
                                         env=env, stdout=log, stderr=log, verbose=0,
                                         start_timeout=int(min(120, _margin(timeout_s))))

        def kill() -> None:
            ctx.spark.sparkContext.cancelAllJobs()
            _kill_ranks("horovod")

        # on the emulated cluster its services must be reachable from the other hosts: they bind inside the
        # cluster's private namespaces instead of 127.0.0.1
        servers = contextlib.nullcontext() if state else loopback.horovod_spark_on_loopback()
        with _output_on_error(log), servers:
            results = _in_thread(go, _margin(timeout_s), kill, "horovod.spark.run")
        # every rank returns the gathered figures; rank 0's copy is enough
        info = _emulated_info(state) if state else {"network": "host, servers bound to 127.0.0.1"}
        return {**results[0], "launch_info": info}

    return _self_timed(ctx, "horovod_spark", p, plan, launch)


@_case("torch_distributor", {"local_mode": [True, False]}, spark=True)
def torch_distributor(ctx, local_mode: bool, **p) -> SelfTimed:
    """pyspark.ml.torch TorchDistributor (local_mode true: torchrun on the driver; false: a barrier Spark job)."""
    plan = _plan(ctx, "TorchDistributor", p, "torch")
    sc = ctx.spark.sparkContext
    plan["info"].update(local_mode=local_mode, master=sc.master)
    if not local_mode:
        plan["info"]["task_slots"] = _task_slots(ctx, plan["n"])
    elif p["network"] != emulated.LOOPBACK:
        raise Unavailable(f"network={p['network']} needs local_mode=false: local mode runs torchrun's ranks on "
                          "the driver, not on the emulated cluster's hosts")
    state = _cluster(ctx, p, plan)
    plan["bucket_bytes"] = plan["info"]["bucket_bytes"] = commmodel.DDP_BUCKET_BYTES  # DDP's bucket_cap_mb
    if state:  # Gloo on the host namespace's rate-limited link (set before the rank imports torch)
        plan["cfg"]["rank_env"] = {**plan["cfg"]["rank_env"], "GLOO_SOCKET_IFNAME": state["IFACE"]}
    if p["device"] == "gpu":
        key = "spark.driver.resource.gpu.amount" if local_mode else "spark.task.resource.gpu.amount"
        if int(sc.getConf().get(key, "0")) < 1:
            raise Unavailable(f"TorchDistributor(use_gpu=True) needs Spark GPU scheduling: start the run with "
                              f"--conf {key}=1 and a discovery script (scripts/gpu-check.sh shows the flags)")

    def launch(cfg: dict, timeout_s: float) -> dict:
        from pyspark.ml.torch.distributor import TorchDistributor

        from ..distributed.torch_ranks import torch_distributor_fn

        dist = TorchDistributor(num_processes=plan["n"], local_mode=local_mode, use_gpu=p["device"] == "gpu")
        log = io.StringIO()

        def kill() -> None:
            sc.cancelAllJobs()
            _kill_ranks("torch_run_process_wrapper")

        if state:
            # ranks on the emulated hosts, torchrun advertising each host's address; the driver's log server must
            # be reachable from them, so it binds inside the driver's namespace
            spots = contextlib.nullcontext((None, _emulated_info(state)))
            servers = contextlib.nullcontext()
        else:
            # torchrun (and its ranks) in the namespace; the driver's log server (local_mode false) on loopback
            spots = loopback.namespace("torchrun's rendezvous store")
            servers = loopback.loopback_servers()
        with spots as (ns, network), servers:
            torchrun = loopback.torchrun_runner(ns.prefix if ns else [], None if state else loopback.LOOPBACK)

            def go():
                # torchrun's output is streamed to stdout line by line; keep it for the error message instead
                with contextlib.redirect_stdout(log):
                    # TorchDistributor.run is _run(fn, <how torchrun is run>, ...): the same call, our runner
                    return dist._run(torch_distributor_fn, torchrun, cfg)

            with _output_on_error(log):
                out = _in_thread(go, _margin(timeout_s), kill, "TorchDistributor.run")
        return {**out, "launch_info": network}

    return _self_timed(ctx, "torch_distributor", {**p, "local_mode": local_mode}, plan, launch)


@_case("tf_multiworker")
def tf_multiworker(ctx, **p) -> SelfTimed:
    """tf.distribute.MultiWorkerMirroredStrategy, one process per worker, TF_CONFIG on 127.0.0.1 ports."""
    _need("tensorflow", "install the pinned tensorflow-cpu (requirements.txt)")
    _loopback_only(p, "MultiWorkerMirroredStrategy")
    plan = _plan(ctx, "MultiWorkerMirroredStrategy", p, "tf")

    def launch(cfg: dict, timeout_s: float) -> dict:
        out_dir = ctx.work_dir / f"scaling-tf-{uuid.uuid4().hex[:8]}"
        return isolation.run_function(
            "harness.distributed.tf_ranks:launch",
            {"cfg": cfg, "workers": plan["n"], "out_dir": str(out_dir), "timeout_s": _margin(timeout_s) - 5},
            _margin(timeout_s), env={**RANK_ENV, "TF_CPP_MIN_LOG_LEVEL": "2"})

    return _self_timed(ctx, "tf_multiworker", p, plan, launch)


@_case("horovod_tf")
def horovod_tf(ctx, **p) -> SelfTimed:
    """Horovod with TensorFlow: unavailable (its TF/Keras binding does not work with Keras 3)."""
    try:
        tf_version = metadata.version("tensorflow-cpu")
    except metadata.PackageNotFoundError:
        try:
            tf_version = metadata.version("tensorflow")
        except metadata.PackageNotFoundError:
            tf_version = "not installed"
    raise Unavailable(
        f"Horovod 0.28.1's TensorFlow/Keras binding does not work with Keras 3, which TensorFlow >= 2.16 ships "
        f"(TensorFlow here: {tf_version}); Horovod is built without TensorFlow (HOROVOD_WITHOUT_TENSORFLOW=1). "
        "TensorFlow's distributed row is scaling.tf_multiworker (MultiWorkerMirroredStrategy).")
