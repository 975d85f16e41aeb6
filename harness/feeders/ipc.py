"""The `ipc` feeder: Spark writes uncompressed Arrow IPC files once; readers memory-map them and hand out views.

Writing (`write`, in the Spark job): `mapInArrow` turns every partition into one uncompressed Arrow IPC file
`part-NNNNN.arrow` (features as `fixed_size_list<float32>[width]`, the label as Spark gives it), written under a
temporary name and renamed when complete. Each task returns its file's path, rows, bytes and checksums; the driver
checks them (every partition once, sizes on disk, the expected rows) and writes `manifest.json`. Spark 3.5's Arrow
conversion has no fixed-size arrays, so features arrive as `list<float>`; once the offsets are checked to step by
`width`, the values buffer is reinterpreted as fixed-size lists without a copy. Record batches are made large
(`spark.sql.execution.arrow.maxRecordsPerBatch` raised for the write) because a training batch that crosses a
record-batch boundary is the only one that has to be copied.

`write_table` writes a Table already in the driver (the `toarrow` feeder's `toArrow()`) in the same layout, as one
part file.

Reading (`IpcFeeder`): every file is memory-mapped once and stays mapped for the feeder's lifetime, so the first
epoch pays the page faults (the cold epoch) and later epochs read the page cache through the same mapping, with no
copy. Rank `r` of `world_size` reads the contiguous row range `[r * n // w, (r + 1) * n // w)` with `n // w` rows
for every rank (the remainder, fewer than `world_size` rows, is dropped when `world_size > 1`), so every rank runs
the same number of steps. `shuffle=True` shuffles the order of the batches (seeded per epoch); rows inside a batch
stay as written.

The mapping is read-only: NumPy views have `writeable=False`, `to_torch` tensors share the mapped pages, and an
in-place op on such a tensor (`x.add_(1)`) writes into a read-only page, so the process dies at once with SIGSEGV
(the Python line is printed by `faulthandler`, which `to_torch` enables) instead of silently corrupting the data
for later epochs. Clone a batch (`x.clone()`) before changing it in place. `to_tf` copies each batch into a
TensorFlow tensor with `tf.convert_to_tensor` (TensorFlow tensors are immutable), through a plain Python iterator:
`tf.data.Dataset.from_generator` writes into the buffers it is given, which a read-only mapping does not survive.

Data larger than memory: the mapping costs address space, not memory; pages are read from disk on first touch
and kept in the page cache while memory allows, so an epoch over more data than fits runs at the disk's read
rate (the kernel's readahead makes the sequential order of an unshuffled epoch the fast case).

Traps avoided here: `FixedSizeListArray.values` / `ListArray.values` ignore a slice's offset (`flatten()` honours
it); `MemoryMappedFile.read_at()` returns a copy; `pyarrow.feather.write_feather` compresses by default.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..workload import CheckFailed

MANIFEST = "manifest.json"
FORMAT = "harness-ipc/1"
BATCH_BYTES = 64 * 2 ** 20  # target size of one record batch when Spark writes (whole batches need no copy)
MIN_BATCH_ROWS = 10_000  # Spark's default maxRecordsPerBatch: never write smaller batches than it would
_RESULT_SCHEMA = "partition int, path string, rows long, bytes long, label_sum double"


# ---------------------------------------------------------------------------------------------- writing

def fixed_size(arr, width: int, name: str = "features"):
    """A `list<float>` column as `fixed_size_list<float32>[width]` without a copy, after checking its offsets."""
    import pyarrow as pa

    if pa.types.is_fixed_size_list(arr.type):
        if arr.type.list_size != width:
            raise ValueError(f"column {name!r} has {arr.type.list_size} values per row, expected {width}")
        return arr
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise ValueError(f"column {name!r} is {arr.type}, expected a list of floats (Spark array<float>)")
    if arr.null_count or (len(arr) and arr.flatten().null_count):
        raise ValueError(f"column {name!r} has null rows or values; fill or drop them in Spark before writing")
    offsets = arr.offsets.to_numpy()  # n + 1 offsets, slice offset honoured
    steps = np.diff(offsets)
    if len(steps) and (steps != width).any():
        bad = int(np.flatnonzero(steps != width)[0])
        raise ValueError(f"column {name!r}: row {bad} of a batch has {int(steps[bad])} values, expected {width}: "
                         "every row must have the same length")
    values = arr.flatten()  # a zero-copy slice of the values for null-free lists (`.values` would ignore offsets)
    if values.type != pa.float32():
        raise ValueError(f"column {name!r} holds {values.type}, expected float32 (cast to array<float> in Spark)")
    return pa.FixedSizeListArray.from_arrays(values, width)


def _write_partition(batches, folder: str, width: int, features: str, label: str):
    """mapInArrow body: writes one partition's rows as one IPC file, yields one row describing it."""
    import pyarrow as pa
    from pyspark import TaskContext

    task = TaskContext.get()
    part = task.partitionId()
    final = os.path.join(folder, f"part-{part:05d}.arrow")
    tmp = f"{final}.tmp-{task.attemptNumber()}-{uuid.uuid4().hex[:8]}"
    sink = writer = None
    rows, label_sum = 0, 0.0
    try:
        for rb in batches:
            if rb.num_rows == 0:
                continue
            x = fixed_size(rb.column(features), width, features)
            y = rb.column(label)
            if y.null_count:
                raise ValueError(f"column {label!r} has nulls; fill or drop them in Spark before writing")
            out = pa.RecordBatch.from_arrays([x, y], schema=pa.schema([
                pa.field(features, x.type, nullable=False), pa.field(label, y.type, nullable=False)]))
            if writer is None:
                sink = pa.OSFile(tmp, "wb")
                # uncompressed on purpose: a compressed body cannot be memory-mapped as it is
                writer = pa.ipc.new_file(sink, out.schema, options=pa.ipc.IpcWriteOptions(compression=None))
            writer.write_batch(out)
            rows += rb.num_rows
            label_sum += float(y.to_numpy(zero_copy_only=False).sum(dtype=np.float64))
        if writer is None:
            return  # an empty partition writes no file
        writer.close()
        sink.close()
        writer = sink = None
        os.replace(tmp, final)  # a reader sees the whole file or none; a retried task replaces it whole
    finally:
        if sink is not None:
            sink.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    yield pa.RecordBatch.from_pydict({"partition": [part], "path": [os.path.basename(final)], "rows": [rows],
                                      "bytes": [os.path.getsize(final)], "label_sum": [label_sum]},
                                     schema=pa.schema([("partition", pa.int32()), ("path", pa.string()),
                                                       ("rows", pa.int64()), ("bytes", pa.int64()),
                                                       ("label_sum", pa.float64())]))


def batch_rows(width: int) -> int:
    """Rows per record batch for features of `width` float32 values: about BATCH_BYTES, at least 10,000."""
    return max(MIN_BATCH_ROWS, BATCH_BYTES // (4 * max(1, width)))


@contextlib.contextmanager
def _replacing(folder: Path) -> Iterator[Path]:
    """A fresh folder beside `folder` to write into; it replaces `folder` when the block ends without an error (a
    previous write there is replaced, any other existing folder refused up front) and is removed otherwise."""
    if folder.exists() and not (folder / MANIFEST).exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} exists and is not an IPC feeder folder (no {MANIFEST}); choose an empty or "
                         "new folder")
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write(df, folder: str | Path, width: int, *, features: str = "features", label: str = "label",
          expected_rows: int | None = None, expected_label_sum: float | None = None) -> dict[str, Any]:
    """Writes `df` (`features` array<float> of `width` values, a scalar `label`) as one IPC file per partition.

    The files go to a fresh folder next to `folder`, which replaces `folder` once the driver has checked every
    task's report (and `expected_rows` / `expected_label_sum` when given: CheckFailed otherwise); a previous
    `write` there is replaced, any other existing folder is refused. `folder` must be visible to the driver and
    to the executors (local mode, or a shared mount). Returns the manifest.
    """
    from pyspark.sql import functions as F

    spark = df.sparkSession
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(batch_rows(width)))
    try:
        with _replacing(Path(folder).resolve()) as tmp:
            body = functools.partial(_write_partition, folder=str(tmp), width=int(width), features=features,
                                     label=label)
            reports = (df.select(F.col(features).cast("array<float>").alias(features), F.col(label))
                       .mapInArrow(body, _RESULT_SCHEMA).collect())
            manifest = _manifest(tmp, [r.asDict() for r in reports], width, features, label, expected_rows,
                                 expected_label_sum)
            _write_json(tmp / MANIFEST, manifest)
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
    return manifest


def write_table(table, folder: str | Path, width: int, *, features: str = "features", label: str = "label",
                expected_rows: int | None = None, expected_label_sum: float | None = None) -> dict[str, Any]:
    """Writes a driver-side pyarrow Table (`features` list<float> of `width` values, a scalar `label`) in this
    feeder's layout: one uncompressed part file and the manifest, checked like `write`'s (CheckFailed when rows or
    the label sum differ from the expected ones). Replaces a previous write at `folder`; returns the manifest."""
    import pyarrow as pa

    with _replacing(Path(folder).resolve()) as tmp:
        name, rows, label_sum = "part-00000.arrow", 0, 0.0
        if table.column(label).null_count:
            raise ValueError(f"column {label!r} has nulls; fill or drop them in Spark before writing")
        schema = writer = None
        with pa.OSFile(str(tmp / name), "wb") as sink:
            for rb in table.select([features, label]).to_batches():  # the batches toArrow() received, no copy
                if rb.num_rows == 0:
                    continue
                fx, yc = fixed_size(rb.column(features), width, features), rb.column(label)
                if schema is None:
                    schema = pa.schema([pa.field(features, fx.type, nullable=False),
                                        pa.field(label, yc.type, nullable=False)])
                    writer = pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression=None))
                writer.write_batch(pa.RecordBatch.from_arrays([fx, yc], schema=schema))
                rows += len(yc)
                label_sum += float(yc.to_numpy(zero_copy_only=False).sum(dtype=np.float64))
            if writer is not None:
                writer.close()
        reports = [] if writer is None else [{"partition": 0, "path": name, "rows": rows,
                                              "bytes": (tmp / name).stat().st_size, "label_sum": label_sum}]
        if writer is None:
            (tmp / name).unlink()
        manifest = _manifest(tmp, reports, width, features, label, expected_rows, expected_label_sum)
        _write_json(tmp / MANIFEST, manifest)
    return manifest


def _manifest(folder: Path, reports: list[dict], width: int, features: str, label: str,
              expected_rows: int | None, expected_label_sum: float | None) -> dict[str, Any]:
    """Checks the tasks' reports against the files on disk; returns the manifest (files in partition order)."""
    reports = sorted(reports, key=lambda r: r["partition"])
    parts = [r["partition"] for r in reports]
    if len(set(parts)) != len(parts):
        raise CheckFailed(f"IPC write: partitions reported more than once: {parts}")
    for r in reports:
        path = folder / r["path"]
        if not path.is_file() or path.stat().st_size != r["bytes"]:
            size = path.stat().st_size if path.is_file() else "missing"
            raise CheckFailed(f"IPC write: {path} is {size} bytes, its task reported {r['bytes']}")
    rows = sum(r["rows"] for r in reports)
    if expected_rows is not None and rows != expected_rows:
        raise CheckFailed(f"IPC write: the tasks wrote {rows} rows, the DataFrame has {expected_rows}")
    label_sum = sum(r["label_sum"] for r in reports)
    if expected_label_sum is not None and not np.isclose(label_sum, expected_label_sum, rtol=1e-9, atol=1e-6):
        raise CheckFailed(f"IPC write: the tasks' label sum is {label_sum}, the DataFrame's {expected_label_sum}")
    for leftover in folder.glob("*.tmp-*"):  # a task attempt killed before its cleanup
        leftover.unlink()
    stray = sorted({p.name for p in folder.iterdir()} - {r["path"] for r in reports})
    if stray:
        raise CheckFailed(f"IPC write: {folder} holds files no task reported: {stray}")
    return {"format": FORMAT, "features": features, "label": label, "width": int(width), "rows": rows,
            "label_sum": label_sum,
            "files": [{k: r[k] for k in ("path", "rows", "bytes", "label_sum")} for r in reports]}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's manifest, checked for shape (CheckFailed when it is damaged)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no IPC feeder data at {folder} ({MANIFEST} missing): write it first "
                                "(harness.feeders.ipc.write)")
    try:
        m = json.loads(path.read_text())
        ok = m["format"] == FORMAT and int(m["width"]) > 0 and isinstance(m["files"], list) and all(
            isinstance(f["path"], str) and "/" not in f["path"] and int(f["rows"]) >= 0 and int(f["bytes"]) > 0
            for f in m["files"]) and sum(int(f["rows"]) for f in m["files"]) == int(m["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckFailed(f"{path} is damaged ({type(e).__name__}: {e}); write the data again") from None
    if not ok:
        raise CheckFailed(f"{path} is damaged (not a {FORMAT} manifest, or its row counts disagree); "
                          "write the data again")
    return m


# ---------------------------------------------------------------------------------------------- reading

class IpcFeeder:
    """Batches `(features, label)` of read-only NumPy views into memory-mapped IPC files; one epoch per iteration.

    `shape` reshapes each row's features (e.g. `(H, W, C)`); the default is `(width,)`.
    """

    def __init__(self, folder: str | Path, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, shape: Sequence[int] | None = None):
        import pyarrow as pa

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.folder = Path(folder)
        self.manifest = m = read_manifest(self.folder)
        self.batch_size, self.rank, self.world_size = int(batch_size), rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        width = int(m["width"])
        self.shape = tuple(shape) if shape else (width,)
        if int(np.prod(self.shape)) != width:
            raise ValueError(f"shape {self.shape} does not hold the {width} feature values per row of {folder}")
        self._maps = []  # kept open for the feeder's lifetime: re-mapping per epoch costs page faults again
        self.record_batches: list[tuple[np.ndarray, np.ndarray]] = []
        for entry in m["files"]:
            path = self.folder / entry["path"]
            size = path.stat().st_size if path.is_file() else None
            if size != entry["bytes"]:
                raise CheckFailed(f"{path} is {'missing' if size is None else f'{size} bytes'}, the manifest says "
                                  f"{entry['bytes']} bytes: a short or replaced file; write the data again")
            try:
                mapped = pa.memory_map(str(path), "r")
                reader = pa.ipc.open_file(mapped)
                batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            except (pa.ArrowInvalid, OSError) as e:
                raise CheckFailed(f"{path} is not a readable Arrow IPC file ({e}); write the data again") from None
            self._maps.append(mapped)
            rows, label_sum = 0, 0.0
            for rb in batches:
                x, y = rb.column(m["features"]), rb.column(m["label"])
                if not (pa.types.is_fixed_size_list(x.type) and x.type.list_size == width
                        and x.type.value_type == pa.float32()):
                    raise CheckFailed(f"{path}: features are {x.type}, the manifest says fixed_size_list<float>"
                                      f"[{width}]")
                # zero-copy, read-only views of the mapped pages (flatten() honours offsets, .values does not)
                xs = x.flatten().to_numpy(zero_copy_only=True).reshape((rb.num_rows, *self.shape))
                ys = y.to_numpy(zero_copy_only=True)
                self.record_batches.append((xs, ys))
                rows += rb.num_rows
                label_sum += float(ys.sum(dtype=np.float64))
            if rows != entry["rows"] or not np.isclose(label_sum, entry["label_sum"], rtol=1e-9, atol=1e-6):
                raise CheckFailed(f"{path}: {rows} rows with label sum {label_sum}, the manifest says "
                                  f"{entry['rows']} rows with {entry['label_sum']}; write the data again")
        self.total_rows = sum(len(ys) for _, ys in self.record_batches)
        per_rank = self.total_rows // world_size if world_size > 1 else self.total_rows
        self.start, self.stop = rank * per_rank, (rank + 1) * per_rank
        self._plan = self._batch_plan()
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None  # made on first use, kept
        self._epoch = 0

    @property
    def rows(self) -> int:
        """Rows this rank reads per epoch (before drop_last)."""
        return self.stop - self.start

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self._plan)

    def _batch_plan(self) -> list[tuple[tuple[int, int, int], ...]]:
        """Each batch as its segments `(record_batch, lo, hi)`; more than one only across a record-batch boundary."""
        starts = np.cumsum([0] + [len(ys) for _, ys in self.record_batches])
        bs = self.batch_size
        stop = self.stop - (self.rows % bs if self.drop_last else 0)
        plan = []
        for lo in range(self.start, stop, bs):
            hi, segments = min(lo + bs, stop), []
            i = int(np.searchsorted(starts, lo, side="right")) - 1
            while lo < hi:
                end = min(hi, int(starts[i + 1]))
                segments.append((i, lo - int(starts[i]), end - int(starts[i])))
                lo, i = end, i + 1
            plan.append(tuple(segments))
        return plan

    def batch_order(self, epoch: int | None = None) -> range | np.ndarray:
        """This epoch's batch indices: in order, or shuffled by (seed, epoch) with `shuffle`; counts epochs if None."""
        if epoch is None:
            epoch, self._epoch = self._epoch, self._epoch + 1
        if not self.shuffle:
            return range(len(self._plan))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self._plan))

    def epoch(self, epoch: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of `(features, label)` NumPy batches: read-only views, or a copy where a batch crosses files
        or record batches."""
        if self._views is None:
            self._views = self.batches(self.record_batches, np.concatenate)
        return _in_order(self._views, self.batch_order(epoch))

    def batches(self, arrays: list[tuple[Any, Any]], cat) -> list[tuple[Any, Any]]:
        """Every batch of the plan cut from per-record-batch `arrays` (views; `cat` joins a crossing batch)."""
        return [_batch(segments, arrays, cat) for segments in self._plan]

    def __iter__(self):
        return self.epoch()

    def close(self) -> None:
        """Unmaps the files (views handed out keep their pages mapped until they are freed)."""
        self.record_batches, self._views = [], None
        for m in self._maps:
            m.close()
        self._maps = []


def _in_order(batches: list, order: range | np.ndarray) -> Iterator:
    return iter(batches) if isinstance(order, range) else (batches[i] for i in order)


def _batch(segments, arrays: list[tuple[Any, Any]], cat) -> tuple[Any, Any]:
    """One batch `(x, y)`: a slice of one record batch's arrays, or `cat` (a copy) of the segments it spans."""
    if len(segments) == 1:
        i, lo, hi = segments[0]
        x, y = arrays[i]
        return x[lo:hi], y[lo:hi]
    return (cat([arrays[i][0][lo:hi] for i, lo, hi in segments]),
            cat([arrays[i][1][lo:hi] for i, lo, hi in segments]))


class TorchBatches:
    """Iterable of `(features, label)` torch tensors sharing the mapped pages (read-only!); one epoch per iteration."""

    def __init__(self, feeder: IpcFeeder):
        import faulthandler
        import warnings

        import torch

        if not faulthandler.is_enabled():
            faulthandler.enable()  # a write into the read-only mapping (SIGSEGV) then names its Python line
        self.feeder = feeder
        with warnings.catch_warnings():
            # torch warns that writing a non-writable array is undefined; here it is defined: SIGSEGV (docstring)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in feeder.record_batches]
        # every batch made once for the feeder's lifetime: views of the mapped pages (a few hundred bytes each;
        # only a batch crossing a record batch is a copy), so an epoch costs what iterating a list costs
        self.batches = feeder.batches(tensors, torch.cat)

    def __len__(self) -> int:
        return len(self.feeder)

    def __iter__(self):
        return _in_order(self.batches, self.feeder.batch_order())


def to_torch(feeder: IpcFeeder) -> TorchBatches:
    """PyTorch adapter: iterate it once per epoch; yields `(features, label)` tensors (read-only, see above)."""
    return TorchBatches(feeder)


class TfBatches:
    """Iterable of `(features, label)` TensorFlow tensors, one `tf.convert_to_tensor` (a copy) per batch."""

    def __init__(self, feeder: IpcFeeder):
        import tensorflow as tf

        self.feeder, self._convert = feeder, tf.convert_to_tensor

    def __len__(self) -> int:
        return len(self.feeder)

    def __iter__(self):
        convert = self._convert
        for x, y in self.feeder.epoch():
            yield convert(x), convert(y)


def to_tf(feeder: IpcFeeder) -> TfBatches:
    """TensorFlow adapter: a plain iterator (not tf.data: `from_generator` writes into the buffers it is given)."""
    return TfBatches(feeder)


def to_tf_dataset(feeder: IpcFeeder):
    """A repeatable `tf.data.Dataset` for APIs that need one (distribution strategies): each batch is copied
    before `from_generator` sees it, since it writes into the buffers it is given. Slower than `to_tf`."""
    import tensorflow as tf

    if not feeder.record_batches:
        raise ValueError(f"{feeder.folder} holds no rows")
    x0, y0 = feeder.record_batches[0]
    signature = (tf.TensorSpec((None, *x0.shape[1:]), tf.as_dtype(x0.dtype)),
                 tf.TensorSpec((None,), tf.as_dtype(y0.dtype)))

    def gen():
        for x, y in feeder.epoch():
            yield np.array(x), np.array(y)

    return tf.data.Dataset.from_generator(gen, output_signature=signature)


def profile(folder: str | Path, batch_size: int = 256, repeats: int = 7,
            drop_caches: bool = False) -> list[tuple[str, float]]:
    """Where an epoch into PyTorch goes (seconds; warm stages best of `repeats`), with the feed cases' consumer.

    `drop_caches` (root only) empties the page cache first, so opening and the first epoch read from disk.
    """
    import torch

    from ..timing import clock, measure

    def consume(batches) -> None:
        total = torch.zeros((), dtype=torch.float64)
        for x, y in batches:
            total += y.sum()
            x.sum()

    stages = []
    if drop_caches:
        from ..experiments.ingestion import drop_page_cache

        drop_page_cache()
    where = "disk, page cache dropped" if drop_caches else "page cache"
    t0 = clock()
    batches = to_torch(IpcFeeder(folder, batch_size))
    stages.append((f"open: map the files, check manifest and label sums ({where})", clock() - t0))
    t0 = clock()
    consume(batches)
    stages.append((f"first epoch: page faults ({where})", clock() - t0))
    stages.append(("warm epoch: views of the kept mapping, consumer", min(measure(lambda: consume(batches), 1,
                                                                                  repeats)[1])))
    ready = [(x.clone(), y.clone()) for x, y in batches]
    stages.append(("feed_limit: the same batches in memory, same consumer",
                   min(measure(lambda: consume(ready), 1, repeats)[1])))
    return stages


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m harness.feeders.ipc IPC_FOLDER [BATCH_SIZE] [--drop-caches]  (a training run's "
                 "RESULTS/<run_id>/work/training/<task>-<key>/ipc folder; --drop-caches needs root)")
    args = [a for a in sys.argv[1:] if a != "--drop-caches"]
    bs = int(args[1]) if len(args) > 1 else 256
    f = IpcFeeder(args[0], bs)
    print(f"{f.rows} rows, batch {bs}, {sum(e['bytes'] for e in f.manifest['files']) / 2 ** 20:.1f} MiB")
    f.close()
    for name, seconds in profile(args[0], bs, drop_caches="--drop-caches" in sys.argv):
        print(f"{seconds * 1000:10.2f} ms  {f.rows / seconds:14,.0f} rows/s  {name}")
