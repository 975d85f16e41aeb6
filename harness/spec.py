"""Experiments, cases and parameter grids; suite files (TOML) and `--set` overrides -> a list of case runs.

Parameters are declared as name -> values together. Invalid combinations never expand (a case's `valid`
predicate). Every problem in a suite or in `--set` is collected and reported at once, before anything runs.
"""
from __future__ import annotations

import itertools
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
                except ValueError:
                    raise ValueError(f"axis {self.name!r} takes {t.__name__} values, got {raw!r}") from None
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


SUITE_KEYS = {"description", "defaults", "run"}
DEFAULT_KEYS = {"repeats", "warmup", "timeout"}
ENTRY_KEYS = {"target", "set", "repeats", "warmup", "timeout"}


def parse_sets(items: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """`--set AXIS=V1,V2` strings -> {axis: [raw values]}; problems for malformed items."""
    out: dict[str, list[str]] = {}
    problems = []
    for item in items:
        axis, sep, vals = item.partition("=")
        if not sep or not axis.strip() or not vals.strip():
            problems.append(f"--set {item!r}: expected AXIS=V1[,V2...]")
            continue
        out.setdefault(axis.strip(), []).extend(v for v in vals.split(",") if v != "")
    return out, problems


def _coerce_values(axis: Axis, raws: list[Any], where: str, problems: list[str]) -> list[Any]:
    values = []
    for raw in raws:
        try:
            values.append(axis.coerce(raw))
        except ValueError as e:
            problems.append(f"{where}: {e}")
    return values


def _resolve(target: str, registry: dict, problems: list[str], where: str) -> list[CaseSpec]:
    from .registry import suggest

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


def load_suite_file(name: str) -> tuple[dict[str, Any], str]:
    """A suite by name (package data `harness/suites/<name>.toml`) or by path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        text, where = path.read_text(), str(path)
    else:
        res = resources.files("harness.suites").joinpath(f"{name}.toml")
        if not res.is_file():
            raise FileNotFoundError(name)
        text, where = res.read_text(), f"suite {name!r}"
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{where}: not valid TOML ({e})"]) from None


def is_suite(name: str) -> bool:
    try:
        load_suite_file(name)
        return True
    except FileNotFoundError:
        return False


def plan(targets: list[str], set_items: list[str], registry: dict) -> Plan:
    """Resolves suites / experiments / cases and --set overrides into case runs, or raises ConfigError."""
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
            suite, where = load_suite_file(target)
            description = suite.get("description", "")
            for key in sorted(set(suite) - SUITE_KEYS):
                problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(SUITE_KEYS))})")
            defaults = dict(suite.get("defaults", {}))
            for key in sorted(set(defaults) - DEFAULT_KEYS):
                problems.append(f"{where}: unknown key defaults.{key} (allowed: {', '.join(sorted(DEFAULT_KEYS))})")
            for i, entry in enumerate(suite.get("run", []), 1):
                ewhere = f"{where} [[run]] #{i}"
                for key in sorted(set(entry) - ENTRY_KEYS):
                    problems.append(f"{ewhere}: unknown key {key!r} (allowed: {', '.join(sorted(ENTRY_KEYS))})")
                if "target" not in entry:
                    problems.append(f"{ewhere}: missing 'target'")
                    continue
                specs = _resolve(entry["target"], registry, problems, ewhere)
                entry_sets = entry.get("set", {})
                for axis in sorted(entry_sets):
                    if specs and not any(axis in s.axes for s in specs):
                        problems.append(f"{ewhere}: no case of {entry['target']!r} has axis {axis!r}")
                entry_sets = {k: v if isinstance(v, list) else [v] for k, v in entry_sets.items()}
                # CLI --set overrides the suite's values for the same axis
                merged = {**entry_sets, **{k: v for k, v in sets.items()}}
                for run in _entries_for(specs, merged, ewhere, problems):
                    run.repeats, run.warmup, run.timeout = entry.get("repeats"), entry.get("warmup"), entry.get("timeout")
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
    if problems:
        raise ConfigError(problems)
    return Plan(list(unique.values()), description, defaults)
