"""Runs on disk: loading a run folder (the one loaded-run type every reader uses) and per-machine baselines.

A run folder is what `harness run` writes: `results.jsonl` (one record per case) and `env.json` (the machine and
software fingerprint). Loading is forgiving where it can be: malformed lines, records of an unknown schema and
records whose samples are not finite numbers are set aside and listed, and the rest still loads. The regression
gate is strict instead (`load_for_gate`): a set-aside record there is unusable input, not a case to skip.

Baselines are copies of run folders under RESULTS/baselines/<machine>/<run_id>/, picked by machine (CPU model,
core count, GPUs), so `harness compare baseline CURRENT` compares against a run from the same kind of machine.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import record
from .record import Result

BASELINES = "baselines"
BASELINE_META = "baseline.json"


class UnusableInput(ValueError):
    """A run folder, results file or baseline that cannot be used; the message names it and the fix."""


@dataclass
class LoadedRun:
    """One run as read from disk, for reports, `compare` and `baseline save`."""

    path: Path  # the folder holding the results file
    results_file: Path  # the results.jsonl read
    results: list[Result]  # the latest usable record per identity, in file order
    env: dict[str, Any] | None  # env.json, or None when missing or unreadable
    problems: list[str] = field(default_factory=list)  # every problem below, plus malformed lines and env.json
    set_aside: list[str] = field(default_factory=list)  # records not loaded: one line each, naming file and case
    label: str = ""  # short name on charts and tables: the run id
    note: str = ""  # how it was found, e.g. which stored baseline was picked

    @property
    def run_ids(self) -> list[str]:
        return sorted({r.run_id for r in self.results})


def load_run(path: Path | str) -> LoadedRun:
    """Reads a run folder (or its results.jsonl) and the env.json beside it.

    Raises UnusableInput when nothing usable is there; smaller problems are listed and the rest is kept.
    """
    p = Path(path)
    if not p.exists():
        raise UnusableInput(f"{p}: no such run folder or results file; pass a folder written by `harness run` "
                           f"(RESULTS/<run_id>) or its {record.RESULTS_FILE}")
    results_file = record.results_path(p)
    if not results_file.is_file():
        raise UnusableInput(f"{p}: not a run folder (no {record.RESULTS_FILE} in it); pass a folder written by "
                           "`harness run` (RESULTS/<run_id>)")
    try:
        results, problems = record.read(results_file)
    except OSError as e:  # record.StorageError: its message names the file and the fix
        raise UnusableInput(str(e)) from None
    if not results:
        detail = f" ({len(problems)} malformed line(s), first: {problems[0]})" if problems else " (it is empty)"
        raise UnusableInput(f"{results_file}: holds no readable records{detail}; rerun the cases, or pass another "
                           "run folder")
    usable, set_aside = [], []
    for r in record.dedupe_latest(results):  # the latest record of a case decides, usable or not
        why = _unusable(r)
        if why:
            set_aside.append(f"{results_file}: case {r.name} {json.dumps(r.params, sort_keys=True)}: {why}")
        else:
            usable.append(r)
    if not usable:
        raise UnusableInput(f"{set_aside[0]} (and no other record is usable)")
    env, env_problem = _read_env(results_file.parent / record.ENV_FILE)
    problems = problems + set_aside + ([env_problem] if env_problem else [])
    label = usable[0].run_id or results_file.parent.name
    return LoadedRun(results_file.parent, results_file, usable, env, problems, set_aside, label)


def _unusable(r: Result) -> str:
    """Why a record cannot be used (empty when it can): a schema this harness does not read, or samples that
    are not finite numbers. Records of an older schema would be upgraded here; schema 1 is the only one so far."""
    if isinstance(r.schema, bool) or not isinstance(r.schema, int) or not 1 <= r.schema <= record.SCHEMA:
        return (f"record schema {r.schema!r}, but this harness reads schema 1 to {record.SCHEMA}; read it with "
                "the harness version that wrote it, or rerun the case")
    if not isinstance(r.samples, list):
        return f"samples is {type(r.samples).__name__}, not a list; rerun the case"
    for x in r.samples:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return f"sample {x!r} is not a finite number; rerun the case (or remove its line)"
    return ""


def _read_env(env_file: Path) -> tuple[dict[str, Any] | None, str]:
    if not env_file.is_file():
        return None, (f"{env_file}: missing, so the machine and software are unknown "
                      "(`harness run` writes it; copy it from the machine that made the run)")
    try:
        env = json.loads(env_file.read_text(encoding="utf-8"))
        if not isinstance(env, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"{env_file}: unreadable ({e}); the machine and software are unknown"
    return env, ""


def load_for_gate(path: Path | str) -> LoadedRun:
    """`load_run` for the regression gate: a record set aside is unusable input (a gate that skipped a broken
    case would pass it)."""
    run = load_run(path)
    if run.set_aside:
        raise UnusableInput(run.set_aside[0])
    return run


# --- per-machine baselines -----------------------------------------------------------------------------------


def machine_key(env: dict[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint a baseline is stored under: CPU model, core count, GPUs."""
    m, g = env.get("machine", {}) or {}, env.get("gpu", {}) or {}
    return {"cpu_model": m.get("cpu_model"), "cores": m.get("cores"),
            "gpus": sorted(g.get("names", []) or []) if g.get("count") else []}


def machine_slug(env: dict[str, Any]) -> str:
    """A readable, stable folder name for a machine: `<cpu>-<N>c[-<gpu>]-<hash>`."""
    key = machine_key(env)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    cpu = re.sub(r"[^a-z0-9]+", "-", str(key["cpu_model"] or "unknown-cpu").lower()).strip("-")[:40]
    gpu = ("-" + re.sub(r"[^a-z0-9]+", "-", key["gpus"][0].lower()).strip("-")[:24]) if key["gpus"] else ""
    return f"{cpu}-{key['cores']}c{gpu}-{digest}"


def describe_machine(env: dict[str, Any]) -> str:
    k = machine_key(env)
    gpus = ", ".join(k["gpus"]) if k["gpus"] else "no GPU"
    return f"{k['cpu_model']}, {k['cores']} cores, {gpus}"


def save_baseline(run_dir: Path, results_root: Path) -> Path:
    """Copies a run (results.jsonl + env.json) to RESULTS/baselines/<machine>/<run_id>/; returns that folder."""
    run_dir = Path(run_dir)
    run = load_for_gate(run_dir)
    if not run.env:
        raise UnusableInput(f"{run_dir}: no {record.ENV_FILE} beside the results, so the machine is unknown; "
                           f"save a folder written by `harness run`")
    ok = [r for r in run.results if r.status == "ok" and r.samples]
    if not ok:
        raise UnusableInput(f"{run.results_file}: no case finished ok with samples; a baseline needs measured cases")
    from .env import fingerprint

    here = fingerprint()
    if machine_key(here) != machine_key(run.env):
        print(f"harness: warning: {run_dir} was measured on another machine ({describe_machine(run.env)}); "
              f"stored under that machine, not this one ({describe_machine(here)})", file=sys.stderr)
    run_id = run.results[0].run_id
    dest = Path(results_root) / BASELINES / machine_slug(run.env) / run_id
    try:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.results_file, dest / record.RESULTS_FILE)
        record.write_json(dest / record.ENV_FILE, run.env)
        record.write_json(dest / BASELINE_META, {
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "source": str(run_dir.resolve()), "run_id": run_id, "machine": machine_key(run.env),
            "cases_ok": len(ok), "cases": len(run.results)})
    except OSError as e:
        raise UnusableInput(f"cannot store the baseline in {dest}: {e}; make {results_root} writable, or pass "
                            "--results DIR") from None
    return dest


def find_baseline(roots: list[Path], env: dict[str, Any]) -> tuple[Path, str]:
    """The newest stored baseline whose machine matches `env`'s, and a note saying which; raises UnusableInput
    listing what exists."""
    want = machine_key(env)
    found, others = [], []
    for root in roots:
        base = root / BASELINES
        if not base.is_dir():
            continue
        for meta in base.glob(f"*/*/{BASELINE_META}"):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if info.get("machine") == want:
                found.append((info.get("saved_at", ""), meta.parent, info))
            else:
                others.append(meta.parent)
    if not found:
        where = " or ".join(str(r / BASELINES) for r in roots)
        msg = f"no stored baseline for this machine ({describe_machine(env)}) under {where}"
        if others:
            msg += f"; baselines there are for other machines: {', '.join(str(o) for o in others[:5])}"
        raise UnusableInput(msg + "; store one with `harness baseline save RESULTS/<run_id>`, or pass a run folder "
                                 "as BASELINE")
    saved_at, path, info = max(found, key=lambda t: t[0])
    note = f"stored baseline {path} (run {info.get('run_id')}, saved {saved_at}"
    note += f"; newest of {len(found)})" if len(found) > 1 else ")"
    return path, note


def resolve_pair(baseline: str, current: str, results_root: Path | None = None) -> tuple[LoadedRun, LoadedRun]:
    """`harness compare`'s two sides. BASELINE `baseline` means the newest stored baseline for CURRENT's machine,
    looked up under results_root (default $HARNESS_RESULTS or ./results) and beside CURRENT's run folder."""
    cur = load_for_gate(current)
    if baseline == "baseline" and not Path(baseline).exists():
        # the machine to match is CURRENT's (its env.json); a bare results file falls back to this machine
        env = cur.env
        if not env:
            from .env import fingerprint

            env = fingerprint()
        roots = [Path(results_root or os.environ.get("HARNESS_RESULTS", "results"))]
        parent_root = cur.path.parent  # CURRENT is usually RESULTS/<run_id>
        if parent_root.resolve() not in {r.resolve() for r in roots}:
            roots.append(parent_root)
        path, note = find_baseline(roots, env)
        base = load_for_gate(path)
        base.note = note
        return base, cur
    try:
        return load_for_gate(baseline), cur
    except UnusableInput as e:
        raise UnusableInput(f"{e} (or `baseline` for this machine's stored baseline)") from None


# --- fingerprint differences ---------------------------------------------------------------------------------


def _flatten(env: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = env.get("machine", {}) or {}
    for k in ("cpu_model", "cores", "cores_available", "memory_gb", "arch"):
        out[f"machine.{k}"] = m.get(k)
    g = env.get("gpu", {}) or {}
    for k in ("count", "names", "driver", "cuda_driver", "torch_cuda", "nccl"):
        out[f"gpu.{k}"] = g.get(k)
    out["os.release"] = (env.get("os") or {}).get("release")
    out["python"] = (env.get("python") or {}).get("version")
    out["java"] = env.get("java")
    for k, v in sorted((env.get("packages") or {}).items()):
        out[f"packages.{k}"] = v
    out["git.commit"] = (env.get("git") or {}).get("commit")
    return out


def fingerprint_differences(base_env: dict[str, Any] | None, cur_env: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every fingerprint field that differs (hardware, GPU stack, OS, Python, Java, packages, commit)."""
    if not base_env or not cur_env:
        missing = "baseline" if not base_env else "current"
        return [{"key": "env.json", "baseline": bool(base_env), "current": bool(cur_env),
                 "note": f"{missing} has no env.json: its machine and versions are unknown"}]
    a, b = _flatten(base_env), _flatten(cur_env)
    return [{"key": k, "baseline": a.get(k), "current": b.get(k)} for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
