"""Image folders shaped like Caltech 256: a deterministic JPEG generator, a cache for generated trees, and
a scanner for real folders passed with `--data`.

Layout: `<root>/<NNN>.<label>/<NNN>_<IIII>.jpg`. The label of a file is the name of its class folder (the
first folder under the root), so nested folders inside a class folder keep their class. Nothing here is
timed by the harness: trees are made and scanned in a case's setup.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

log = logging.getLogger(__name__)

# Bumped whenever the generator's output changes, so an old cached tree is never taken for a new one.
GENERATOR_VERSION = 2

# Spark's binaryFile reader is given exactly this glob, and scan_tree accepts exactly these suffixes, so
# both see the same set of files.
JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")
JPEG_GLOB = "*.{" + ",".join(s[1:] for s in JPEG_SUFFIXES) + "}"

MIN_SIDE, MAX_SIDE = 100, 500

_LABELS = (
    "anchor", "bicycle", "cactus", "drum", "eagle", "fern", "guitar", "harbor", "igloo", "jellyfish",
    "kettle", "lantern", "mailbox", "nautilus", "owl", "piano", "quilt", "rocket", "saddle", "teapot",
    "umbrella", "violin", "windmill", "xylophone", "yacht", "zebra",
)


class DataError(Exception):
    """A data folder that cannot be used; the message names the path and the fix."""


@dataclass
class TreeInfo:
    """What a scan of an image folder found."""

    root: Path
    files: list[Path] = field(default_factory=list)  # readable JPEGs inside a class folder, sorted
    labels: list[str] = field(default_factory=list)  # class folder name of each file in `files`
    total_bytes: int = 0  # size of `files` together
    corrupt: list[Path] = field(default_factory=list)  # JPEG-named files that are not readable JPEGs
    ignored: int = 0  # files that are not JPEGs, hidden files, or JPEGs outside any class folder
    unlabelled: list[Path] = field(default_factory=list)  # JPEGs directly under the root (no class folder)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def excluded(self) -> list[Path]:
        """JPEG-named files a recursive `*.jpg` read picks up that are not part of the data set."""
        return self.corrupt + self.unlabelled


def class_folder(index: int, n_classes: int) -> str:
    """Caltech-style class folder name, e.g. `003.cactus`; labels repeat with a suffix past the word list."""
    word = _LABELS[index % len(_LABELS)]
    if n_classes > len(_LABELS):
        word = f"{word}{index // len(_LABELS) + 1}"
    return f"{index + 1:03d}.{word}"


def _spec(i: int, n_classes: int) -> tuple[int, int]:
    """File i goes to class i mod n_classes, as its (i // n_classes + 1)-th image."""
    return i % n_classes, i // n_classes + 1


def _render(i: int, file_kb: int, seed: int):
    """Draws image i: a gradient, shapes and a texture whose strength sets how well it compresses."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, i])
    # per-file size varies around the target; the pixel count follows it so the target is reachable at a
    # middling JPEG quality (about 0.35 bytes/pixel for this content at quality ~75)
    target = file_kb * 1024 * rng.uniform(0.6, 1.4)
    area = target / 0.35
    aspect = rng.uniform(0.6, 1.6)
    w = int(min(MAX_SIDE, max(MIN_SIDE, math.sqrt(area * aspect))))
    h = int(min(MAX_SIDE, max(MIN_SIDE, area / w)))
    # small integer arithmetic throughout: rendering, not encoding, was the generator's cost
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * np.arange(w, dtype=np.float32)[None, :] / w
            + np.sin(angle) * np.arange(h, dtype=np.float32)[:, None] / h + 1) * 128  # 0..256
    c0 = rng.integers(0, 256, 3).astype(np.int32)
    c1 = rng.integers(0, 256, 3).astype(np.int32)
    base = c0 + ((c1 - c0)[None, None, :] * ramp.astype(np.int32)[..., None] >> 8)
    strength = int(rng.integers(4, 40))
    grain = rng.integers(-strength, strength + 1, (h, w, 1), dtype=np.int16)
    tint = rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    pixels = np.clip(base.astype(np.int16) + grain + tint, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 12))):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        else:
            draw.line([x0, y0, x1, y1], fill=color, width=int(rng.integers(1, 8)))
    return img, int(target)


def _encode(img, target: int) -> bytes:
    """JPEG bytes close to `target` (within 5%, or the closest quality can get), bisecting the quality."""
    best, lo, hi = None, 10, 95
    while lo <= hi:
        q = (lo + hi) // 2
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        data = buf.getvalue()
        if best is None or abs(len(data) - target) < abs(len(best) - target):
            best = data
        if abs(len(data) - target) <= 0.05 * target:
            break
        if len(data) < target:
            lo = q + 1
        else:
            hi = q - 1
    return best


def _write_range(root: str, start: int, stop: int, file_kb: int, n_classes: int, seed: int) -> int:
    """Writes images start..stop-1 under root; returns their bytes. Runs in a worker process."""
    total = 0
    for i in range(start, stop):
        cls, idx = _spec(i, n_classes)
        folder = Path(root, class_folder(cls, n_classes))
        folder.mkdir(exist_ok=True)
        img, target = _render(i, file_kb, seed)
        data = _encode(img, target)
        Path(folder, f"{cls + 1:03d}_{idx:04d}.jpg").write_bytes(data)
        total += len(data)
    return total


def generate_tree(root: Path, n_files: int, file_kb: int, n_classes: int = 10, seed: int = 42,
                  workers: int | None = None) -> dict:
    """Writes n_files JPEGs (about file_kb KB each) into n_classes class folders under root, in parallel.

    The same (n_files, file_kb, n_classes, seed) always gives the same files, whatever `workers` is.
    Returns figures: files, bytes, seconds, images_per_s, workers.
    """
    if n_files < 1 or file_kb < 1 or n_classes < 1:
        raise ValueError(f"generate_tree needs n_files, file_kb and n_classes >= 1, got {n_files}, {file_kb}, "
                         f"{n_classes}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, math.ceil(n_files / 50)))
    # contiguous ranges in more chunks than workers keep every worker busy to the end
    n_chunks = workers * 4 if workers > 1 else 1
    step = math.ceil(n_files / n_chunks)
    ranges = [(s, min(s + step, n_files)) for s in range(0, n_files, step)]
    t0 = time.perf_counter()
    if workers == 1:
        total = sum(_write_range(str(root), a, b, file_kb, n_classes, seed) for a, b in ranges)
    else:
        # spawn, not fork: the caller may be a threaded process holding a JVM gateway
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_write_range, str(root), a, b, file_kb, n_classes, seed) for a, b in ranges]
            total = sum(f.result() for f in futures)
    seconds = time.perf_counter() - t0
    return {"files": n_files, "bytes": total, "seconds": round(seconds, 3),
            "images_per_s": round(n_files / seconds, 1) if seconds > 0 else None, "workers": workers,
            "mean_kb": round(total / n_files / 1024, 2)}


def tree_key(n_files: int, file_kb: int, n_classes: int, seed: int) -> str:
    return f"caltech-n{n_files}-kb{file_kb}-c{n_classes}-s{seed}-v{GENERATOR_VERSION}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cached_tree(cache_dir: Path, n_files: int, file_kb: int, n_classes: int = 10, seed: int = 42,
                workers: int | None = None) -> Path:
    """A generated tree under cache_dir/images, made once per parameters.

    Generation writes into a temporary folder renamed into place only when complete, so a crashed or killed
    generation is never mistaken for a finished tree.
    """
    base = Path(cache_dir) / "images"
    base.mkdir(parents=True, exist_ok=True)
    key = tree_key(n_files, file_kb, n_classes, seed)
    final = base / key
    if final.is_dir():
        return final
    for stale in base.glob(f".tmp-{key}-*"):
        # leftovers of a generation whose process is gone (the pid is in the name)
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = base / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        figures = generate_tree(tmp, n_files, file_kb, n_classes, seed, workers)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # lost a race with another generator: theirs is as good as ours
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    (base / f"{key}.json").write_text(json.dumps(figures, indent=2))
    log.info("generated %s: %s", final, figures)
    return final


def generation_figures(tree: Path) -> dict | None:
    """The figures recorded when a cached tree was generated (images_per_s...), if known."""
    meta = tree.parent / f"{tree.name}.json"
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _walk(root: Path, top: Path | None = None, chain: dict | None = None):
    """Yields (folder, [file names]) under root, sorted, hidden folders left out, following symlinked folders as
    Spark's file listing does. A symlink leading back to a folder it sits in would make that listing endless:
    it raises DataError naming the link."""
    top = Path(root) if top is None else top
    chain = {} if chain is None else chain  # (device, inode) -> path, for the folders from root down to top
    try:
        st = top.stat()
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"--data {root}: cannot list {top} ({e.strerror or e}); make it readable, or move it "
                        "out of the folder") from None
    ident = (st.st_dev, st.st_ino)
    if ident in chain:
        link = f"{top} -> {os.readlink(top)}" if top.is_symlink() else str(top)
        raise DataError(f"--data {root}: symlink loop: {link} leads back to {chain[ident]}, so its files would "
                        "be listed over and over; remove that link")
    chain[ident] = top
    kinds = [(e.name, _is_folder(e)) for e in entries]
    yield top, [name for name, folder in kinds if not folder]
    for name, folder in kinds:
        if folder and not _hidden(name):
            yield from _walk(root, top / name, chain)
    del chain[ident]


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _unreadable(root: Path, path: Path, err: OSError) -> DataError:
    return DataError(f"--data {root}: cannot read {path} ({err.strerror or err}); make it readable "
                     f"(chmod a+r), or move it out of the folder")


def check_folder(path: Path) -> None:
    """Raises DataError unless path is a folder holding at least one JPEG file (any depth), every JPEG in it
    readable and no symlink loop inside: what Spark would otherwise stumble on mid-case."""
    path = Path(path)
    fix = ("pass a folder of class folders holding .jpg files, e.g. --data /data/256_ObjectCategories "
           "(or leave --data out to use generated images)")
    if not path.exists():
        raise DataError(f"--data {path}: no such folder; {fix}")
    if not path.is_dir():
        raise DataError(f"--data {path}: is a file, not a folder; {fix}")
    found = False
    for here, names in _walk(path):
        for name in names:
            if name.endswith(JPEG_SUFFIXES) and not _hidden(name):
                try:
                    os.close(os.open(here / name, os.O_RDONLY))
                except PermissionError as e:
                    raise _unreadable(path, here / name, e) from None
                except OSError:
                    continue  # a dangling link: scan_tree leaves it out
                found = True
    if not found:
        raise DataError(f"--data {path}: holds no JPEG files ({'/'.join(JPEG_SUFFIXES)}); {fix}")


def image_tree(ctx, n_files: int, file_kb: int, n_classes: int = 10) -> Path:
    """The image folder a case reads: `--data` (validated) or a generated tree cached by its parameters."""
    if ctx.data is not None:
        if Path(ctx.data).is_file():
            from ..workload import Unavailable

            raise Unavailable(f"--data {ctx.data} is a file; this case reads an image folder (CSV files serve "
                              "the training experiment's tabular tasks)")
        check_folder(ctx.data)
        return Path(ctx.data).resolve()
    return cached_tree(ctx.cache_dir, n_files, file_kb, n_classes, ctx.seed)


def _hidden(name: str) -> bool:
    # Spark's file listing skips these names too (HadoopFSUtils.shouldFilterOutPathName)
    return name.startswith(".") or (name.startswith("_") and "=" not in name) or name.endswith("._COPYING_")


def _is_jpeg(path: Path, size: int) -> bool:
    """Cheap structural check: a JPEG header Pillow can parse, and an end-of-image marker near the end.

    A header claiming more pixels than Pillow will decode (a decompression bomb) counts as corrupt; a file
    that cannot be opened at all raises PermissionError (the caller names it).
    """
    from PIL import Image, UnidentifiedImageError

    if size < 4:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(max(0, size - 64))
            tail = f.read()
        if b"\xff\xd9" not in tail:  # truncated: the entropy-coded data never ends
            return False
        with Image.open(path) as im:
            return im.format == "JPEG" and im.width > 0 and im.height > 0
    except PermissionError:
        raise
    except Image.DecompressionBombError as e:
        log.warning("%s: %s; skipped as corrupt", path, e)
        return False
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def scan_tree(root: Path) -> TreeInfo:
    """Lists an image folder the way the benchmark reads it; corrupt JPEGs are counted, warned about, skipped."""
    root = Path(root)
    info = TreeInfo(root=root)
    for here, names in _walk(root):
        rel = here.relative_to(root).parts
        for name in names:
            path = here / name
            if _hidden(name) or not name.endswith(JPEG_SUFFIXES) or not path.is_file():
                info.ignored += 1
                continue
            size = path.stat().st_size
            try:
                jpeg = _is_jpeg(path, size)
            except PermissionError as e:
                raise _unreadable(root, path, e) from None
            if not jpeg:
                info.corrupt.append(path)
            elif not rel:
                info.unlabelled.append(path)
                info.ignored += 1
            else:
                info.files.append(path)
                info.labels.append(rel[0])
                info.total_bytes += size
    if info.corrupt:
        shown = ", ".join(str(p) for p in info.corrupt[:5])
        log.warning("%d corrupt JPEG file(s) under %s skipped: %s%s", len(info.corrupt), root, shown,
                    " ..." if len(info.corrupt) > 5 else "")
    return info


__all__ = ["DataError", "TreeInfo", "generate_tree", "image_tree", "scan_tree", "cached_tree", "check_folder",
           "generation_figures", "JPEG_GLOB", "JPEG_SUFFIXES"]
