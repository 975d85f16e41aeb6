"""The model side of the inference experiment: code that runs outside the Spark driver.

- `load_predictor(framework, path, threads)` loads a logged model once and returns `predict(x) -> scores`
  (rows x outputs, float32 in). The Spark Python workers (`predict_batch_udf`, the iterator `pandas_udf`), the
  local limit and the reference predictions all call it, so every style runs the very same model code; only
  `pyfunc_udf` goes through MLflow's own wrapper, which is the point of comparing it.
- `train_and_register` (a child process, `harness.isolation`): trains a fresh model of the training experiment's
  architecture (`harness.models`), logs it with MLflow's own flavour (`mlflow.pytorch` / `mlflow.tensorflow`),
  registers it, downloads the registered version and writes its predictions for the reference rows.
- `local_limit` (a child process): the same model's predict over the same rows in one process without Spark,
  timed with `harness.timing`.
"""
from __future__ import annotations

import os
import resource
from typing import Any, Callable

import numpy as np

from ..timing import Stopwatch, measure
from ._training_worker import _import_framework, _threads

PREDICT_CHUNK = 4096  # rows per forward call where no batch size is asked for (training, reference rows)


def pin_threads(framework: str, threads: int) -> None:
    """The framework's thread pools set to `threads` (once per process: a Spark worker may hold an earlier model)."""
    if framework == "mllib":
        return
    try:
        _threads(framework, threads)
    except RuntimeError:  # TensorFlow's pools are fixed once its runtime started in this process
        pass


def load_predictor(framework: str, path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """predict(x) -> scores (rows x outputs) of the model logged at `path` (an MLflow model folder; for MLlib the
    fitted parameters as .npz, evaluated with NumPy: MLlib models only score inside a JVM)."""
    pin_threads(framework, threads)
    if framework == "torch":
        import mlflow.pytorch
        import torch

        model = mlflow.pytorch.load_model(path)

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        return predict
    if framework == "tensorflow":
        import mlflow.tensorflow

        model = mlflow.tensorflow.load_model(path)

        def predict(x: np.ndarray) -> np.ndarray:
            return model(np.ascontiguousarray(x, dtype=np.float32), training=False).numpy()
        return predict
    if framework == "mllib":
        return mllib_forward(dict(np.load(path)))
    raise ValueError(f"unknown framework {framework!r}")


def mllib_forward(params: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """An MLlib model's scores from its fitted parameters, as its `transform` computes them in double precision:
    LinearRegression's prediction, LogisticRegression's and MultilayerPerceptronClassifier's rawPrediction
    (the MLP's hidden layers are sigmoid, its raw output is the last affine layer before the softmax)."""
    kind = str(params["kind"])
    if kind == "linear":
        w, b = params["coefficients"], float(params["intercept"])
        return lambda x: (x.reshape(len(x), -1).astype(np.float64) @ w + b)[:, None]
    if kind == "logistic":
        c, b = params["coefficient_matrix"], params["intercept_vector"]
        return lambda x: x.reshape(len(x), -1).astype(np.float64) @ c.T + b
    if kind == "mlp":
        layers = [int(n) for n in params["layers"]]
        flat = params["weights"]
        affine, at = [], 0
        for n_in, n_out in zip(layers[:-1], layers[1:]):
            # MLlib keeps each layer as an n_out x n_in matrix in column-major order, then its bias
            w = flat[at:at + n_in * n_out].reshape(n_in, n_out)
            at += n_in * n_out
            affine.append((w, flat[at:at + n_out]))
            at += n_out

        def predict(x: np.ndarray) -> np.ndarray:
            h = x.reshape(len(x), -1).astype(np.float64)
            for i, (w, b) in enumerate(affine):
                h = h @ w + b
                if i < len(affine) - 1:
                    h = 1.0 / (1.0 + np.exp(-h))
            return h
        return predict
    raise ValueError(f"unknown MLlib model kind {kind!r}")


def predict_all(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(predict(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# ---------------------------------------------------------------------------------------------- training

def _fit_torch(model_name: str, shape: tuple, n_outputs: int, kind: str, x: np.ndarray, y: np.ndarray,
               epochs: int, batch_size: int, lr: float, seed: int):
    import torch

    from ..models import torch_model

    torch.manual_seed(seed)
    net = torch_model(model_name, shape, n_outputs)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.MSELoss() if kind == "regression" else torch.nn.CrossEntropyLoss()
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).float() if kind == "regression" else torch.from_numpy(y).long()
    for _ in range(epochs):  # the rows come in the training experiment's seeded order
        for i in range(0, len(xt), batch_size):
            opt.zero_grad(set_to_none=True)
            out = net(xt[i:i + batch_size])
            loss = loss_fn(out.squeeze(-1), yt[i:i + batch_size]) if kind == "regression" \
                else loss_fn(out, yt[i:i + batch_size])
            loss.backward()
            opt.step()
    return net.eval()


def _fit_tf(model_name: str, shape: tuple, n_outputs: int, kind: str, x: np.ndarray, y: np.ndarray,
            epochs: int, batch_size: int, lr: float, seed: int):
    import keras

    from ..models import tf_model

    keras.utils.set_random_seed(seed)
    net = tf_model(model_name, shape, n_outputs)
    loss = keras.losses.MeanSquaredError() if kind == "regression" \
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    target = y.astype(np.float32) if kind == "regression" else y.astype(np.int64)
    net.fit(x, target, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return net


def _quality(kind: str, scores: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    if kind == "regression":
        pred, y = scores.reshape(-1).astype(np.float64), y.reshape(-1).astype(np.float64)
        ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
        return "test_r2", 1.0 - float(((y - pred) ** 2).sum()) / ss_tot
    return "test_accuracy", float((scores.argmax(axis=1) == y.reshape(-1)).mean())


def _requirement(package: str, version: str) -> str:
    # an explicit requirement: MLflow would otherwise infer it by loading the model in a subprocess (seconds)
    return f"{package}=={version.split('+')[0]}"


def train_and_register(framework: str, model: str, kind: str, input_shape: list, n_outputs: int, train_x: str,
                       train_y: str, test_x: str, test_y: str, pool_x: str, epochs: int, batch_size: int, lr: float,
                       seed: int, threads: int, store: dict[str, Any], name: str, tags: dict[str, str],
                       model_dir: str, ref_out: str) -> dict[str, Any]:
    """Trains, logs with the framework's MLflow flavour, registers as `name`, downloads that version to
    `model_dir` and writes its predictions for the rows of `pool_x` to `ref_out`."""
    _import_framework(framework)
    pin_threads(framework, threads)
    import mlflow
    from mlflow.models import infer_signature

    shape = tuple(input_shape)
    x = np.load(train_x).reshape((-1, *shape)).astype(np.float32)
    y = np.load(train_y)
    clock = Stopwatch()
    fit = _fit_torch if framework == "torch" else _fit_tf
    net = fit(model, shape, n_outputs, kind, x, y, epochs, batch_size, lr, seed)
    train_s = clock.lap()
    mlflow.set_tracking_uri(store["uri"])
    mlflow.set_registry_uri(store["uri"])
    with mlflow.start_run(experiment_id=experiment_id(store), run_name=name, tags=tags) as run:
        if framework == "torch":
            import mlflow.pytorch
            import torch

            # MLflow's default format (pt2, torch.export) traces the model on an example batch
            info = mlflow.pytorch.log_model(net, name="model", input_example=x[:2], registered_model_name=name,
                                            pip_requirements=[_requirement("torch", torch.__version__)])
            flavour = "mlflow.pytorch (pt2: torch.export)"
        else:
            import mlflow.tensorflow
            import tensorflow as tf

            signature = infer_signature(x[:2], net(x[:2], training=False).numpy())
            info = mlflow.tensorflow.log_model(net, name="model", signature=signature, registered_model_name=name,
                                               pip_requirements=[_requirement("tensorflow-cpu", tf.__version__)])
            flavour = "mlflow.tensorflow (Keras 3)"
        version = str(info.registered_model_version)
    log_s = clock.lap()
    uri = f"models:/{name}/{version}"
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=model_dir)
    predict = load_predictor(framework, local, threads)
    metric, value = _quality(kind, predict_all(predict, np.load(test_x).reshape((-1, *shape)), PREDICT_CHUNK),
                             np.load(test_y))
    pool = np.load(pool_x).reshape((-1, *shape))
    np.save(ref_out, predict_all(predict, pool, PREDICT_CHUNK).astype(np.float32))
    return {"model_uri": uri, "registered_model": name, "model_version": version, "local_path": str(local),
            "mlflow_run_id": run.info.run_id, "flavour": flavour, "train_s": round(train_s, 4),
            "log_register_s": round(log_s, 4), f"model_{metric}": value, "train_rows": int(len(x)),
            "train_epochs": epochs}


def experiment_id(store: dict[str, Any]) -> str:
    """The models' MLflow experiment in `store` (made on first use, its artifacts where the store says)."""
    from mlflow import MlflowClient

    client = MlflowClient(store["uri"])
    found = client.get_experiment_by_name(store["experiment"])
    if found is not None:
        return found.experiment_id
    return client.create_experiment(store["experiment"], artifact_location=store.get("artifacts"))


# ---------------------------------------------------------------------------------------------- local limit

def local_limit(framework: str, path: str, input_shape: list, pool_x: str, ref: str, rows: int, batch_size: int,
                threads: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Times predict over `rows` rows (the reference rows, cycled) in batches of `batch_size`, in this one
    process; returns the samples and the last run's checksum and largest difference from the reference."""
    if framework != "mllib":
        _import_framework(framework)
    clock = Stopwatch()
    predict = load_predictor(framework, path, threads)
    load_s = clock.elapsed()
    pool = np.load(pool_x).reshape((-1, *tuple(input_shape)))
    ids = np.arange(rows) % len(pool)
    x = np.ascontiguousarray(pool[ids])  # the scoring rows, built before the clock starts

    def run() -> np.ndarray:
        return predict_all(predict, x, batch_size)

    warm, samples, out = measure(run, warmup, repeats)
    out = np.asarray(out, dtype=np.float64).reshape(rows, -1)
    expected = np.load(ref).astype(np.float64).reshape(len(pool), -1)[ids]
    return {"samples": samples, "warmup": warm, "rows": int(len(out)), "checksum": float(out.sum()),
            "max_abs_diff": float(np.abs(out - expected).max()), "nulls": int(np.isnan(out).any(axis=1).sum()),
            "model_load_s": load_s, "peak_rss_mb": _peak_rss_mb()}
