"""The exit-code contract for bad input, driven through the real CLI: a message naming the problem and the
fix, exit 2, no traceback, and nothing already recorded lost. Read-only folders are real file modes (for root,
run with the capabilities that let root ignore them dropped); a full disk is a real, tiny tmpfs."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, harness_cli

from harness import record

QUICK = ["--repeats", "1", "--warmup", "0", "--no-mlflow", "--no-report"]


def _refused(p: subprocess.CompletedProcess, *texts: str) -> None:
    """Exit 2 with every text in the message, and no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    for text in texts:
        assert text in p.stderr, (text, p.stderr)


def _unprivileged_prefix() -> list[str]:
    """How to run a command so that file modes bind: as is for a normal user; for root, under setpriv with the
    capabilities that let root read and write anything removed."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which ignores file modes, and setpriv (util-linux) is missing to drop that")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    if subprocess.run(prefix + ["true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, which ignores file modes, and this machine does not let setpriv drop that")
    return prefix


def _harness_unprivileged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_unprivileged_prefix() + [sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def _make_run(results: Path) -> Path:
    """A real run of three quick cases: RESULTS/r1."""
    p = harness_cli("run", "calibration.sleep", "--set", "ms=1,2,3", *QUICK, "--results", str(results),
                    "--run-id", "r1")
    assert p.returncode == 0, p.stderr
    return results / "r1"


# ---- suites, settings, run ids and plans: refused before anything is written --------------------------------

SLEEP = '[[run]]\ntarget = "calibration.sleep"\n'


@pytest.mark.parametrize("content, expected", [
    (bytes(range(256)) * 4, "not a TOML text file"),
    ("run = 5\n", "run must be a list of [[run]] tables"),
    ("[[run]]\ntarget = 5\n", "target must be a name in quotes"),
    ("defaults = 3\n" + SLEEP, "defaults must be a table"),
    (SLEEP + "set = 7\n", "set must be a table of axis values"),
    ('[defaults]\ntimeout = "soon"\n' + SLEEP, "timeout = 'soon' is not valid"),
    (SLEEP + 'repeats = "3"\n', "repeats = '3' is not valid"),
    (SLEEP + "repeats = 2.5\n", "repeats = 2.5 is not valid"),
    (SLEEP + "repeats = 0\n", "repeats = 0 is not valid"),
    (SLEEP + "timeout = 0\n", "timeout = 0 is not valid"),
    ("[defaults]\nwarmup = -1\n" + SLEEP, "warmup = -1 is not valid"),
    ("", "no [[run]] entry, so nothing would run"),
    (SLEEP + "set = { ms = [] }\n", "set.ms is an empty list"),
])
def test_a_bad_suite_file_is_refused_whole_before_anything_is_written(tmp_path, content, expected):
    suite = tmp_path / "mine.toml"
    suite.write_bytes(content if isinstance(content, bytes) else content.encode())
    p = harness_cli("run", str(suite), "--no-mlflow", "--results", str(tmp_path / "results"))
    _refused(p, expected, str(suite))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--timeout", "nan", "finite number of seconds > 0"),
    ("--timeout", "inf", "finite number of seconds > 0"),
    ("--timeout", "-1", "finite number of seconds > 0"),
    ("--repeats", "0", "whole number >= 1"),
    ("--warmup", "-1", "whole number >= 0"),
])
def test_bad_settings_on_the_command_line_are_refused(tmp_path, flag, value, expected):
    p = harness_cli("run", "calibration.sleep", flag, value, "--no-mlflow", "--results", str(tmp_path / "r"))
    _refused(p, f"{flag} {value}", expected)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("run_id", ["..", ".", "", ".hidden", "a/b", "baselines"])
def test_a_run_id_that_is_not_one_folder_inside_results_is_refused(tmp_path, run_id):
    results = tmp_path / "deep" / "results"
    p = harness_cli("run", "calibration.sleep", "--run-id", run_id, "--no-mlflow", "--results", str(results))
    _refused(p, "--run-id")
    assert list(tmp_path.iterdir()) == []  # nothing written, inside the results folder or beside it


@pytest.mark.parametrize("args, expected", [
    (["calibration.sleep", "--set", "ms=,,"], "at least one value"),
    (["ingestion", "--set", "n_files=0"], "nothing would run: every combination of the values given is ruled out"),
])
def test_a_plan_that_would_run_nothing_is_refused(tmp_path, args, expected):
    p = harness_cli("run", *args, "--no-mlflow", "--results", str(tmp_path / "r"))
    _refused(p, expected)
    assert not (tmp_path / "r").exists()


# ---- files and folders that cannot be read or written -------------------------------------------------------

def test_read_only_results_folder_is_refused_by_run_report_and_baseline_save(tmp_path):
    results = tmp_path / "results"
    run_dir = _make_run(results)
    kept = (run_dir / "results.jsonl").read_bytes()
    for path in [results, *results.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        fresh = _harness_unprivileged("run", "calibration.sleep", *QUICK, "--results", str(results), "--run-id", "r2")
        _refused(fresh, "Permission denied", str(results / "r2"), "--results")
        resume = _harness_unprivileged("run", "calibration.sleep", "--set", "ms=1,2,3,4", *QUICK,
                                       "--results", str(results), "--run-id", "r1", "--resume")
        _refused(resume, "Permission denied", str(run_dir), "--results")
        report = _harness_unprivileged("report", str(run_dir))
        _refused(report, "Permission denied", str(run_dir), "--out")
        baseline = _harness_unprivileged("baseline", "save", str(run_dir), "--results", str(results))
        _refused(baseline, "Permission denied", str(results))
    finally:
        for path in [results, *results.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert (run_dir / "results.jsonl").read_bytes() == kept
    assert not (results / "r2").exists() and not (run_dir / "report.html").exists()


def test_log_and_resume_refuse_an_unreadable_or_garbage_results_file(tmp_path):
    run_dir = _make_run(tmp_path / "results")
    results_file = run_dir / "results.jsonl"
    resume = ["run", "calibration.sleep", "--set", "ms=1,2,3", *QUICK, "--results", str(tmp_path / "results"),
              "--run-id", "r1", "--resume"]
    tracking = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]

    results_file.chmod(0)
    try:
        _refused(_harness_unprivileged("log", str(run_dir), *tracking), "Permission denied", str(results_file))
        _refused(_harness_unprivileged(*resume), "Permission denied", str(results_file))
    finally:
        results_file.chmod(0o644)

    garbage = bytes(range(256)) * 64 + b"\n" + b"\x00\xff" * 500 + b"\n"
    results_file.write_bytes(garbage)
    _refused(harness_cli("log", str(run_dir), *tracking), str(results_file), "holds no readable record")
    _refused(harness_cli(*resume), str(results_file), "holds no readable record", "another --run-id")
    assert results_file.read_bytes() == garbage  # refused, not rewritten


def test_one_non_utf8_line_costs_that_line_only(tmp_path):
    run_dir = _make_run(tmp_path / "results")
    results_file = run_dir / "results.jsonl"
    lines = results_file.read_bytes().splitlines(keepends=True)
    results_file.write_bytes(lines[0] + "r\u00e9sum\u00e9 in latin-1\n".encode("latin-1") + b"".join(lines[1:]))

    report = harness_cli("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert f"{results_file}:2:" in report.stderr and "not UTF-8" in report.stderr
    compare = harness_cli("compare", str(run_dir), str(run_dir))
    assert compare.returncode == 0, compare.stderr + compare.stdout
    assert len(record.read(results_file)[0]) == 3


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tiny tmpfs, and mounting one needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {p.stderr.strip()}")


def test_a_full_disk_stops_the_run_with_exit_2_keeping_every_record_and_resume_completes(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "64k")
    try:
        # 200 quick cases whose records need more than the 64 KiB the disk holds
        args = ["run", "calibration.spin", "--set", "iterations=" + ",".join(str(i) for i in range(1, 201)), *QUICK,
                "--results", str(disk), "--run-id", "full"]
        p = harness_cli(*args)
        results_file = disk / "full" / "results.jsonl"
        _refused(p, "No space left on device", str(disk / "full"), "free some space")
        kept, problems = record.read(results_file)
        assert problems == [] and 0 < len(kept) < 200  # whole records only: a cut write was taken back

        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        resumed = harness_cli(*args, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        final, problems = record.read(results_file)
        assert problems == [] and sorted(r.params["iterations"] for r in final) == list(range(1, 201))
        assert [r.identity for r in final[:len(kept)]] == [r.identity for r in kept]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---- --data ------------------------------------------------------------------------------------------------

def test_an_unreadable_image_is_named_with_its_reason_before_anything_runs(tmp_path):
    from harness.data.images import generate_tree

    data = tmp_path / "data"
    generate_tree(data, 6, 4, n_classes=2, workers=1)
    locked = sorted(data.rglob("*.jpg"))[3]
    locked.chmod(0)
    try:
        p = _harness_unprivileged("run", "ingestion.small_files", "--data", str(data), *QUICK,
                                  "--results", str(tmp_path / "r"))
    finally:
        locked.chmod(0o644)
    _refused(p, "Permission denied")
    line = next(line for line in p.stderr.splitlines() if "Permission denied" in line)
    assert str(locked) in line and "chmod a+r" in line  # the file, the reason and the fix on one line
    assert not (tmp_path / "r").exists()


def test_a_non_numeric_label_column_is_named(tmp_path):
    from harness.data.tabular import co2_frame

    frame = co2_frame(60, seed=1)
    frame["CO2"] = frame["CO2"].astype(str)
    frame.loc[7, "CO2"] = "high"
    csv = tmp_path / "co2.csv"
    frame.to_csv(csv, index=False)
    p = harness_cli("run", "training.mllib", "--data", str(csv), "--set", "task=co2", "--set", "model=linear",
                    *QUICK, "--results", str(tmp_path / "r"), "--run-id", "label")
    assert p.returncode == 1, p.stderr  # a case error (the data is read inside the case), recorded
    (result,) = record.read(tmp_path / "r" / "label" / "results.jsonl")[0]
    first = result.error["message"].splitlines()[0]
    assert result.status == "error" and "'CO2'" in first and "'high'" in first and "not numbers" in first
