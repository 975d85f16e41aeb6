"""The same model architectures in PyTorch and TensorFlow/Keras, so framework comparisons are like for like.

Models (`name`):
- `linear`: one dense layer (linear regression, or softmax regression with the softmax in the loss).
- `mlp`: dense 64 -> ReLU -> dense 64 -> ReLU -> dense n_outputs.
- `cnn`: conv3x3(16, same) -> ReLU -> maxpool2 -> conv3x3(32, same) -> ReLU -> maxpool2 -> flatten ->
  dense 64 -> ReLU -> dense n_outputs.

Inputs: `input_shape` is `(features,)` for tabular data or `(H, W, C)` for images. Images are channels-last
(NHWC) in BOTH frameworks: the PyTorch model permutes to NCHW internally, so one batch layout feeds both.
Outputs are raw scores (no final activation): the losses take logits (`CrossEntropyLoss`,
`SparseCategoricalCrossentropy(from_logits=True)`) or predictions (`MSELoss` / `"mse"`).
Both frameworks keep their own default weight initialisation; parameter counts are identical
(`count_params`), which the tests check.
"""
from __future__ import annotations

from typing import Any

MODELS = ("linear", "mlp", "cnn")
HIDDEN = 64
CONV_CHANNELS = (16, 32)


def _check(name: str, input_shape: tuple) -> tuple:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    shape = tuple(int(s) for s in input_shape)
    if name == "cnn" and len(shape) != 3:
        raise ValueError(f"model 'cnn' needs an image input_shape (H, W, C), got {shape}")
    if name != "cnn" and len(shape) not in (1, 3):
        raise ValueError(f"input_shape must be (features,) or (H, W, C), got {shape}")
    return shape


def _flat(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def torch_model(name: str, input_shape: tuple, n_outputs: int):
    """A `torch.nn.Module` for `name` in linear, mlp, cnn (inputs channels-last for images)."""
    import torch
    from torch import nn

    shape = _check(name, input_shape)
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(_flat(shape), n_outputs))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(_flat(shape), HIDDEN), nn.ReLU(),
                             nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_outputs))
    h, w, c = shape
    c1, c2 = CONV_CHANNELS

    class ToNCHW(nn.Module):
        # the feeders hand NHWC batches (as TensorFlow wants them); torch convolutions want NCHW
        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x.permute(0, 3, 1, 2)

    flat = c2 * (h // 4) * (w // 4)
    return nn.Sequential(ToNCHW(), nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(flat, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_outputs))


def tf_model(name: str, input_shape: tuple, n_outputs: int):
    """A Keras model for `name` in linear, mlp, cnn, layer for layer the same as `torch_model`."""
    import keras
    from keras import layers

    shape = _check(name, input_shape)
    inputs = keras.Input(shape=shape)
    if name == "linear":
        x = layers.Flatten()(inputs)
    elif name == "mlp":
        x = layers.Flatten()(inputs)
        x = layers.Dense(HIDDEN, activation="relu")(x)
        x = layers.Dense(HIDDEN, activation="relu")(x)
    else:
        c1, c2 = CONV_CHANNELS
        x = layers.Conv2D(c1, 3, padding="same", activation="relu")(inputs)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(c2, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(HIDDEN, activation="relu")(x)
    outputs = layers.Dense(n_outputs)(x)
    return keras.Model(inputs, outputs, name=f"{name}_{n_outputs}")


def count_params(model: Any) -> int:
    """Trainable + non-trainable parameter count of a torch Module or a Keras model."""
    if hasattr(model, "count_params"):
        return int(model.count_params())
    return int(sum(p.numel() for p in model.parameters()))
