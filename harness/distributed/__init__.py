"""Per-rank training code for the `scaling` experiment's launchers.

`nets` holds the small ResNet-style CNN (PyTorch and TensorFlow) and picks the training issue's `mlp` / `cnn`
from `harness.models`; `torch_ranks` is the PyTorch rank (Horovod via horovodrun or horovod.spark.run, and
torch.distributed under TorchDistributor); `tf_ranks` launches and runs MultiWorkerMirroredStrategy workers.
Every rank times its own iterations with `harness.timing`; the launcher side gathers all ranks' figures.
Nothing here imports a framework at module level except the rank modules, which only ranks import.
"""
