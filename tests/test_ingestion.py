"""The ingestion experiment end to end on real Spark (local[2]) and tiny image trees (tens of files)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from support import harness_cli, run_case

from harness.data.images import generate_tree, scan_tree

SMALL = dict(n_files=40, file_kb=4, cold="first_read")
COMPACT = dict(target_files=3, row_group_mb=1, compression="none")


def _ok(r):
    assert r.status == "ok", f"{r.name} {r.params}: {r.status} {r.error}"
    return r


def _keep(ctx, r):
    """What the runner's run() does after each case: later cases find it with ctx.find."""
    ctx.results[r.identity] = r
    return r


def test_reads_agree_and_record_speedups(ctx):
    small = _keep(ctx, _ok(run_case(ctx, "ingestion.small_files", warmup=1, **SMALL)))
    compacted = _ok(run_case(ctx, "ingestion.compacted", warmup=1, **SMALL, **COMPACT))
    arrow = _ok(run_case(ctx, "ingestion.pyarrow_limit", warmup=1, **SMALL, **COMPACT))
    truth = scan_tree(next((ctx.cache_dir / "images").glob("caltech-n40-kb4-*[0-9]")))
    for r in (small, compacted, arrow):
        assert r.extra["rows"] == r.extra["files"] == len(truth.files) == 40
        assert r.extra["bytes"] == truth.total_bytes
        assert r.extra["cold_mode"] == "first_read"
        assert len(r.warmup) == 1 and len(r.samples) == 1
        assert r.extra["files_per_s"] > 0 and r.extra["mb_per_s"] > 0
    assert small.extra["input_partitions"] >= 1 and small.extra["tasks"] >= small.extra["input_partitions"]
    assert compacted.extra["output_files"] == 3 and compacted.extra["tasks"] >= 1
    for r in (compacted, arrow):
        expected = small.stats["median"] / r.stats["median"]
        assert r.extra["speedup_vs_small_files"] == pytest.approx(expected, rel=1e-2)
        assert r.extra["cold_speedup_vs_small_files"] == pytest.approx(small.warmup[0] / r.warmup[0], rel=1e-2)
    assert arrow.extra["threads"] == 2


def test_compact_writes_exactly_target_files(ctx):
    import pyarrow.parquet as pq

    r = _ok(run_case(ctx, "ingestion.compact", **SMALL, target_files=5, row_group_mb=1, compression="snappy"))
    out = next((ctx.work_dir / "compacted").glob("*-t5-rg1-snappy"))
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) == r.extra["output_files"] == 5
    table = pq.read_table(out, columns=["path", "content"])
    assert table.num_rows == r.extra["rows"] == 40
    assert len(set(table.column("path").to_pylist())) == 40
    assert pq.ParquetFile(parts[0]).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert r.extra["output_bytes"] == sum(p.stat().st_size for p in parts)


def test_wrong_compacted_output_is_an_error_record(ctx, spark):
    """A stale or damaged compaction output (rows lost) must fail the check, not give a fast wrong answer."""
    r = _ok(run_case(ctx, "ingestion.compacted", **SMALL, **COMPACT))  # makes its own input
    out = next((ctx.work_dir / "compacted").glob("*-t3-rg1-none"))
    shorter = ctx.work_dir / "shorter"
    spark.read.parquet(str(out)).limit(r.extra["rows"] - 1).write.parquet(str(shorter))
    shutil.rmtree(out)
    shutil.copytree(shorter, out)  # keeps _SUCCESS: looks finished, so it is not rebuilt
    for case in ("ingestion.compacted", "ingestion.pyarrow_limit"):
        bad = run_case(ctx, case, **SMALL, **COMPACT)
        assert bad.status == "error", case
        assert bad.error["type"] == "CheckFailed"
        assert "39 rows" in bad.error["message"] and "40 images" in bad.error["message"]


def _messy_tree(root):
    generate_tree(root, 15, 4, n_classes=3, seed=5, workers=1)
    good = sorted(root.rglob("*.jpg"))
    (root / "002.bicycle" / "greg").mkdir()
    shutil.copy(good[0], root / "002.bicycle" / "greg" / "nested_0001.jpg")
    data = good[1].read_bytes()
    (root / "001.anchor" / "001_9999.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    (root / "003.cactus" / "notes.txt").write_text("not an image")
    (root / "003.cactus" / "thumbs.db").write_bytes(os.urandom(100))


def test_real_folder_with_traps_runs_every_case(ctx, tmp_path):
    data = tmp_path / "256_ObjectCategories"
    _messy_tree(data)
    ctx.data = data
    params = dict(cold="first_read", target_files=2, row_group_mb=1, compression="none", image_size=16)
    results = {}
    for case in ("small_files", "compact", "compacted", "pyarrow_limit", "pipeline_small_files",
                 "pipeline_compacted"):
        from harness.registry import load_all

        axes = load_all()["ingestion"].cases[case].axes
        r = _keep(ctx, _ok(run_case(ctx, f"ingestion.{case}", **{k: v for k, v in params.items() if k in axes})))
        results[case] = r
        assert r.extra["files"] == r.extra["rows"] == 16, case  # 15 generated + 1 nested; corrupt one skipped
        assert r.extra["corrupt_files"] == 1 and r.extra["ignored_files"] == 2
        assert r.extra["data"] == str(data.resolve())
    assert results["pipeline_small_files"].extra["undecodable"] == 0
    assert "speedup_vs_pipeline_small_files" in results["pipeline_compacted"].extra
    assert "speedup_vs_small_files" in results["compacted"].extra


def test_pipeline_labels_sizes_and_resizes(ctx, spark):
    """The book's preprocessing itself: labels from class folders (nested too), sizes, resized bytes."""
    from harness.experiments.ingestion import preprocess, read_small_files, source

    data = ctx.run_dir / "imgs"
    _messy_tree(data)
    ctx.data = data
    src = source(ctx, 0, 0)
    rows = preprocess(read_small_files(spark, src), src.label_regex, 8).collect()
    truth = scan_tree(data)
    by_path = {"file:" + str(p): (label, p) for p, label in zip(truth.files, truth.labels)}
    assert len(rows) == len(by_path) == 16
    from PIL import Image

    for row in rows:
        label, path = by_path[row["path"]]
        assert row["label"] == label
        with Image.open(path) as im:
            assert (row["width"], row["height"]) == im.size
        assert len(row["image"]) == 8 * 8 * 3
    assert sum(r["label"] == "002.bicycle" for r in rows) == 6  # 5 generated + the nested one


def test_true_cold_mode_is_recorded(ctx):
    from harness.experiments.ingestion import DROP_CACHES

    r = run_case(ctx, "ingestion.small_files", warmup=1, **{**SMALL, "cold": "drop_caches"})
    if os.access(DROP_CACHES, os.W_OK):
        assert _ok(r).extra["cold_mode"] == "drop_caches"
    else:
        assert r.status == "unavailable" and "drop_caches" in r.error["message"]


def test_cli_runs_a_case_and_rejects_an_empty_folder(tmp_path):
    out = tmp_path / "results"
    p = harness_cli("run", "ingestion.small_files", "--set", "n_files=12", "--set", "file_kb=3",
                    "--set", "cold=first_read", "--repeats", "1", "--no-mlflow", "--no-report",
                    "--results", str(out), "--run-id", "r1")
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "r1" / "results.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok" and rec["extra"]["rows"] == 12

    # a folder with no JPEG: exit 2 before anything runs, naming the folder
    empty = tmp_path / "empty"
    empty.mkdir()
    p = harness_cli("run", "ingestion.small_files", "--data", str(empty), "--no-mlflow", "--results", str(out),
                    "--run-id", "r2")
    assert p.returncode == 2, p.stderr[-2000:]
    assert str(empty) in p.stderr and "no JPEG" in p.stderr
    assert not (out / "r2").exists()
    p = harness_cli("run", "ingestion.small_files", "--data", str(tmp_path / "nowhere"), "--no-mlflow")
    assert p.returncode == 2 and str(tmp_path / "nowhere") in p.stderr
