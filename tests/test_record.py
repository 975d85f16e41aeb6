"""The Result record: JSONL round trip, identity, and reading a damaged file."""
import json

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
