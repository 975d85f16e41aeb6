"""`harness ab`: paired, interleaved A/B measurement, the regression gate for noisy machines.

Side A and side B each run in a long-lived worker process of their own (an interpreter, a checkout, a Spark conf,
axis values). Per case, both workers build the case and warm up; then each pair takes one A sample and one B
sample back to back, in random order. A machine state that lasts seconds (a cloud VM's speed steps, a neighbour's
job) then hits both samples of a pair, and the paired log ratios cancel it, where two separate runs cannot.
The decision (decide.paired): one-sided Wilcoxon signed-rank on d = log(B/A), Benjamini-Hochberg across cases.
"""
from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .coordinator import (CaseFailed, Deadline, MachineProbe, WorkerHandle, WorkerLost, code_version, now_iso,
                          spark_route)
from .record import Result
from .spec import CaseRun
from .stats import summarize

SIDES = ("A", "B")


class AbError(Exception):
    """Unusable input for `ab` (exit 2): one line naming the problem and the fix."""


@dataclass
class Side:
    """What one side of the comparison runs: interpreter, checkout, Spark conf and axis values."""

    name: str  # "A" or "B"
    python: str = sys.executable
    rev: str | None = None  # a git revision checked out into a worktree, or None: this checkout
    code_root: Path | None = None  # where the worker imports harness from (set for --X-rev)
    conf: dict[str, str] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)  # --X-set items
    remote: str | None = None  # --X-remote: this side's Spark Connect server, instead of the run's master
    cases: list[CaseRun] = field(default_factory=list)
    worker: WorkerHandle | None = None
    records: list[Result] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        w = self.worker
        return {"side": self.name, "python": self.python, "rev": self.rev,
                "harness": str(self.code_root) if self.code_root else None, "conf": sorted(self.conf),
                "set": self.sets, "remote": self.remote, "spark": w.spark_info if w else None,
                "workers": w.starts if w else []}


def pair_plans(side_a: Side, side_b: Side) -> list[tuple[CaseRun, CaseRun]]:
    """Matches the two sides' cases one to one, or raises AbError saying why they don't pair."""
    a, b = side_a.cases, side_b.cases
    if len(a) != len(b) or any(x.spec.target != y.spec.target for x, y in zip(a, b)):
        raise AbError(f"side A has {len(a)} case(s) and side B {len(b)} after --a-set/--b-set: give each "
                      "--a-set/--b-set axis one value per side, so every A case has exactly one B partner")
    if not a:
        raise AbError("nothing to compare: the targets expand to no case")
    return list(zip(a, b))


# ---------------------------------------------------------------------------------------------- checkouts

def git_root(path: Path) -> Path:
    p = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if p.returncode != 0:
        raise AbError(f"--a-rev/--b-rev need a git checkout, and {path} is not one; use --a-python/--b-python "
                      "with another environment instead")
    return Path(p.stdout.strip())


def checkout(repo: Path, rev: str, into: Path) -> Path:
    """A detached worktree of `rev` at `into` (removed by `remove_checkout`); the worker imports harness there."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise AbError(f"git revision {rev!r} not found in {repo}; name a commit, branch or tag (e.g. HEAD~1, main)")
    p = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--force", str(into),
                        sha.stdout.strip()], capture_output=True, text=True)
    if p.returncode != 0:
        raise AbError(f"cannot check out {rev!r} into {into}: {p.stderr.strip().splitlines()[-1:]}")
    if not (into / "harness" / "worker.py").is_file():
        remove_checkout(repo, into)
        raise AbError(f"revision {rev!r} predates the worker process (harness/worker.py): `ab` can only drive "
                      "revisions that have it")
    return into


def remove_checkout(repo: Path, path: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


# ---------------------------------------------------------------------------------------------- one case

@dataclass
class _Attempt:
    """One side's part of a case: its record's fields as they fill."""

    side: Side
    case: CaseRun
    base: dict[str, Any]
    warm: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    failure: tuple[str, dict[str, str]] | None = None

    def result(self, machine: dict[str, Any]) -> Result:
        status, error = self.failure or ("ok", None)
        return Result(**self.base, samples=list(self.samples), warmup=list(self.warm),
                      stats=summarize(self.samples), extra=self.extra, status=status, error=error,
                      ended_at=now_iso(), machine=machine)


def undecided(a: Result, b: Result, threshold: float, alpha: float) -> bool:
    """After the first pairs: could neither a regression nor "no change" be told yet (so more pairs may help)?"""
    from . import decide

    cases = decide.paired([(a, b)], threshold, alpha, looks=2).cases
    return bool(cases) and cases[0].verdict == decide.INCONCLUSIVE


def measure_pair(a: CaseRun, b: CaseRun, sides: tuple[Side, Side], pairs: int, warmup: int, timeout_s: float,
                 rng: random.Random, run_id: str, env_id: str, progress, max_pairs: int | None = None,
                 threshold: float = 0.05, alpha: float = 0.05) -> tuple[Result, Result]:
    """Warm-ups on each side, then `pairs` pairs of single samples in random order; where those leave the case
    undecided, more pairs up to `max_pairs` (a second look, which decide.paired corrects for). One record per
    side; `extra.ab_first_look` says how many pairs the first look saw."""
    attempts = []
    for side, case in zip(sides, (a, b)):
        base = dict(run_id=run_id, experiment=case.spec.experiment, case=case.spec.name, params=case.params,
                    metric=case.spec.metric, unit=case.spec.unit, better=case.spec.better, env_id=env_id,
                    started_at=now_iso(), version=code_version(case.spec.build))
        attempts.append(_Attempt(side, case, base))
    probe = None
    live = list(attempts)
    alone: dict[str, str] = {}  # a side measured without a partner: why

    def fail(att: _Attempt, status: str, error: dict[str, str]) -> None:
        att.failure = (status, error)
        if att in live:
            live.remove(att)

    def step(att: _Attempt, what: str, fn, *_):
        try:
            return fn()
        except CaseFailed as e:
            att.base["version"] = e.version or att.base["version"]
            fail(att, e.status, e.error)
        except WorkerLost as e:
            fail(att, "error", {"type": "WorkerLost", "message": str(e)})
        except Deadline:
            why = att.side.worker.abort()
            fail(att, "timeout", {"type": "TimeoutError", "message": (
                f"side {att.side.name} ran past the case's {timeout_s:g} s timeout during {what}; "
                f"{len(att.samples)} of {pairs} paired samples were taken"
                + (f"; {why}, so it was replaced by a fresh worker" if why else ""))})
        return None

    try:
        progress.update("starting the workers")
        for att in list(live):
            step(att, "start-up", att.side.worker.ensure_started, 0)
        cold = [att for att in live if att.case.spec.spark and not att.side.worker.spark_started]
        if cold:  # both JVMs start at once: half the wait, and neither start is charged to a case
            progress.update("starting Spark")
            starts = [threading.Thread(target=step, args=(att, "Spark start-up", att.side.worker.start_spark, 0))
                      for att in cold]
            for t in starts:
                t.start()
            for t in starts:
                t.join()
        probe = MachineProbe()
        deadline = time.monotonic() + timeout_s
        for att in list(live):
            progress.update(f"side {att.side.name}: setup")
            built = step(att, "setup", lambda: att.side.worker.build(att.case, deadline), deadline)
            if built is not None:
                att.base["version"] = built.get("version") or att.base["version"]
        for att in list(live):
            if warmup:
                progress.update(f"side {att.side.name}: warm-up")
                step(att, "warm-up", lambda: att.warm.extend(
                    v for _, _, v in att.side.worker.samples(warmup, 0, deadline)), deadline)
        target, i = pairs, 0
        while len(live) == 2:
            if i == pairs and max_pairs and max_pairs > pairs and undecided(  # the first look
                    attempts[0].result({}), attempts[1].result({}), threshold, alpha):
                target = max_pairs
                progress.update(f"undecided after {pairs} pairs: taking up to {max_pairs}")
            if i >= target:
                break
            order = list(live)
            rng.shuffle(order)
            for att in order:
                step(att, f"pair {i + 1}", lambda: att.samples.extend(
                    v for _, _, v in att.side.worker.samples(0, 1, deadline)), deadline)
            if len(live) == 2:
                ra, rb = attempts[0].samples[-1], attempts[1].samples[-1]
                progress.update(f"pair {i + 1}/{target}: A {ra:.4g} s  B {rb:.4g} s  B/A {rb / ra:.3f}")
            i += 1
        if len(live) == 1 and not live[0].samples:
            # the other side can't run the case (e.g. unavailable on its stack): this side's figures are still a
            # measurement, taken alone and said to be unpaired, rather than an `ok` record without samples
            att = live[0]
            other = next(o for o in attempts if o is not att)
            progress.update(f"side {att.side.name} alone: {other.failure[0]} on side {other.side.name}")
            step(att, "unpaired samples", lambda: att.samples.extend(
                v for _, _, v in att.side.worker.samples(0, pairs, deadline)), deadline)
            alone[att.side.name] = (f"side {other.side.name}: {other.failure[0]}; samples taken alone")
        for att in list(live):
            extra = step(att, "checks", lambda: att.side.worker.finish(deadline), deadline)
            if extra is not None:
                att.extra = {**extra, **(spark_route(att.side.worker) if att.case.spec.spark else {})}
    finally:
        machine = probe.finish() if probe else {}
    if all(att.failure is None for att in attempts) and len(attempts[0].samples) != len(attempts[1].samples):
        attempts[0].failure = ("error", {"type": "Unpaired", "message": "the sides took different numbers of samples"})
    for att in attempts:
        att.extra = {**att.extra, "ab_side": att.side.name, "ab_pairs": len(att.samples), "ab_first_look": pairs}
        if att.side.name in alone:
            att.extra.update(ab_pairs=0, ab_unpaired=alone[att.side.name])
    return attempts[0].result(machine), attempts[1].result(machine)


def pin_to_cpu(worker: WorkerHandle, cpu: int) -> None:
    """Pins a worker (and what it starts later, which inherits the mask) to one CPU."""
    import psutil

    if worker.pid is not None:
        with contextlib.suppress(psutil.Error):
            psutil.Process(worker.pid).cpu_affinity([cpu])


