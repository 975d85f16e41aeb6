"""TensorFlow MultiWorkerMirroredStrategy workers on loopback, with the custom training loop
(`strategy.run` inside a `tf.function`; Keras `fit` fails under this strategy with Keras 3).

`launch(cfg, workers, out_dir)` runs in a child process of the harness (harness.isolation.run_function): it
starts one worker process per rank with its TF_CONFIG (127.0.0.1 ports), waits for all, and returns every rank's
figures. TensorFlow's gRPC servers bind every interface whatever the cluster spec says, so the workers share a
private loopback-only network namespace (harness.distributed.loopback) where the machine allows one. A timeout
kills the launcher's process group, so every worker goes with it.

Timed (per worker): `warmup` + `repeats` iterations of `batches` steps (forward, loss, gradients, the strategy's
cross-worker all-reduce, optimizer update). Then, apart: an all-reduce of a gradient-sized buffer through the
strategy, timed alone, for the communication share. Not timed: TensorFlow import, cluster start-up, model build,
tracing (the first warm-up iteration includes it when warmup >= 1), the parameter checksum.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import isolation
from . import loopback


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch(cfg: dict, workers: int, out_dir: str, timeout_s: float) -> dict:
    """Starts `workers` TF processes; returns {"ranks": [...], "launch_info": {...}} (run in harness.isolation)."""
    with loopback.namespace("TensorFlow's gRPC servers") as (ns, network):
        ranks = _run_workers(cfg, workers, Path(out_dir), timeout_s, ns.wrap if ns else list)
    return {**ranks, "launch_info": network}


def _run_workers(cfg: dict, workers: int, out: Path, timeout_s: float, wrap) -> dict:
    """Runs the workers (each command through `wrap`) to the end; returns {"ranks": [...]}."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
    procs = []
    for i in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                      "task": {"type": "worker", "index": i}}),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        if cfg["device"] == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        log = open(out / f"worker{i}.log", "w")
        procs.append((subprocess.Popen(wrap([sys.executable, "-m", "harness.distributed.tf_ranks",
                                             str(out / "config.json"), str(out / f"rank{i}.json")]),
                                       stdout=log, stderr=subprocess.STDOUT, env=env), log))
    deadline = time.monotonic() + timeout_s
    failed = None
    while any(p.poll() is None for p, _ in procs) and failed is None:
        failed = next((i for i, (p, _) in enumerate(procs) if p.poll() not in (None, 0)), None)
        if time.monotonic() > deadline:
            failed = -1
        time.sleep(0.2)
    if failed is None:
        failed = next((i for i, (p, _) in enumerate(procs) if p.returncode != 0), None)
    for p, log in procs:
        if p.poll() is None:
            p.kill()  # a worker died: the others would wait for it in their collectives forever
            p.wait()
        log.close()
    if failed is not None:
        unavailable = [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]
        for r in unavailable:
            if "__raise__" in r:
                from ..workload import Unavailable

                raise Unavailable(r["message"])
        which = "timed out" if failed == -1 else f"worker {failed} exited with {procs[failed][0].returncode}"
        tail = isolation.tail((out / f"worker{max(failed, 0)}.log").read_text(), 30)
        raise RuntimeError(f"tf_multiworker: {which}; its log ends:\n{tail}")
    return {"ranks": [json.loads((out / f"rank{i}.json").read_text()) for i in range(workers)]}


def worker(cfg: dict) -> dict:
    """One MultiWorkerMirroredStrategy worker; returns its figures."""
    import numpy as np
    import tensorflow as tf

    from .. import timing
    from .nets import tf_net

    whole = timing.Stopwatch()
    tf.config.threading.set_intra_op_parallelism_threads(cfg["threads"])
    if cfg["device"] == "gpu" and not tf.config.list_physical_devices("GPU"):
        from ..workload import Unavailable

        raise Unavailable("TensorFlow sees no GPU (tensorflow-cpu, or no CUDA build): install "
                          "tensorflow[and-cuda] matching the pinned version to run tf_multiworker on GPUs")
    comm_opts = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.NCCL if cfg["device"] == "gpu"
        else tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm_opts)
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    rank, world = int(task["index"]), strategy.num_replicas_in_sync
    batch, global_batch = cfg["batch"], cfg["batch"] * world
    tf.keras.utils.set_random_seed(cfg["seed"])  # identical initial weights on every worker
    with strategy.scope():
        model = tf_net(cfg["model"], cfg["input_shape"], cfg["classes"])
        opt = tf.keras.optimizers.SGD(learning_rate=cfg["lr"], momentum=0.9)
        loss_obj = tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none")

    def dataset_fn(ctx: tf.distribute.InputContext):
        if cfg["data"] != "synthetic":
            from .data import tf_dataset

            return tf_dataset(cfg, ctx.input_pipeline_id, ctx.num_input_pipelines)
        # one reused batch, as in the PyTorch ranks: pure compute + communication
        rng = np.random.default_rng(cfg["seed"] + ctx.input_pipeline_id)
        x = rng.standard_normal((batch, *cfg["input_shape"]), dtype=np.float32)
        y = rng.integers(0, cfg["classes"], batch)
        return tf.data.Dataset.from_tensors((x, y)).repeat()

    data = iter(strategy.distribute_datasets_from_function(dataset_fn))

    def step_fn(x, y):
        with tf.GradientTape() as tape:
            per_example = loss_obj(y, model(x, training=True))
            # scaled by the global batch: the strategy's SUM over workers then gives the mean gradient
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(it):
        x, y = next(it)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step_fn, args=(x, y)), axis=None)

    losses: list[float] = []

    def iteration() -> None:
        for _ in range(cfg["batches"]):
            loss = train_step(data)
        losses.append(float(loss))  # host sync: the iteration really finished

    setup_s = whole.elapsed()
    warm, samples, _ = timing.measure(iteration, cfg["warmup"], cfg["repeats"])
    train_s = whole.elapsed() - setup_s

    n_params = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    buf = tf.ones([n_params], tf.float32)

    @tf.function
    def allreduce():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, buf)

    def probe() -> None:
        strategy.experimental_local_results(strategy.run(allreduce))[0].numpy()

    _, comm_samples, _ = timing.measure(probe, 1, cfg["comm_repeats"])
    checksum = float(sum(float(np.sum(v.numpy(), dtype=np.float64)) for v in model.trainable_variables))
    return {
        "rank": rank, "world": world, "host": os.uname().nodename, "pid": os.getpid(),
        "warmup_s": warm, "samples_s": samples, "comm_s": comm_samples, "setup_s": setup_s, "train_s": train_s,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "param_checksum": checksum, "n_params": n_params, "threads": cfg["threads"],
        "device": "gpu" if cfg["device"] == "gpu" else "cpu", "backend": "tf.MultiWorkerMirrored",
        "fn_s": whole.elapsed(),
    }


def _main(cfg_path: str, out_path: str) -> None:
    from ..workload import Unavailable

    cfg = json.loads(Path(cfg_path).read_text())
    try:
        out = worker(cfg)
    except Unavailable as e:
        Path(out_path).write_text(json.dumps({"__raise__": "Unavailable", "message": str(e)}))
        raise SystemExit(3)
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
