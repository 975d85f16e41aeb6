"""`harness ab` driven as a user would: two real worker processes, real revisions, real Spark."""
import json
import shutil
import subprocess

import pytest

from support import ROOT, harness_cli

from harness import record


def _ab(tmp_path, *args, run_id="ab1", timeout=600, report=False):
    p = harness_cli("ab", *args, "--no-mlflow", "--json", *([] if report else ["--no-report"]), "--results", str(tmp_path), "--run-id", run_id,
                    timeout=timeout)
    out = json.loads(p.stdout) if p.stdout.strip().startswith("{") else None
    return p, out


def test_ab_flags_a_doubled_loop_and_keeps_both_sides_records(tmp_path):
    p, out = _ab(tmp_path, "calibration.spin", "--set", "iterations=40000", "--b-set", "iterations=80000",
                 "--pairs", "10", report=True)
    assert p.returncode == 1, p.stderr
    case = out["cases"][0]
    assert case["verdict"] == "REGRESSED" and case["ratio"] > 1.05, case  # the verdict is the claim, not the size
    assert out["design"] == "paired" and out["pairs"] == 10
    a = record.read(tmp_path / "ab1" / "A" / "results.jsonl")[0]
    b = record.read(tmp_path / "ab1" / "B" / "results.jsonl")[0]
    assert len(a) == len(b) == 1 and len(a[0].samples) == len(b[0].samples) == 10
    assert a[0].params == {"iterations": 40000} and b[0].params == {"iterations": 80000}
    assert (tmp_path / "ab1" / "ab.json").is_file()
    page = (tmp_path / "ab1" / "report.html").read_text()
    assert "Paired A/B comparison" in page and "REGRESSED" in page


def test_ab_same_sides_is_no_regression(tmp_path):
    # A/A: identical sides; a generous threshold keeps this test about the plumbing, not about noise
    p, out = _ab(tmp_path, "calibration.spin", "calibration.sleep", "--set", "iterations=20000", "--set", "ms=2",
                 "--pairs", "10", "--threshold", "0.5")
    assert p.returncode == 0, p.stderr
    assert {c["case"] for c in out["cases"]} == {"spin", "sleep"}
    assert all(c["verdict"] != "REGRESSED" for c in out["cases"])


def test_ab_bad_input_exits_2_naming_each_problem(tmp_path):
    p, _ = _ab(tmp_path, "calibration.spin", "--b-set", "iterations=1,2", "--a-python", str(tmp_path / "nopy"),
               "--pairs", "1", "--threshold", "-1")
    assert p.returncode == 2
    for text in ("one value per side", "--a-python", "--pairs 1", "--threshold"):
        assert text in p.stderr, p.stderr
    p, _ = _ab(tmp_path, "calibration.sleep", "--a-rev", "no-such-revision-xyz", run_id="ab2")
    assert p.returncode == 2 and "no-such-revision-xyz" in p.stderr, p.stderr


@pytest.mark.slow
def test_ab_between_two_git_revisions(tmp_path):
    """--a-rev HEAD~1 --b-rev HEAD in a clone whose newest commit makes calibration.sleep sleep twice as long."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("needs git and a git checkout of the harness")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    calib = clone / "harness" / "experiments" / "calibration.py"
    text = calib.read_text()
    assert "seconds = ms / 1000.0" in text
    calib.write_text(text.replace("seconds = ms / 1000.0", "seconds = 2 * ms / 1000.0"))
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(git + ["commit", "-q", "-am", "sleep twice as long"], check=True)
    p = harness_cli("ab", "calibration.sleep", "--set", "ms=20", "--a-rev", "HEAD~1", "--b-rev", "HEAD",
                    "--pairs", "8", "--no-mlflow", "--json", "--results", str(tmp_path / "r"), "--run-id", "revs",
                    cwd=clone, env={"PYTHONPATH": str(clone)}, timeout=600)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["cases"][0]["verdict"] == "REGRESSED" and out["cases"][0]["ratio"] > 1.5
    assert [s["rev"] for s in out["sides"]] == ["HEAD~1", "HEAD"]
    # the worktrees are gone afterwards, and git forgot them
    listed = subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1, listed
    assert not (tmp_path / "r" / "revs" / "checkouts").exists()


@pytest.mark.slow
def test_ab_spark_calibration_case(tmp_path):
    """The Spark ground-truth case through two workers, each with its own SparkSession."""
    p, out = _ab(tmp_path, "calibration.spark_spin", "--set", "iterations=300000", "--b-set", "iterations=900000",
                 "--pairs", "8")
    assert p.returncode == 1, p.stderr
    case = out["cases"][0]
    assert case["verdict"] == "REGRESSED" and case["ratio"] > 1.05, case
    assert all(s["spark"] and s["spark"]["master"] for s in out["sides"])
