"""The PyTorch rank: one training loop, run under Horovod (horovodrun, horovod.spark.run) or torch.distributed
(TorchDistributor). Every rank times its own iterations with harness.timing; the figures of all ranks are
gathered (allgather) so the launcher side combines measured per-rank throughputs, never rank 0's times N.

Timed (per rank): `warmup` + `repeats` iterations of `batches` training steps (forward, loss, backward, gradient
allreduce, optimizer step) on synthetic tensors or on Parquet batches from the Arrow feeder (data loading is then
part of the step). Then, apart: an allreduce of a gradient-sized float32 buffer, timed alone, to estimate the
communication share of a step. Not timed: imports, process-group set-up, model build, parameter broadcast,
synthetic data creation, the final parameter checksum and gather.
"""
from __future__ import annotations

import os
import sys
from typing import Any


def _device(cfg: dict, local_rank: int):
    import torch

    if cfg["device"] == "gpu":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _batches(cfg: dict, rank: int, size: int, device):
    """An endless iterator of (x, y) batches for this rank."""
    import numpy as np
    import torch

    if cfg["data"] != "synthetic":
        from .data import batches

        for x, y in batches(cfg, rank, size):
            yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        return
    # Horovod's synthetic benchmark reuses one batch: pure compute + communication, no input pipeline
    rng = np.random.default_rng(cfg["seed"] + rank)
    x = torch.from_numpy(rng.standard_normal((cfg["batch"], *cfg["input_shape"]), dtype=np.float32)).to(device)
    y = torch.from_numpy(rng.integers(0, cfg["classes"], cfg["batch"])).to(device)
    while True:
        yield x, y


class _Horovod:
    name = "horovod"

    def __init__(self, cfg: dict):
        import horovod.torch as hvd

        self.hvd = hvd
        hvd.init()
        if cfg["device"] == "gpu" and not hvd.nccl_built():
            from ..workload import Unavailable

            raise Unavailable("Horovod was built without NCCL: rebuild it for GPUs with "
                              "HOROVOD_GPU_OPERATIONS=NCCL scripts/build-horovod.sh .venv")
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def wrap(self, model, opt):
        hvd = self.hvd
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(opt, root_rank=0)
        return model, hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())

    def allreduce(self, buf, name: str = "comm_probe"):
        return self.hvd.allreduce(buf, op=self.hvd.Sum, name=name)

    def gather(self, obj: Any) -> list:
        return self.hvd.allgather_object(obj)

    def close(self) -> None:
        self.hvd.shutdown()


class _TorchDist:
    name = "torch.distributed"

    def __init__(self, cfg: dict):
        import torch.distributed as dist

        self.dist = dist
        if cfg["device"] == "cpu":
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # Gloo otherwise picks the host's first interface
        dist.init_process_group("nccl" if cfg["device"] == "gpu" else "gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device_ids = None

    def wrap(self, model, opt):
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP broadcasts rank 0's parameters at construction and averages gradients in backward
        # the optimizer keeps working on the same parameter tensors, which DDP wraps without copying
        ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DDP(model, device_ids=ids), opt

    def allreduce(self, buf, name: str = ""):
        self.dist.all_reduce(buf)
        return buf

    def gather(self, obj: Any) -> list:
        out: list = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        self.dist.destroy_process_group()


def train(cfg: dict, comm) -> dict:
    """The timed loop on one rank; returns this rank's figures (times in seconds)."""
    import torch
    import torch.nn.functional as F

    from .. import timing
    from .nets import torch_net

    whole = timing.Stopwatch()
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])  # same initial weights on every rank before the broadcast, too
    device = _device(cfg, comm.local_rank)
    model = torch_net(cfg["model"], cfg["input_shape"], cfg["classes"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
    model, opt = comm.wrap(model, opt)
    data = _batches(cfg, comm.rank, comm.size, device)
    n_params = sum(p.numel() for p in model.parameters())
    losses: list[float] = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def iteration() -> None:
        for _ in range(cfg["batches"]):
            x, y = next(data)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))  # one host sync per iteration: the iteration really finished
        sync()

    model.train()
    setup_s = whole.elapsed()
    warm, samples, _ = timing.measure(iteration, cfg["warmup"], cfg["repeats"])
    train_s = whole.elapsed() - setup_s

    # the step's communication measured alone: one allreduce of a buffer the size of all gradients
    buf = torch.ones(n_params, dtype=torch.float32, device=device)

    def probe() -> None:
        comm.allreduce(buf)
        sync()

    _, comm_samples, _ = timing.measure(probe, 1, cfg["comm_repeats"])
    sweep = _sweep(cfg, comm, device, sync)
    with torch.no_grad():
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    mine = {
        "rank": comm.rank, "world": comm.size, "host": os.uname().nodename, "pid": os.getpid(),
        "warmup_s": warm, "samples_s": samples, "comm_s": comm_samples, "setup_s": setup_s, "train_s": train_s,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "param_checksum": checksum, "n_params": int(n_params), "threads": torch.get_num_threads(),
        "device": str(device), "backend": comm.name, "affinity": sorted(os.sched_getaffinity(0)),
        "sweep_s": sweep,
    }
    ranks = comm.gather(mine)
    comm.close()
    return {"ranks": ranks, "fn_s": whole.elapsed()}


def _sweep(cfg: dict, comm, device, sync) -> dict[str, list[float]]:
    """The allreduce alone at each of cfg["sweep_bytes"] message sizes (the link fit's points): {bytes: times}."""
    import torch

    from .. import timing

    out = {}
    for size in cfg.get("sweep_bytes") or []:
        buf = torch.ones(max(1, size // 4), dtype=torch.float32, device=device)

        def once() -> None:
            comm.allreduce(buf, f"sweep_{size}")
            sync()

        _, times, _ = timing.measure(once, 1, cfg.get("sweep_repeats", 3))
        out[str(size)] = times
    return out


def horovod_fn(cfg: dict) -> dict:
    """For horovod.spark.run: one rank; every rank returns the gathered figures (driver keeps rank 0's)."""
    return train(cfg, _Horovod(cfg))


def torch_distributor_fn(cfg: dict) -> dict:
    """For TorchDistributor.run: TorchDistributor returns rank 0's value, which holds every rank's figures."""
    # torchrun starts each rank with the driver's (or executor's) environment: the rank settings go in here,
    # before torch (and its OpenMP runtime) is first imported in this process
    for k, v in cfg.get("rank_env", {}).items():
        os.environ.setdefault(k, v)
    return train(cfg, _TorchDist(cfg))


def _horovodrun_main(cfg_path: str, out_path: str) -> None:
    """`python -m harness.distributed.torch_ranks CONFIG OUT` under horovodrun: rank 0 writes the figures."""
    import json

    from ..workload import Unavailable

    cfg = json.loads(open(cfg_path).read())
    try:
        out = train(cfg, _Horovod(cfg))
    except Unavailable as e:
        out = {"__raise__": "Unavailable", "message": str(e)}
        json.dump(out, open(out_path, "w"))
        raise SystemExit(3)
    if out["ranks"][0]["rank"] == 0 and int(os.environ.get("HOROVOD_RANK", "0")) == 0:
        with open(out_path, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    _horovodrun_main(sys.argv[1], sys.argv[2])
