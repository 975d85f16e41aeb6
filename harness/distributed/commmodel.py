"""The communication model that predicts data-parallel scaling on N workers from one small measurement.

Ring allreduce of S bytes over N ranks on links of bandwidth B (bytes/s) and per-message latency L (s): a
reduce-scatter and an allgather, each N-1 steps of S/N bytes, so

    t(S, N) = 2(N-1) L + 2(N-1)/N * S / B.

Measured with N ranks for several sizes, t is a line in S: t = alpha + beta * S with alpha = 2(N-1) L and
beta = 2(N-1) / (N B), so a fit of (alpha, beta) at one N gives L and B, and with them t at every N.
Frameworks fuse gradients into buckets (Horovod: HOROVOD_FUSION_THRESHOLD, 64 MiB by default; PyTorch DDP:
bucket_cap_mb, 25 MiB): each bucket is one allreduce, so a step pays the latency term once per bucket.

Step time at N (weak scaling: the same batch per worker, so the same compute per worker) is the 1-worker compute
time plus the gradient allreduce, with no overlap of the two (an upper bound on step time: frameworks overlap
the allreduce with the backward pass); efficiency(N) = step(1) / step(N).
Pure arithmetic: no framework, no clock.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MISS_THRESHOLD = 0.25  # a measured point the model misses by more than this (relative) is flagged
PREDICT_WORKERS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HOROVOD_FUSION_BYTES = 64 * 1024 * 1024
DDP_BUCKET_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Link:
    """A network's fitted parameters: per-message latency (s) and bandwidth (bytes/s)."""
    latency_s: float
    bandwidth_Bps: float


def fit_line(sizes: list[float], times: list[float]) -> dict:
    """Least-squares t = alpha + beta * size, each point weighted by 1/t^2 (relative errors: a 4 KB message's
    time counts as much as a 64 MB one's). A negative intercept is not a latency: then alpha = 0 and beta is
    refit through the origin. Returns alpha, beta and every point's relative residual (fit - measured) / measured."""
    if len(sizes) != len(times) or len(set(sizes)) < 2:
        raise ValueError("a line needs points at two or more distinct sizes")
    if any(t <= 0 for t in times):
        raise ValueError("times must be positive")
    w = [1.0 / (t * t) for t in times]
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, sizes))
    sy = sum(wi * y for wi, y in zip(w, times))
    sxx = sum(wi * x * x for wi, x in zip(w, sizes))
    sxy = sum(wi * x * y for wi, x, y in zip(w, sizes, times))
    det = sw * sxx - sx * sx
    beta = (sw * sxy - sx * sy) / det
    alpha = (sy - beta * sx) / sw
    if alpha < 0:
        alpha, beta = 0.0, sxy / sxx
    residuals = [(alpha + beta * x - y) / y for x, y in zip(sizes, times)]
    return {"alpha_s": alpha, "beta_s_per_byte": beta, "residuals": residuals,
            "max_abs_residual": max(abs(r) for r in residuals),
            "rms_residual": math.sqrt(sum(r * r for r in residuals) / len(residuals))}


def link_from_fit(alpha_s: float, beta_s_per_byte: float, n: int) -> Link:
    """The link under a ring allreduce fitted at n ranks (alpha = 2(n-1) L, beta = 2(n-1) / (n B))."""
    if n < 2:
        raise ValueError("an allreduce over one rank sends nothing: fit at 2 or more ranks")
    steps = 2 * (n - 1)
    return Link(latency_s=alpha_s / steps, bandwidth_Bps=steps / (n * beta_s_per_byte) if beta_s_per_byte > 0
                else math.inf)


def ring_allreduce_s(size_bytes: float, n: int, link: Link, bucket_bytes: float | None = None) -> float:
    """Time of a ring allreduce of size_bytes over n ranks, one latency term per fused bucket."""
    if n <= 1 or size_bytes <= 0:
        return 0.0
    buckets = max(1, math.ceil(size_bytes / bucket_bytes)) if bucket_bytes else 1
    return 2 * (n - 1) * (buckets * link.latency_s + size_bytes / (n * link.bandwidth_Bps))


def predict(compute_s: float, grad_bytes: float, link: Link, bucket_bytes: float | None = None,
            workers: tuple[int, ...] = PREDICT_WORKERS) -> dict:
    """Step time, communication time and efficiency at each worker count (lists aligned with `workers`)."""
    comm = [ring_allreduce_s(grad_bytes, n, link, bucket_bytes) for n in workers]
    step = [compute_s + c for c in comm]
    return {"workers": list(workers), "step_s": step, "comm_s": comm,
            "efficiency": [compute_s / s if s > 0 else 1.0 for s in step],
            "compute_s": compute_s, "grad_bytes": grad_bytes, "bucket_bytes": bucket_bytes, "link": asdict(link)}


def model_error(predicted: float, measured: float) -> dict:
    """(predicted - measured) / measured, and whether it misses by more than MISS_THRESHOLD."""
    err = (predicted - measured) / measured
    return {"model_error": err, "model_missed": abs(err) > MISS_THRESHOLD}
