"""Our own feeder: Spark-written Parquet -> `pyarrow.dataset` -> NumPy batches, prefetched in a background thread.

Spark writes the prepared DataFrame once (`df.write.parquet`); every epoch then reads the files with
`pyarrow.dataset` (C++ decoding, GIL released). A background thread decodes large chunks (a multiple of the
batch size) into contiguous NumPy arrays and queues them; the consumer only slices a chunk into batches, so the
per-batch cost on the training thread is a slice plus, for PyTorch, `torch.from_numpy` (no copy).

Sharding for data-parallel training: rank `r` of `world_size` reads the contiguous row range
`[r * n // world_size, (r + 1) * n // world_size)` of the files in sorted path order, so shards are disjoint
and differ by at most one row; with `equal_shards=True` (the default when world_size > 1) every rank reads
exactly `n // world_size` rows (the remainder, under world_size rows, is dropped) so all ranks run the same
number of steps and collective ops never wait on a rank that has run out of data.

Array columns (Spark `array<float>`, e.g. from `vector_to_array`) become 2-D arrays `(rows, length)`, or
`(rows, *shape)` with `shapes={"features": (H, W, C)}`; scalar columns become 1-D arrays.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

DEFAULT_CHUNK_ROWS = 65_536
_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class ArrowFeeder:
    """Batches (dicts of NumPy arrays keyed by column) from a Parquet folder, one epoch per iteration."""

    def __init__(self, path: str | Path, columns: Sequence[str], batch_size: int, *, rank: int = 0,
                 world_size: int = 1, shapes: dict[str, tuple] | None = None,
                 dtypes: dict[str, Any] | None = None, drop_last: bool = False, prefetch: int = 2,
                 chunk_rows: int | None = None, shuffle: bool = False, seed: int = 0,
                 equal_shards: bool | None = None):
        import pyarrow.dataset as ds

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1 (chunks queued ahead), got {prefetch}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no Parquet data at {path}: write it first (df.write.parquet(path))")
        self.path, self.columns, self.batch_size = path, list(columns), int(batch_size)
        self.rank, self.world_size = rank, world_size
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self.dtypes = dict(dtypes or {})
        self.drop_last, self.prefetch, self.shuffle, self.seed = drop_last, prefetch, shuffle, seed
        per_chunk = max(1, (chunk_rows or DEFAULT_CHUNK_ROWS) // self.batch_size)
        self.chunk_rows = per_chunk * self.batch_size  # chunks hold whole batches; only the last is partial
        dataset = ds.dataset(str(path), format="parquet")
        missing = [c for c in self.columns if c not in dataset.schema.names]
        if missing:
            raise ValueError(f"column(s) {missing} not in {path} (it has {dataset.schema.names})")
        # sorted paths make the row order, and so the shards, the same in every process
        self._fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
        self._frag_rows = [f.count_rows() for f in self._fragments]
        total = sum(self._frag_rows)
        if equal_shards is None:
            equal_shards = world_size > 1
        if equal_shards:
            per_rank = total // world_size
            self.start, self.stop = rank * per_rank, (rank + 1) * per_rank
        else:
            self.start, self.stop = rank * total // world_size, (rank + 1) * total // world_size
        self.total_rows = total
        self._epoch = 0

    @property
    def rows(self) -> int:
        """Rows this rank reads per epoch (before drop_last)."""
        return self.stop - self.start

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        full, rest = divmod(self.rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    # -- producer side (background thread) ------------------------------------------------------------------

    def _decoded(self) -> Iterator[dict[str, np.ndarray]]:
        """Record batches of this rank's row range, decoded to NumPy (views where Arrow allows)."""
        offset = 0
        for frag, n in zip(self._fragments, self._frag_rows):
            lo, hi = max(self.start - offset, 0), min(self.stop - offset, n)
            offset += n
            if lo >= hi:
                continue
            pos = 0
            for rb in frag.to_batches(columns=self.columns, batch_size=self.chunk_rows, use_threads=True):
                a, b = max(lo - pos, 0), min(hi - pos, rb.num_rows)
                pos += rb.num_rows
                if a >= b:
                    continue
                if a or b < rb.num_rows:
                    rb = rb.slice(a, b - a)
                yield {c: self._to_numpy(c, rb.column(c)) for c in self.columns}

    def _to_numpy(self, name: str, arr) -> np.ndarray:
        import pyarrow as pa

        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
            if arr.null_count:
                raise ValueError(f"column {name!r} has null rows; fill or drop them in Spark before feeding")
            values = arr.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slice offsets
            n = len(arr)
            shape = self.shapes.get(name) or ((values.size // n,) if n else (0,))
            out = values.reshape((n, *shape))
        else:
            out = arr.to_numpy(zero_copy_only=False)
        dtype = self.dtypes.get(name)
        return out.astype(dtype, copy=False) if dtype is not None else out

    def _chunks_raw(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Contiguous, owned chunks of `chunk_rows` rows (the last one shorter), optionally shuffled."""
        rng = np.random.default_rng(self.seed + epoch) if self.shuffle else None
        pending: list[dict[str, np.ndarray]] = []
        have = 0

        def cut(take: int) -> dict[str, np.ndarray]:
            nonlocal pending, have
            out, rest = {}, []
            for c in self.columns:
                joined = np.concatenate([p[c] for p in pending]) if len(pending) > 1 else np.array(pending[0][c])
                out[c], tail = joined[:take], joined[take:]
                rest.append((c, tail))
            left = len(rest[0][1])
            pending = [{c: t for c, t in rest}] if left else []
            have = left
            if rng is not None:
                perm = rng.permutation(take)
                out = {c: a[perm] for c, a in out.items()}
            # writable, C-contiguous: torch.from_numpy shares it without a warning or a copy
            return {c: np.ascontiguousarray(a) for c, a in out.items()}

        for part in self._decoded():
            pending.append(part)
            have += len(part[self.columns[0]])
            while have >= self.chunk_rows:
                yield cut(self.chunk_rows)
        if have:
            keep = have - have % self.batch_size if self.drop_last else have
            if keep:
                yield cut(keep)

    # -- consumer side -------------------------------------------------------------------------------------

    def chunks(self, epoch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of whole chunks (a multiple of batch_size rows each), decoded ahead in a thread."""
        if epoch is None:
            epoch, self._epoch = self._epoch, self._epoch + 1
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in self._chunks_raw(epoch):
                    while not stop.is_set():
                        try:
                            q.put(chunk, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(_END)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
                q.put(_Failed(e))

        thread = threading.Thread(target=produce, name=f"arrow-feeder-r{self.rank}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def epoch(self, epoch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of batches: dicts of NumPy arrays (views into the prefetched chunk)."""
        bs = self.batch_size
        for chunk in self.chunks(epoch):
            arrays = [(c, chunk[c]) for c in self.columns]
            n = len(arrays[0][1])
            for i in range(0, n, bs):
                yield {c: a[i:i + bs] for c, a in arrays}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.epoch()


class TorchBatches:
    """Iterable of tuples of torch tensors (one per column, in `columns` order), one epoch per iteration."""

    def __init__(self, feeder: ArrowFeeder, columns: Sequence[str] | None = None):
        self.feeder, self.columns = feeder, list(columns or feeder.columns)

    def __len__(self) -> int:
        return len(self.feeder)

    def __iter__(self):
        import torch

        cols, bs = self.columns, self.feeder.batch_size
        for chunk in self.feeder.chunks():
            # one tensor per chunk; batches are views of it, so each step costs a slice, not a copy
            tensors = [torch.from_numpy(chunk[c]) for c in cols]
            n = tensors[0].shape[0]
            for i in range(0, n, bs):
                yield tuple(t[i:i + bs] for t in tensors)


def to_torch(feeder: ArrowFeeder, columns: Sequence[str] | None = None) -> TorchBatches:
    """PyTorch adapter: iterate it once per epoch; yields `(features, label, ...)` tensors."""
    return TorchBatches(feeder, columns)


def to_tf_dataset(feeder: ArrowFeeder, columns: Sequence[str] | None = None):
    """tf.data adapter: a Dataset of tuples (one tensor per column); each iteration is one epoch.

    The Python generator hands whole prefetched chunks to TensorFlow and `rebatch` cuts them into batches
    inside tf.data, so Python runs once per chunk rather than once per batch.
    """
    import tensorflow as tf

    cols = list(columns or feeder.columns)
    probe = next(iter(_first_chunk(feeder)), None)
    if probe is None:
        raise ValueError(f"{feeder.path}: no rows for rank {feeder.rank} of {feeder.world_size}")
    signature = tuple(tf.TensorSpec(shape=(None, *probe[c].shape[1:]), dtype=tf.as_dtype(probe[c].dtype))
                      for c in cols)

    def gen():
        for chunk in feeder.chunks():
            yield tuple(chunk[c] for c in cols)

    ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
    return ds.rebatch(feeder.batch_size, drop_remainder=feeder.drop_last).prefetch(tf.data.AUTOTUNE)


def _first_chunk(feeder: ArrowFeeder):
    """The dtypes and shapes of the first batch, read without starting an epoch."""
    for part in feeder._decoded():
        yield part
        return


def profile(path: str | Path, batch_size: int = 256, columns: Sequence[str] = ("features", "label"),
            repeats: int = 7) -> list[tuple[str, float]]:
    """Where an epoch into PyTorch goes, stage by stage (cumulative; best of `repeats`, in seconds).

    The consumer is the feed cases' one: a sum over every feature and label value. The last stage is
    `feed_limit`: the same batches already in memory as tensors.
    """
    import torch

    from ..timing import measure

    f = ArrowFeeder(path, columns, batch_size)
    x_col, y_col = columns[0], columns[1]

    def decode_only():
        for frag in f._fragments:
            for _ in frag.to_batches(columns=list(columns), batch_size=f.chunk_rows):
                pass

    whole = {c: np.concatenate([p[c] for p in f._decoded()]) for c in columns}
    ready = [(torch.from_numpy(whole[x_col][i:i + batch_size].copy()),
              torch.from_numpy(whole[y_col][i:i + batch_size].copy())) for i in range(0, f.rows, batch_size)]

    def consume(batches):
        total = torch.zeros((), dtype=torch.float64)
        for x, y in batches:
            total += y.sum()
            x.sum()

    stages = [("Parquet -> Arrow record batches", decode_only),
              ("+ Arrow -> NumPy views", lambda: list(f._decoded())),
              ("+ contiguous owned chunks (copy)", lambda: list(f._chunks_raw(0))),
              ("whole epoch: thread, queue, slices, torch.from_numpy, consumer", lambda: consume(to_torch(f))),
              ("feed_limit: the same batches in memory, same consumer", lambda: consume(ready))]
    return [(name, min(measure(fn, 1, repeats)[1])) for name, fn in stages]


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m harness.feeders.arrow PARQUET_FOLDER [BATCH_SIZE]  (a training run's "
                 "RESULTS/<run_id>/work/training/<task>-<key>/arrow folder)")
    folder, bs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256
    feeder = ArrowFeeder(folder, ["features", "label"], bs)
    print(f"{feeder.rows} rows, batch {bs}")
    for name, seconds in profile(folder, bs):
        print(f"{seconds * 1000:10.2f} ms  {feeder.rows / seconds:14,.0f} rows/s  {name}")
