"""Grid expansion, axis typing, suite files and --set validation (every problem reported at once)."""
import pytest

from harness.registry import Experiment, load_all
from harness.spec import Axis, ConfigError, make_axis, plan
from harness.workload import Workload


def _registry():
    exp = Experiment("demo", "test experiment")

    @exp.case("a", {"n": [1, 2], "mode": Axis("mode", ("x",), str, choices=("x", "y"))},
              valid=lambda p: not (p["n"] == 2 and p["mode"] == "y"))
    def a(ctx, n, mode):
        return Workload(run=lambda: None)

    @exp.case("b", {"rate": [0.5]})
    def b(ctx, rate):
        return Workload(run=lambda: None)

    return {"demo": exp}


def test_axis_types_are_inferred_and_coerced():
    assert make_axis("n", [1, 2]).type is int
    assert make_axis("r", [1, 2.5]).type is float
    assert make_axis("s", "snappy").default == ("snappy",)
    ax = make_axis("n", [1])
    assert ax.coerce("42") == 42
    with pytest.raises(ValueError, match="takes int"):
        ax.coerce("4x")
    with pytest.raises(ValueError, match="takes int"):
        ax.coerce(True)
    assert make_axis("r", [0.5]).coerce(2) == 2.0
    assert make_axis("f", [True]).coerce("false") is False


def test_expand_is_a_product_without_invalid_combinations():
    reg = _registry()
    runs = plan(["demo.a"], ["mode=x,y"], reg).cases
    assert sorted((r.params["n"], r.params["mode"]) for r in runs) == [(1, "x"), (1, "y"), (2, "x")]
    assert len({r.identity for r in runs}) == 3


def test_set_applies_only_to_cases_with_that_axis():
    runs = plan(["demo"], ["rate=0.1,0.2"], _registry()).cases
    rates = sorted(r.params["rate"] for r in runs if r.spec.name == "b")
    assert rates == [0.1, 0.2]
    assert all("rate" not in r.params for r in runs if r.spec.name == "a")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        plan(["demo.a", "nope", "demo.zz"], ["n=one", "colour=red", "mode=z", "broken"], _registry())
    text = "\n".join(e.value.problems)
    for expected in ("unknown experiment 'nope'", "unknown case 'demo.zz'", "takes int values, got 'one'",
                     "no selected case has axis 'colour'", "takes one of ['x', 'y']", "'broken'"):
        assert expected in text, text


def test_suite_file_unknown_keys_and_axes_are_errors(tmp_path):
    suite = tmp_path / "mine.toml"
    suite.write_text('description = "x"\nrepeat = 3\n[defaults]\nrepeats = 2\nwarmups = 1\n'
                     '[[run]]\ntarget = "demo.a"\nset = { n = [3], colour = ["red"] }\nrepetas = 1\n')
    with pytest.raises(ConfigError) as e:
        plan([str(suite)], [], _registry())
    text = "\n".join(e.value.problems)
    assert "unknown key 'repeat'" in text and "[defaults]: unknown key 'warmups'" in text
    assert "has axis 'colour'" in text and "unknown key 'repetas'" in text


def test_suite_entries_carry_their_settings(tmp_path):
    suite = tmp_path / "ok.toml"
    suite.write_text('[defaults]\nrepeats = 2\n[[run]]\ntarget = "demo.b"\nset = { rate = [0.3] }\nrepeats = 7\n')
    p = plan([str(suite)], [], _registry())
    assert p.defaults == {"repeats": 2}
    assert [(c.params, c.repeats) for c in p.cases] == [({"rate": 0.3}, 7)]


def test_shipped_suites_are_valid():
    registry = load_all()
    for suite in ("quick", "full"):
        assert plan([suite], [], registry).cases, suite
