"""Functions that tests run in child processes through harness.isolation."""
from harness.workload import Unavailable


def unavailable():
    raise Unavailable("raised in the child on purpose")


def petastorm_torch_epoch(spec: dict, batch_size: int) -> dict:
    """One epoch through Petastorm's torch loader rebuilt from a converter spec, in a framework process."""
    import numpy as np

    from harness.feeders import petastorm

    with petastorm.torch_loader(petastorm.from_spec(spec), batch_size, workers_count=2) as loader:
        got = [(b["features"].numpy(), b["label"].numpy()) for b in loader]
    labels = np.concatenate([y for _, y in got]) if got else np.zeros(0)
    feats = np.concatenate([x for x, _ in got]) if got else np.zeros((0, 6))
    return {"batches": len(got), "labels": labels.astype(int).tolist(),
            "features_match": bool(np.array_equal(feats, labels[:, None] * 10 + np.arange(6)[None, :]))}
