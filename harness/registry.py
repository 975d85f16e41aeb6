"""Experiment registration (`experiment(...)`, `@exp.case(...)`) and lookup by id.

Experiment modules live in `harness/experiments/` and are discovered there; they must import heavy
libraries (Spark, TensorFlow, PyTorch) inside their builders only, so `harness list` stays fast.
"""
from __future__ import annotations

import difflib
import importlib
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
             metric: str = "wall_s", unit: str = "s", better: str = "lower", spark: bool = False):
        """Registers a case builder: `build(ctx, **params) -> Workload | SelfTimed`."""

        def register(build: Callable) -> Callable:
            if name in self.cases:
                raise ValueError(f"case {self.id}.{name} registered twice")
            self.cases[name] = CaseSpec(
                experiment=self.id, name=name, build=build,
                axes={n: make_axis(n, s) for n, s in (axes or {}).items()},
                doc=(build.__doc__ or "").strip().split("\n")[0], valid=valid,
                metric=metric, unit=unit, better=better, spark=spark)
            return build

        return register


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


def suggest(name: str, known, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    if close:
        return " (did you mean " + ", ".join(prefix + c for c in close) + "?)"
    return " (known: " + ", ".join(prefix + k for k in sorted(known)) + ")"


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
                                  **({"choices": list(a.choices)} if a.choices else {})}
                         for a in c.axes.values()},
            })
        out.append({"experiment": exp.id, "doc": exp.doc, "cases": cases})
    return out


__all__ = ["Axis", "Experiment", "experiment", "load_all", "describe", "suggest"]
