"""The Result record: JSONL round trip, identity, and reading a damaged file."""
import json
import os
import subprocess
import sys

from harness import record
from harness.record import Result
from harness.stats import summarize


def _result(**kw):
    base = dict(run_id="r1", experiment="calibration", case="sleep", params={"ms": 5, "b": "x"},
                samples=[0.1, 0.2], warmup=[0.5], stats=summarize([0.1, 0.2]), extra={"rows": 3})
    return Result(**{**base, **kw})


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "results.jsonl"
    a, b = _result(), _result(case="spin", status="error", error={"type": "X", "message": "boom"})
    record.append(path, a)
    record.append(path, b)
    back, problems = record.read(path)
    assert problems == []
    assert [r.to_dict() for r in back] == [a.to_dict(), b.to_dict()]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["schema"] == record.SCHEMA and list(first["params"]) == ["b", "ms"]


def test_identity_ignores_param_order():
    assert _result(params={"a": 1, "b": 2}).identity == _result(params={"b": 2, "a": 1}).identity
    assert _result(params={"a": 1}).identity != _result(params={"a": 2}).identity


def test_malformed_lines_are_named_and_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    record.append(path, _result())
    with open(path, "a") as f:
        f.write("{not json\n")
        f.write("[1, 2]\n")
        f.write(json.dumps({"run_id": "r1"}) + "\n")
        f.write(json.dumps({**_result().to_dict(), "status": "weird"}) + "\n")
    record.append(path, _result(case="spin"))
    back, problems = record.read(path)
    assert [r.case for r in back] == ["sleep", "spin"]
    assert len(problems) == 4
    assert f"{path}:2:" in problems[0] and "JSON object" in problems[1]
    assert "missing field" in problems[2] and "unknown status" in problems[3]


def test_read_tells_a_torn_tail_from_garbage_and_from_another_encoding(tmp_path):
    path = tmp_path / "results.jsonl"
    record.append(path, _result())
    with open(path, "ab") as f:
        f.write("caf\u00e9 latin-1 line\n".encode("latin-1"))  # one line in another encoding
        f.write(b"{not json\n")
    record.append(path, _result(case="spin"))
    with open(path, "ab") as f:
        f.write(json.dumps(_result(case="torn").to_dict()).encode()[:40])  # cut short, no newline
    back, problems = record.read(path)
    assert [r.case for r in back] == ["sleep", "spin"]  # the good lines around the bad ones still load
    assert len(problems) == 3
    assert f"{path}:2:" in problems[0] and "not UTF-8" in problems[0]
    assert f"{path}:3:" in problems[1] and "malformed" in problems[1]
    assert f"{path}:5:" in problems[2] and "torn" in problems[2] and "malformed" not in problems[2]


def test_a_torn_tail_is_set_aside_and_the_file_cut_to_its_last_whole_line(tmp_path):
    path = tmp_path / "results.jsonl"
    record.append(path, _result())
    whole = path.read_bytes()
    fragment = json.dumps(_result(case="spin").to_dict()).encode()[:-25]
    path.write_bytes(whole + fragment)
    aside = record.set_aside_torn_tail(path)
    assert aside is not None and aside.name.startswith("results.jsonl.torn-")
    assert aside.read_bytes() == fragment and path.read_bytes() == whole
    assert record.set_aside_torn_tail(path) is None  # nothing torn any more
    record.append(path, _result(case="spin"))
    assert [r.case for r in record.read(path)[0]] == ["sleep", "spin"]

    # a whole record that lost only its newline is kept, not set aside
    path.write_bytes(path.read_bytes()[:-1])
    assert record.set_aside_torn_tail(path) is None
    assert path.read_bytes().endswith(b"}\n") and len(record.read(path)[0]) == 2


def test_a_second_claim_on_a_run_folder_names_the_holder(tmp_path):
    held = record.claim_run_dir(tmp_path / "run")
    assert (tmp_path / "run" / record.LOCK_FILE).read_text().strip() == str(os.getpid())
    # flock is per open file: another process is refused while we hold it, and gets it once we let go
    code = ("import sys; from harness import record\n"
            "try:\n    record.claim_run_dir(sys.argv[1])\nexcept record.RunLocked as e:\n    print(e); sys.exit(3)\n")
    refused = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert refused.returncode == 3 and f"pid {os.getpid()}" in refused.stdout
    held.close()
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")]).returncode == 0
