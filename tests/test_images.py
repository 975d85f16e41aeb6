"""The image tree generator, its cache, the folder scanner and `--data` validation (no Spark)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from harness.context import RunContext
from harness.data import images
from harness.data.images import DataError, cached_tree, check_folder, generate_tree, image_tree, scan_tree
from harness.workload import Unavailable

NAME = re.compile(r"^(\d{3})\.[a-z0-9]+/(\d{3})_(\d{4})\.jpg$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_tree_layout_sizes_and_figures(tmp_path):
    figures = generate_tree(tmp_path / "t", n_files=30, file_kb=12, n_classes=4, seed=7, workers=1)
    files = _files(tmp_path / "t")
    assert len(files) == 30 and figures["files"] == 30
    assert figures["bytes"] == sum(len(b) for b in files.values())
    assert figures["images_per_s"] > 0 and figures["seconds"] > 0
    for rel in files:
        m = NAME.match(rel)
        assert m, f"{rel} is not <NNN>.<label>/<NNN>_<IIII>.jpg"
        assert m.group(1) == m.group(2)  # the file prefix is its class number, as in Caltech 256
    assert len({rel.split("/")[0] for rel in files}) == 4
    mean_kb = figures["bytes"] / 30 / 1024
    assert 12 * 0.6 < mean_kb < 12 * 1.4, f"mean file size {mean_kb:.1f} KB is far from the 12 KB asked for"
    sizes = set()
    for p in (tmp_path / "t").rglob("*.jpg"):
        with Image.open(p) as im:
            im.load()  # a real, fully decodable JPEG
            assert im.format == "JPEG"
            assert 100 <= im.width <= 500 and 100 <= im.height <= 500
            sizes.add(im.size)
    assert len(sizes) > 10, "image sizes should vary"


def test_generate_tree_is_deterministic_whatever_the_workers(tmp_path):
    generate_tree(tmp_path / "a", 24, 6, n_classes=3, seed=1, workers=1)
    generate_tree(tmp_path / "b", 24, 6, n_classes=3, seed=1, workers=2)
    generate_tree(tmp_path / "c", 24, 6, n_classes=3, seed=2, workers=1)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c  # another seed: same names, other images


def test_generate_tree_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_files"):
        generate_tree(tmp_path / "x", 0, 10)


def test_cached_tree_is_reused_and_atomic(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    key = images.tree_key(12, 4, 3, 42)
    # a leftover from a generator that died (its pid is gone) must be cleaned, never used
    stale = cache / "images" / f".tmp-{key}-999999999-abcdef"
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"\xff\xd8")
    first = cached_tree(cache, 12, 4, n_classes=3)
    assert first.name == key and not stale.exists()
    assert len(list(first.rglob("*.jpg"))) == 12
    assert images.generation_figures(first)["files"] == 12
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*.jpg")}

    def must_not_generate(*a, **k):
        raise AssertionError("a cached tree was generated again")

    monkeypatch.setattr(images, "generate_tree", must_not_generate)
    assert cached_tree(cache, 12, 4, n_classes=3) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*.jpg")} == mtimes


def test_cached_tree_never_publishes_a_crashed_generation(tmp_path, monkeypatch):
    real = images.generate_tree

    def crash_midway(root, *args, **kwargs):
        real(root, 5, 4, n_classes=2, workers=1)
        raise KeyboardInterrupt  # what a Ctrl-C during generation looks like

    monkeypatch.setattr(images, "generate_tree", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        cached_tree(tmp_path, 10, 4, n_classes=2)
    left = list((tmp_path / "images").iterdir())
    assert left == [], f"a crashed generation left {left}"
    monkeypatch.setattr(images, "generate_tree", real)
    done = cached_tree(tmp_path, 10, 4, n_classes=2)
    assert len(list(done.rglob("*.jpg"))) == 10


def _messy_tree(root: Path) -> dict:
    """A Caltech-like folder with the traps real ones have."""
    generate_tree(root, 12, 4, n_classes=3, seed=3, workers=1)
    good = sorted(root.rglob("*.jpg"))
    nested = root / "002.bicycle" / "greg"  # Caltech 256 has such a sub-folder (056.dog/greg)
    nested.mkdir()
    shutil.copy(good[0], nested / "extra_0001.jpg")
    data = good[1].read_bytes()
    (root / "001.anchor" / "001_9998.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (root / "003.cactus" / "003_9999.jpg").write_bytes(b"this is not a jpeg at all" * 40)
    (root / "003.cactus" / "notes.txt").write_text("not an image")
    Image.new("RGB", (120, 120)).save(root / "003.cactus" / "picture.png")
    (root / "001.anchor" / "._001_0001.jpg").write_bytes(b"macOS resource fork")  # hidden
    shutil.copy(good[2], root / "loose.jpg")  # no class folder
    return {"files": 13, "corrupt": 2, "ignored": 4}


def test_scan_tree_counts_corrupt_ignored_nested(tmp_path, caplog):
    expect = _messy_tree(tmp_path / "d")
    with caplog.at_level("WARNING"):
        info = scan_tree(tmp_path / "d")
    assert len(info.files) == expect["files"]
    assert len(info.corrupt) == expect["corrupt"]
    assert {p.name for p in info.corrupt} == {"001_9998.jpg", "003_9999.jpg"}
    assert info.ignored == expect["ignored"]
    assert [p.name for p in info.unlabelled] == ["loose.jpg"]
    assert info.total_bytes == sum(p.stat().st_size for p in info.files)
    # a nested file keeps its class folder's label
    assert info.labels[info.files.index(tmp_path / "d" / "002.bicycle" / "greg" / "extra_0001.jpg")] == "002.bicycle"
    assert info.classes == ["001.anchor", "002.bicycle", "003.cactus"]
    assert "2 corrupt JPEG" in caplog.text


def _ctx(tmp_path, data=None):
    return RunContext(run_id="t", run_dir=tmp_path / "run", data=data, cache_dir=tmp_path / "cache")


def test_image_tree_validates_data_folders(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing)) + ".*no such folder"):
        image_tree(_ctx(tmp_path, missing), 10, 4)
    empty = tmp_path / "empty"
    (empty / "001.cls").mkdir(parents=True)
    (empty / "001.cls" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(str(empty)) + ".*no JPEG"):
        image_tree(_ctx(tmp_path, empty), 10, 4)
    a_file = tmp_path / "data.csv"
    a_file.write_text("a,b\n")
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_folder(a_file)
    # a CSV given for a run that also holds image cases: those cases are unavailable, not failed
    with pytest.raises(Unavailable, match="reads an image folder"):
        image_tree(_ctx(tmp_path, a_file), 10, 4)
    real = tmp_path / "real"
    generate_tree(real, 4, 4, n_classes=2, workers=1)
    assert image_tree(_ctx(tmp_path, real), 10, 4) == real.resolve()
    assert not (tmp_path / "cache").exists(), "--data must not generate anything"


def test_image_tree_generates_into_the_cache_by_parameters(tmp_path):
    ctx = _ctx(tmp_path)
    a = image_tree(ctx, 6, 4, n_classes=2)
    b = image_tree(ctx, 7, 4, n_classes=2)
    assert a != b and a.parent == b.parent == tmp_path / "cache" / "images"
    assert len(scan_tree(a).files) == 6 and len(scan_tree(b).files) == 7
    assert os.path.commonpath([a, tmp_path / "cache"]) == str(tmp_path / "cache")


def _bomb_header(path: Path, side: int = 60000) -> None:
    """A small, well-formed JPEG whose frame header claims side x side pixels (a decompression bomb's header)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length (2), precision (1), height, width
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_header_is_skipped_as_corrupt_with_its_name(tmp_path, caplog):
    root = tmp_path / "d"
    generate_tree(root, 6, 4, n_classes=2, seed=5, workers=1)
    bomb = root / "001.anchor" / "001_9999.jpg"
    _bomb_header(bomb)
    with caplog.at_level("WARNING"):
        info = scan_tree(root)
    assert info.corrupt == [bomb] and len(info.files) == 6
    assert str(bomb) in caplog.text and "decompression bomb" in caplog.text


def test_a_decompression_bomb_in_data_does_not_abort_the_case(tmp_path):
    from support import harness_cli

    from harness import record

    root = tmp_path / "d"
    generate_tree(root, 6, 4, n_classes=2, seed=5, workers=1)
    _bomb_header(root / "002.bicycle" / "002_9999.jpg")
    p = harness_cli("run", "ingestion.small_files", "--data", str(root), "--set", "cold=first_read", "--repeats", "1",
                    "--warmup", "0", "--no-mlflow", "--no-report", "--results", str(tmp_path / "r"), "--run-id", "b")
    assert p.returncode == 0, p.stdout + p.stderr
    # the skipped file is named: on the terminal, or in the run folder (where the worker process logs)
    logged = p.stderr.encode() + b"".join(f.read_bytes() for f in (tmp_path / "r" / "b").rglob("*") if f.is_file())
    assert b"002_9999.jpg" in logged and b"decompression bomb" in logged
    (result,) = record.read(tmp_path / "r" / "b" / "results.jsonl")[0]
    assert result.status == "ok" and result.extra["files"] == 6 and result.extra["corrupt_files"] == 1


def test_a_symlink_loop_in_data_is_reported_as_such_before_anything_runs(tmp_path):
    from support import harness_cli

    root = tmp_path / "d"
    generate_tree(root, 4, 4, n_classes=2, seed=5, workers=1)
    link = root / "001.anchor" / "again"
    link.symlink_to(root)  # points back at the folder it sits in
    with pytest.raises(DataError, match="symlink loop"):
        check_folder(root)
    p = harness_cli("run", "ingestion.small_files", "--data", str(root), "--no-mlflow",
                    "--results", str(tmp_path / "r"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "symlink loop" in p.stderr and str(link) in p.stderr and "remove that link" in p.stderr
    assert not (tmp_path / "r").exists()


def test_a_symlinked_class_folder_is_read_as_spark_reads_it(tmp_path):
    outside = tmp_path / "outside"
    generate_tree(outside, 4, 4, n_classes=1, seed=6, workers=1)
    root = tmp_path / "d"
    generate_tree(root, 4, 4, n_classes=2, seed=5, workers=1)
    (root / "009.linked").symlink_to(next(outside.iterdir()))
    info = scan_tree(root)  # Spark's listing follows the link, so the scan must count those files too
    assert len(info.files) == 8 and "009.linked" in info.classes
