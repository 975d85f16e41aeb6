"""Models for the scaling experiment: the training issue's `mlp` / `cnn` (harness.models) plus `resnet`, a small
ResNet-style CNN defined here in PyTorch and Keras, layer for layer alike.

`resnet`: conv3x3(16) -> BN -> ReLU, then three residual stages of one basic block each (16, 32 stride 2,
64 stride 2; a block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus a 1x1 conv + BN shortcut where the shape
changes, then ReLU), global average pooling, dense n_outputs. Inputs are channels-last (H, W, C) in both
frameworks, as in harness.models, so one batch layout feeds both.
"""
from __future__ import annotations

MODELS = ("mlp", "cnn", "resnet")
STAGES = ((16, 1), (32, 2), (64, 2))  # (channels, stride) of each stage's basic block
STEM = 16


def torch_net(name: str, input_shape: tuple, n_outputs: int):
    """A torch.nn.Module for `name` (mlp, cnn, resnet)."""
    if name != "resnet":
        from ..models import torch_model

        return torch_model(name, input_shape, n_outputs)
    from torch import nn

    h, w, c = (int(s) for s in input_shape)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = (nn.Identity() if stride == 1 and cin == cout else
                          nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.short(x))

    class SmallResNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [nn.Conv2d(c, STEM, 3, 1, 1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU()], STEM
            for cout, stride in STAGES:
                layers.append(Block(cin, cout, stride))
                cin = cout
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(cin, n_outputs)

        def forward(self, x):
            # batches are NHWC (shared with TensorFlow); torch convolutions want NCHW
            # (contiguous: channels-last strides would make DDP's gradient buckets mismatch)
            x = self.features(x.permute(0, 3, 1, 2).contiguous())
            return self.head(x.mean(dim=(2, 3)))

    return SmallResNet()


def tf_net(name: str, input_shape: tuple, n_outputs: int):
    """A Keras model for `name` (mlp, cnn, resnet)."""
    if name != "resnet":
        from ..models import tf_model

        return tf_model(name, input_shape, n_outputs)
    import keras
    from keras import layers

    def bn(x):
        # torch's BatchNorm2d defaults (eps 1e-5, momentum 0.1) so both frameworks normalise alike
        return layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)

    inputs = keras.Input(shape=tuple(int(s) for s in input_shape))
    x = layers.ReLU()(bn(layers.Conv2D(STEM, 3, padding="same", use_bias=False)(inputs)))
    cin = STEM
    for cout, stride in STAGES:
        y = layers.ReLU()(bn(layers.Conv2D(cout, 3, stride, padding="same", use_bias=False)(x)))
        y = bn(layers.Conv2D(cout, 3, padding="same", use_bias=False)(y))
        if stride != 1 or cin != cout:
            x = bn(layers.Conv2D(cout, 1, stride, use_bias=False)(x))
        x = layers.ReLU()(layers.Add()([y, x]))
        cin = cout
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(n_outputs)(x), name=f"resnet_{n_outputs}")
