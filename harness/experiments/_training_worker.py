"""Child-process side of the training experiment: one framework (PyTorch or TensorFlow) per process.

Started by `harness.isolation.run_function` from `training.py`, so thread pools and memory never mix between
frameworks. Timing uses `harness.timing` only:
- `train`: each run builds a fresh model (seeded) and trains `epochs` epochs; the sample is the training time
  (the epochs' laps, feeding included); the test-set evaluation after each epoch is outside the laps and gives
  the quality-over-time series `[[train_s, metric], ...]` and `time_to_target_s`.
- `feed`: each sample is one epoch of batches delivered to the framework, with the same minimal consumer for
  every feeder: it reads every feature value once (a sum, the least any model does) and keeps a row count
  and a running label sum, which check that every row came exactly once.
"""
from __future__ import annotations

import resource
from typing import Any, Callable

import numpy as np

from ..timing import Stopwatch, measure
from ..workload import CheckFailed, Unavailable


def _threads(framework: str, threads: int) -> dict[str, int]:
    """Sets and returns the framework's thread pools (intra-op = threads, inter-op = threads)."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set in this process
            pass
        return {"intra_op_threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads()}
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def _import_framework(framework: str) -> None:
    try:
        if framework == "torch":
            import torch  # noqa: F401
        else:
            import tensorflow  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"{framework} cannot be imported here ({type(e).__name__}: {e})") from None


def _epochs_factory(framework: str, spec: dict[str, Any], batch_size: int, shape: tuple, threads: int):
    """Returns `epoch()` -> a context manager whose value iterates one epoch of (x, y) framework tensors."""
    import contextlib

    kind = spec["kind"]
    if kind in ("pandas", "limit"):
        from ..feeders import pandas as pf

        arrays = {"features": np.load(spec["x"]).reshape((-1, *shape)), "label": np.load(spec["y"])}
        if kind == "pandas":
            if framework == "torch":
                batches = pf.TorchBatches(arrays, batch_size)
            else:
                batches = pf.tf_dataset(arrays, batch_size)
            return lambda: contextlib.nullcontext(batches)
        # the limit: the very same batches, already framework tensors in memory; iterating is all that's left
        n = len(arrays["label"])
        if framework == "torch":
            import torch

            ready = [(torch.from_numpy(arrays["features"][i:i + batch_size].copy()),
                      torch.from_numpy(arrays["label"][i:i + batch_size].copy())) for i in range(0, n, batch_size)]
        else:
            import tensorflow as tf

            ready = [(tf.constant(arrays["features"][i:i + batch_size]), tf.constant(arrays["label"][i:i + batch_size]))
                     for i in range(0, n, batch_size)]
        return lambda: contextlib.nullcontext(ready)
    if kind == "arrow":
        from ..feeders import arrow

        feeder = arrow.ArrowFeeder(spec["path"], ["features", "label"], batch_size, shapes={"features": shape})
        if framework == "torch":
            batches = arrow.to_torch(feeder)
        else:
            batches = arrow.to_tf_dataset(feeder)
        return lambda: contextlib.nullcontext(batches)
    if kind in ("ipc", "toarrow"):  # toarrow's Table arrives in the ipc layout (harness.feeders.toarrow)
        from ..feeders import ipc

        # opened (mapped) once here, so every epoch reads the same mapping: only the first one is cold
        feeder = ipc.IpcFeeder(spec["path"], batch_size, shape=shape)
        batches = ipc.to_torch(feeder) if framework == "torch" else ipc.to_tf(feeder)
        return lambda: contextlib.nullcontext(batches)
    if kind == "petastorm":
        from ..feeders import petastorm as pst

        conv = pst.from_spec(spec["converter"])
        workers = int(spec.get("workers_count", threads))

        @contextlib.contextmanager
        def epoch():
            if framework == "torch":
                with pst.torch_loader(conv, batch_size, workers) as loader:
                    yield ((b["features"].reshape((-1, *shape)), b["label"]) for b in loader)
            else:
                import tensorflow as tf

                with pst.tf_dataset(conv, batch_size, workers) as ds:
                    yield ds.map(lambda b: (tf.reshape(b.features, (-1, *shape)), b.label))
        return epoch
    raise ValueError(f"unknown feeder kind {kind!r}")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _metric_fn(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if kind == "regression":
        def r2(pred: np.ndarray, y: np.ndarray) -> float:
            pred = pred.reshape(-1).astype(np.float64)
            y = y.reshape(-1).astype(np.float64)
            ss_res = float(((y - pred) ** 2).sum())
            ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
            return 1.0 - ss_res / ss_tot
        return r2

    def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
        return float((scores.argmax(axis=1) == y.reshape(-1)).mean())
    return accuracy


def _torch_trainer(model_name, shape, n_outputs, kind, lr, seed):
    import torch

    from ..models import count_params, torch_model

    torch.manual_seed(seed)
    model = torch_model(model_name, shape, n_outputs)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.MSELoss() if kind == "regression" else torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out.squeeze(-1), y.float()) if kind == "regression" else loss_fn(out, y.long())
        loss.backward()
        opt.step()
        return loss

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            model.eval()
            out = torch.cat([model(torch.from_numpy(x[i:i + 4096])) for i in range(0, len(x), 4096)]).numpy()
            model.train()
        return out

    return step, predict, count_params(model), "Adam"


def _tf_trainer(model_name, shape, n_outputs, kind, lr, seed):
    import keras
    import tensorflow as tf

    from ..models import count_params, tf_model

    keras.utils.set_random_seed(seed)
    model = tf_model(model_name, shape, n_outputs)
    opt = keras.optimizers.Adam(learning_rate=lr)
    if kind == "regression":
        loss_fn = keras.losses.MeanSquaredError()
    else:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            if kind == "regression":
                loss = loss_fn(tf.cast(y, tf.float32), tf.squeeze(out, -1))
            else:
                loss = loss_fn(tf.cast(y, tf.int64), out)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([model(x[i:i + 4096], training=False).numpy() for i in range(0, len(x), 4096)])

    return step, predict, count_params(model), "Adam"


def train(framework: str, feeder: dict[str, Any], model: str, kind: str, input_shape: list, n_outputs: int,
          test_x: str, test_y: str, epochs: int, batch_size: int, lr: float, threads: int, target: float | None,
          seed: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Trains warmup + repeats fresh models; returns samples (train seconds) and the extras of the last run."""
    _import_framework(framework)
    threads_info = _threads(framework, threads)
    shape = tuple(input_shape)
    tx = np.load(test_x).reshape((-1, *shape)).astype(np.float32)
    ty = np.load(test_y)
    metric = _metric_fn(kind)
    epoch_ctx = _epochs_factory(framework, feeder, batch_size, shape, threads)
    make = _torch_trainer if framework == "torch" else _tf_trainer
    runs: list[dict[str, Any]] = []

    def one_run() -> dict[str, Any]:
        step, predict, n_params, optimizer = make(model, shape, n_outputs, kind, lr, seed)
        clock = Stopwatch()
        train_s, rows, series, reached, loss = 0.0, 0, [], None, None
        for e in range(epochs):
            clock.lap()  # starts this epoch's lap; what came before (evaluation) is not training
            with epoch_ctx() as batches:
                for x, y in batches:
                    loss = step(x, y)
                    rows += int(y.shape[0])
            train_s += clock.lap()
            value = metric(predict(tx), ty)
            series.append([train_s, value])
            if reached is None and target is not None and value >= target:
                reached = train_s
        final_loss = float(loss) if loss is not None else float("nan")
        if not np.isfinite(final_loss):
            raise CheckFailed(f"{framework} training diverged: final loss {final_loss}")
        out = {"train_wall_s": train_s, "rows": rows, "series": series, "time_to_target_s": reached,
               "final_loss": final_loss, "params_count": n_params, "optimizer": optimizer}
        runs.append(out)
        return train_s

    warm = [one_run() for _ in range(warmup)]
    samples = [one_run() for _ in range(repeats)]
    last = runs[-1]
    metric_name = "r2" if kind == "regression" else "accuracy"
    rows_seen = last["rows"]
    if rows_seen == 0:
        raise CheckFailed(f"{feeder['kind']} feeder delivered no rows")
    times = [r["train_wall_s"] for r in runs[warmup:]] or [last["train_wall_s"]]
    reached = [r["time_to_target_s"] for r in runs[warmup:] if r["time_to_target_s"] is not None]
    return {
        "samples": samples, "warmup": warm,
        "extra": {
            "train_wall_s": float(np.median(times)),
            "samples_per_s": rows_seen / float(np.median(times)) if np.median(times) > 0 else None,
            "time_to_target_s": float(np.median(reached)) if len(reached) == len(times) else None,
            f"test_{metric_name}": last["series"][-1][1],
            "quality_series": [[round(t, 6), round(v, 6)] for t, v in last["series"]],
            "epochs": epochs, "rows_per_epoch": rows_seen // max(epochs, 1), "final_loss": last["final_loss"],
            "params_count": last["params_count"], "optimizer": f"{last['optimizer']}(lr={lr})",
            "peak_rss_mb": _peak_rss_mb(), "threads": threads, **threads_info,
            **({"petastorm_workers": int(feeder.get("workers_count", threads))} if feeder["kind"] == "petastorm" else {}),
        },
    }


def feed(framework: str, feeder: dict[str, Any], input_shape: list, batch_size: int, threads: int,
         expected_rows: int, expected_label_sum: float, warmup: int, repeats: int,
         expected_features_sumsq: float | None = None) -> dict[str, Any]:
    """Times whole epochs over one open feeder (the warm-up epochs first: the cold ones); checks every epoch's
    rows and label checksum, then, untimed, one more epoch's feature checksum (the sum of squares)."""
    _import_framework(framework)
    threads_info = _threads(framework, threads)
    shape = tuple(input_shape)
    epoch_ctx = _epochs_factory(framework, feeder, batch_size, shape, threads)
    if framework == "torch":
        import torch

        def one_epoch():
            rows, total = 0, torch.zeros((), dtype=torch.float64)
            with epoch_ctx() as batches:
                for x, y in batches:
                    rows += x.shape[0]
                    total += y.sum()
                    x.sum()  # reads every feature value once: the least any model does with a batch
            return rows, float(total)
    else:
        import tensorflow as tf

        def one_epoch():
            rows, total = 0, tf.zeros((), tf.float64)
            with epoch_ctx() as batches:
                for x, y in batches:
                    rows += int(x.shape[0])
                    total += tf.reduce_sum(tf.cast(y, tf.float64))
                    tf.reduce_sum(x)  # reads every feature value once, as in the PyTorch consumer
            return rows, float(total)

    epochs: list[tuple[int, float]] = []
    warm, samples, _ = measure(lambda: epochs.append(one_epoch()), warmup, repeats)
    for e, (rows, label_sum) in enumerate(epochs):
        if rows != expected_rows:
            raise CheckFailed(f"{feeder['kind']} delivered {rows} rows in epoch {e} into {framework}, expected "
                              f"{expected_rows}")
        if not np.isclose(label_sum, expected_label_sum, rtol=1e-4, atol=1e-2):
            raise CheckFailed(f"{feeder['kind']} label checksum {label_sum} != {expected_label_sum} in epoch {e}: "
                              "rows lost or repeated")
    checked = {}
    if expected_features_sumsq is not None:
        sumsq = _features_sumsq(epoch_ctx)
        if not np.isclose(sumsq, expected_features_sumsq, rtol=1e-6):
            raise CheckFailed(f"{feeder['kind']} feature checksum (sum of squares) {sumsq} != "
                              f"{expected_features_sumsq}: feature values changed on the way into {framework}")
        checked["features_sumsq"] = sumsq
    rows = expected_rows
    med = float(np.median(samples)) if samples else float("nan")
    cold = {"cold_epoch_s": warm[0], "cold_rows_per_s": rows / warm[0] if warm[0] > 0 else None} if warm else {}
    return {"samples": samples, "warmup": warm,
            "extra": {"rows": rows, "rows_per_s": rows / med if med > 0 else None, "batch_size": batch_size,
                      "batches": -(-rows // batch_size), "epochs_timed": len(epochs), **cold, **checked,
                      "peak_rss_mb": _peak_rss_mb(), "threads": threads, **threads_info}}


def _features_sumsq(epoch_ctx) -> float:
    """The sum of squares of every feature value of one epoch, in float64 (order-free; standardised features sum
    to about zero, so a plain sum would check nothing)."""
    total = 0.0
    with epoch_ctx() as batches:
        for x, _ in batches:
            v = np.asarray(x.numpy(), dtype=np.float64)
            total += float(np.vdot(v, v))
    return total
