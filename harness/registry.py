"""Experiment registration (`experiment(...)`, `@exp.case(...)`) and lookup by id.

Experiment modules live in `harness/experiments/` and are discovered there; they must import heavy
libraries (Spark, TensorFlow, PyTorch) inside their builders only, so `harness list` stays fast.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from .spec import Axis, CaseSpec, make_axis

_REGISTRY: dict[str, "Experiment"] = {}


@dataclass
class Experiment:
    id: str
    doc: str
    cases: dict[str, CaseSpec] = field(default_factory=dict)

    def case(self, name: str, axes: dict[str, Any] | None = None, *, valid: Callable | None = None,
             metric: str = "wall_s", unit: str = "s", better: str = "lower", spark: bool = False,
             version: str | None = None, reference: str | None = None, limit: str | None = None):
        """Registers a case builder: `build(ctx, **params) -> Workload | SelfTimed`.

        `version` names the case's code version in its records; by default it is a hash of the builder's
        source (see `code_version`). Give one when the measured code lives where the hash cannot see it.
        `reference` and `limit` name cases of this experiment that this one is judged against: its speedup is
        over `reference` (run with the same params), `limit` bounds what it could reach (no Spark, no Python,
        in memory). Declared here only; records carry them (extra["roles"]) for the report.
        """
        roles = {k: v for k, v in (("reference", reference), ("limit", limit)) if v}

        def register(build: Callable) -> Callable:
            if name in self.cases:
                raise ValueError(f"case {self.id}.{name} registered twice")
            if version is not None:
                build.version = str(version)  # read by code_version, as asv reads a benchmark's `version`
            self.cases[name] = CaseSpec(
                experiment=self.id, name=name, build=build,
                axes={n: make_axis(n, s) for n, s in (axes or {}).items()},
                doc=(build.__doc__ or "").strip().split("\n")[0], valid=valid,
                metric=metric, unit=unit, better=better, spark=spark, roles=roles)
            return build

        return register


def code_version(build: Callable) -> str:
    """A case's code version: its explicit `version`, else a short hash of the builder's source together with
    the same module's functions it calls (transitively) and the constants its closure binds, so that changing a
    helper such as udf's `build_case` changes the version of every case built by it."""
    explicit = getattr(build, "version", None)
    if explicit is not None:
        return str(explicit)
    module = inspect.getmodule(build)
    seen: set[int] = set()
    parts: list[str] = []
    todo = [build]
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):  # no source file (e.g. built in an interpreter): its name stands in
            parts.append(fn.__qualname__)
        for cell in fn.__closure__ or ():
            value = cell.cell_contents
            if inspect.isfunction(value):
                todo.append(value)
            elif isinstance(value, (str, int, float, bool, tuple)):
                parts.append(repr(value))
        for name in sorted(_names(fn.__code__)):
            found = getattr(module, name, None)
            if inspect.isfunction(found) and found.__module__ == fn.__module__:
                todo.append(found)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _names(code) -> set[str]:
    """Global names a code object and the functions nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names


def experiment(exp_id: str, doc: str) -> Experiment:
    if exp_id in _REGISTRY:
        return _REGISTRY[exp_id]
    exp = _REGISTRY[exp_id] = Experiment(exp_id, doc)
    return exp


def load_all() -> dict[str, Experiment]:
    """Imports every module in harness.experiments (each registers itself) and returns the registry."""
    from . import experiments

    for mod in pkgutil.iter_modules(experiments.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{experiments.__name__}.{mod.name}")
    return _REGISTRY


def describe(registry: dict[str, Experiment]) -> list[dict[str, Any]]:
    """JSON-ready listing: experiments, their cases and axes with defaults."""
    out = []
    for exp in sorted(registry.values(), key=lambda e: e.id):
        cases = []
        for c in exp.cases.values():
            cases.append({
                "case": c.name, "target": c.target, "doc": c.doc, "metric": c.metric, "unit": c.unit,
                "better": c.better, "spark": c.spark,
                "axes": {a.name: {"default": list(a.default), "type": a.type.__name__,
                                  **({"choices": list(a.choices)} if a.choices else {}),
                                  **({"help": a.help} if a.help else {})}
                         for a in c.axes.values()},
            })
        out.append({"experiment": exp.id, "doc": exp.doc, "cases": cases})
    return out


__all__ = ["Axis", "Experiment", "code_version", "experiment", "load_all", "describe"]
