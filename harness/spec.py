"""Experiments, cases and parameter grids; suite files (TOML) and `--set` overrides -> a list of case runs.

Parameters are declared as name -> values together. Invalid combinations never expand (a case's `valid`
predicate). Every problem in a suite (the type of every key) or in `--set` is collected and reported at once,
before anything runs, and so is a plan that would run nothing. `registry.py` builds on this module, never the
other way round: planning takes the registry as an argument.
"""
from __future__ import annotations

import difflib
import itertools
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .record import identity


class ConfigError(Exception):
    """Bad targets, axes, values or suite files; carries every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Axis:
    name: str
    default: tuple  # the values run when nothing overrides them
    type: type
    choices: tuple | None = None
    help: str = ""

    def coerce(self, raw: Any) -> Any:
        """Converts a --set string or a TOML value to this axis' type; raises ValueError naming the problem."""
        t = self.type
        if isinstance(raw, str) and t is not str:
            s = raw.strip()
            if t is bool:
                if s.lower() in ("true", "1", "yes"):
                    value: Any = True
                elif s.lower() in ("false", "0", "no"):
                    value = False
                else:
                    raise ValueError(f"axis {self.name!r} takes true/false, got {raw!r}")
            else:
                try:
                    value = t(s)
                except ValueError as e:
                    # int()/float() say "invalid literal ..."; an axis' own type (e.g. Network) names the fix
                    why = "" if t in (int, float) else f": {e}"
                    raise ValueError(f"axis {self.name!r} takes {t.__name__} values, got {raw!r}{why}") from None
        else:
            value = raw
            ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
            if t is float and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
            if not ok:
                raise ValueError(f"axis {self.name!r} takes {t.__name__} values, got {raw!r} ({type(raw).__name__})")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"axis {self.name!r} takes one of {list(self.choices)}, got {value!r}")
        return value


def make_axis(name: str, spec: Any) -> Axis:
    """Accepts an Axis, a list of default values, or a single default value."""
    if isinstance(spec, Axis):
        return spec
    values = tuple(spec) if isinstance(spec, (list, tuple)) else (spec,)
    if not values:
        raise ValueError(f"axis {name!r} needs at least one default value")
    types = {type(v) for v in values}
    t = float if types == {int, float} else types.pop() if len(types) == 1 else None
    if t not in (int, float, str, bool):
        raise ValueError(f"axis {name!r}: defaults must share one of int/float/str/bool")
    return Axis(name, values, t)


@dataclass
class CaseSpec:
    experiment: str
    name: str
    build: Callable[..., Any]  # build(ctx, **params) -> Workload | SelfTimed
    axes: dict[str, Axis]
    doc: str = ""
    valid: Callable[[dict[str, Any]], bool] | None = None
    metric: str = "wall_s"
    unit: str = "s"
    better: str = "lower"
    spark: bool = False  # needs the run's SparkSession (checked for Java before anything runs)
    # cases of the same experiment this one is judged against: {"reference": case its speedup is over,
    # "limit": case bounding what it could reach}; stored in each record's extra["roles"] for the report
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.experiment}.{self.name}"

    def expand(self, values: dict[str, list[Any]]) -> list["CaseRun"]:
        """Cartesian product over axes (overrides replace defaults), dropping invalid combinations."""
        names = sorted(self.axes)
        grids = [values.get(n, list(self.axes[n].default)) for n in names]
        out = []
        for combo in itertools.product(*grids):
            params = dict(zip(names, combo))
            if self.valid is None or self.valid(params):
                out.append(CaseRun(self, params))
        return out


@dataclass
class CaseRun:
    """One expanded case: a spec with concrete params, plus how to run it."""

    spec: CaseSpec
    params: dict[str, Any]
    repeats: int | None = None
    warmup: int | None = None
    timeout: float | None = None

    @property
    def identity(self) -> str:
        return identity(self.spec.experiment, self.spec.name, self.params)

    @property
    def label(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.spec.target} {ps}".strip()


@dataclass
class Plan:
    cases: list[CaseRun]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # repeats / warmup / timeout from a suite


SETTINGS = ("repeats", "warmup", "timeout")  # per-case run settings a suite or the command line may give
SUITE_KEYS = {"description", "defaults", "run"}
ENTRY_KEYS = {"target", "set", *SETTINGS}
SUITE_EXAMPLE = '[[run]] target = "calibration.sleep"'


def setting_problem(name: str, value: Any) -> str | None:
    """What a repeats / warmup / timeout value must be when `value` is not valid for it; None when it is."""
    if name == "timeout":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return None
        return "a finite number of seconds > 0, e.g. 600"
    low = 1 if name == "repeats" else 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return None
    return f"a whole number >= {low}, e.g. {low + 2}"


def suggest(name: str, known, prefix: str = "") -> str:
    """' (did you mean ...?)' for a mistyped name, else the list of known names."""
    close = difflib.get_close_matches(name, list(known), n=3)
    if close:
        return " (did you mean " + ", ".join(prefix + c for c in close) + "?)"
    return " (known: " + ", ".join(prefix + k for k in sorted(known)) + ")"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_sets(items: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """`--set AXIS=V1,V2` strings -> {axis: [raw values]}; problems for malformed items."""
    out: dict[str, list[str]] = {}
    problems = []
    for item in items:
        axis, sep, vals = item.partition("=")
        values = [v for v in vals.split(",") if v.strip()]
        if not sep or not axis.strip() or not values:
            problems.append(f"--set {item!r}: expected AXIS=V1[,V2...] with at least one value, e.g. ms=10,20")
            continue
        out.setdefault(axis.strip(), []).extend(values)
    return out, problems


def _coerce_values(axis: Axis, raws: list[Any], where: str, problems: list[str]) -> list[Any]:
    values = []
    for raw in raws:
        try:
            values.append(axis.coerce(raw))
        except ValueError as e:
            problems.append(f"{where}: {e}")
    return values


def _resolve(target: Any, registry: dict, problems: list[str], where: str) -> list[CaseSpec]:
    if not isinstance(target, str) or not target:
        problems.append(f"{where}: target must be a name in quotes, e.g. target = \"calibration.sleep\", "
                        f"got {_short(target)}")
        return []
    exp_id, _, case = target.partition(".")
    exp = registry.get(exp_id)
    if exp is None:
        problems.append(f"{where}: unknown experiment {exp_id!r}{suggest(exp_id, registry)}")
        return []
    if not case:
        return list(exp.cases.values())
    if case not in exp.cases:
        problems.append(f"{where}: unknown case {target!r}{suggest(case, exp.cases, prefix=exp_id + '.')}")
        return []
    return [exp.cases[case]]


def _entries_for(specs: list[CaseSpec], sets: dict[str, list[Any]], where: str,
                 problems: list[str]) -> list[CaseRun]:
    runs = []
    for spec in specs:
        values = {}
        for name, raws in sets.items():
            if name in spec.axes:
                values[name] = _coerce_values(spec.axes[name], raws, f"{where} {spec.target}", problems)
        runs.extend(spec.expand(values))
    return runs


def _suite_path(name: str):
    """Where suite `name` lives (a .toml path, or the package's `harness/suites/<name>.toml`), or None."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    res = resources.files("harness.suites").joinpath(f"{name}.toml")
    return res if res.is_file() else None


def is_suite(name: str) -> bool:
    return _suite_path(name) is not None


def load_suite_file(name: str) -> tuple[dict[str, Any], str]:
    """A suite by name (package data `harness/suites/<name>.toml`) or by path to a TOML file."""
    source = _suite_path(name)
    if source is None:
        raise FileNotFoundError(name)
    where = str(source) if isinstance(source, Path) else f"suite {name!r}"
    try:
        text = source.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{where}: cannot be read ({e.strerror or e}); check its permissions"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not a TOML text file (it is not UTF-8 text); pass a suite file like "
                           "harness/suites/quick.toml"]) from None
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{where}: not valid TOML ({e}); see harness/suites/quick.toml for the format"]) from None


def _check_settings(table: dict, where: str, problems: list[str]) -> None:
    for name in SETTINGS:
        if name in table and (need := setting_problem(name, table[name])):
            problems.append(f"{where}: {name} = {_short(table[name])} is not valid; {name} takes {need}")


def _check_keys(table: dict, allowed: set[str], where: str, problems: list[str]) -> None:
    for key in sorted(set(table) - allowed):
        problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _check_suite(suite: dict, where: str, problems: list[str]) -> tuple[str, dict, list[dict]]:
    """Checks the type of every key of a suite; returns (description, defaults, [[run]] entries), each as far
    as it is usable, so that every problem of the file is found in one pass."""
    _check_keys(suite, SUITE_KEYS, where, problems)
    description = suite.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{where}: description must be a string, got {_short(description)}")
        description = ""
    defaults = suite.get("defaults", {})
    if isinstance(defaults, dict):
        _check_keys(defaults, set(SETTINGS), f"{where} [defaults]", problems)
        _check_settings(defaults, f"{where} [defaults]", problems)
    else:
        problems.append(f"{where}: defaults must be a table ([defaults] with {', '.join(SETTINGS)}), "
                        f"got {_short(defaults)}")
        defaults = {}
    entries = suite.get("run", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(f"{where}: run must be a list of [[run]] tables, e.g. {SUITE_EXAMPLE}, got {_short(entries)}")
        entries = []
    elif not entries:
        problems.append(f"{where}: no [[run]] entry, so nothing would run; add one, e.g. {SUITE_EXAMPLE}")
    return description, {k: v for k, v in defaults.items() if k in SETTINGS}, entries


def _check_entry(entry: dict, where: str, problems: list[str]) -> dict[str, list[Any]]:
    """Checks a [[run]] entry's keys and settings; returns its `set` table as {axis: [values]}."""
    _check_keys(entry, ENTRY_KEYS, where, problems)
    _check_settings(entry, where, problems)
    if "target" not in entry:
        problems.append(f"{where}: missing 'target', e.g. target = \"calibration.sleep\"")
    entry_sets = entry.get("set", {})
    if not isinstance(entry_sets, dict):
        problems.append(f"{where}: set must be a table of axis values, e.g. set = {{ ms = [10, 20] }}, "
                        f"got {_short(entry_sets)}")
        return {}
    out = {}
    for axis, values in entry_sets.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            problems.append(f"{where}: set.{axis} is an empty list; give at least one value or leave the axis out")
        out[axis] = values
    return out


def _nothing_runs(specs: list[CaseSpec]) -> str:
    """Why a plan whose targets all resolved holds no case: every combination of values was ruled out."""
    names = ", ".join(dict.fromkeys(s.target for s in specs))
    rules = [d for d in dict.fromkeys((s.valid.__doc__ or "").strip().splitlines()[0] for s in specs
                                      if s.valid is not None and s.valid.__doc__) if d]
    why = f" ({' '.join(rules)})" if rules else ""
    return (f"nothing would run: every combination of the values given is ruled out for {names}{why}; "
            "pick other --set values (`harness list` shows each case's axes and defaults)")


def plan(targets: list[str], set_items: list[str], registry: dict) -> Plan:
    """Resolves suites / experiments / cases and --set overrides into case runs, or raises ConfigError.

    Suites are checked whole (every key's type) and a plan that would run nothing is an error too."""
    problems: list[str] = []
    sets, set_problems = parse_sets(set_items)
    problems += set_problems
    cases: list[CaseRun] = []
    description, defaults = "", {}
    selected_specs: list[CaseSpec] = []
    for target in targets:
        if target.endswith(".toml") and not Path(target).is_file():
            problems.append(f"suite file {target}: not found (built-in suites: quick, full)")
            continue
        if (target.endswith(".toml") or ("." not in target and target not in registry)) and is_suite(target):
            try:
                suite, where = load_suite_file(target)
            except ConfigError as e:
                problems += e.problems
                continue
            description, defaults, entries = _check_suite(suite, where, problems)
            for i, entry in enumerate(entries, 1):
                ewhere = f"{where} [[run]] #{i}"
                entry_sets = _check_entry(entry, ewhere, problems)
                if "target" not in entry:
                    continue
                specs = _resolve(entry["target"], registry, problems, ewhere)
                for axis in sorted(entry_sets):
                    if specs and not any(axis in s.axes for s in specs):
                        problems.append(f"{ewhere}: no case of {entry['target']!r} has axis {axis!r}")
                # CLI --set overrides the suite's values for the same axis
                merged = {**entry_sets, **sets}
                for run in _entries_for(specs, merged, ewhere, problems):
                    run.repeats, run.warmup, run.timeout = (entry.get(k) for k in SETTINGS)
                    cases.append(run)
                selected_specs += specs
        else:
            specs = _resolve(target, registry, problems, f"target {target!r}")
            cases += _entries_for(specs, sets, "--set", problems)
            selected_specs += specs
    for axis in sorted(sets):
        if selected_specs and not any(axis in s.axes for s in selected_specs):
            known = sorted({a for s in selected_specs for a in s.axes})
            problems.append(f"--set {axis}: no selected case has axis {axis!r} (axes: {', '.join(known) or 'none'})")
    if not targets:
        problems.append("no target given: name a suite (quick, full), an experiment or a case; see `harness list`")
    # a case may be selected twice (a suite and an explicit target); run it once
    unique: dict[str, CaseRun] = {}
    for c in cases:
        unique.setdefault(c.identity, c)
    if not unique and selected_specs and not problems:
        problems.append(_nothing_runs(selected_specs))
    if problems:
        raise ConfigError(problems)
    return Plan(list(unique.values()), description, defaults)
