"""Plain helpers the tests import (`from support import ...`); fixtures live in conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"  # the real CSVs shipped with the repository


def run_case(ctx, target: str, repeats: int = 1, warmup: int = 0, timeout_s: float = 600, **params):
    """Runs one case in-process through the coordinator and the worker's own request handling (LocalWorker,
    on this test's RunContext; no timeouts there) and returns its Result."""
    from harness.coordinator import Coordinator, LocalWorker, Settings
    from harness.registry import load_all
    from harness.spec import CaseRun

    exp, _, case = target.partition(".")
    spec = load_all()[exp].cases[case]
    full = {n: a.default[0] for n, a in spec.axes.items()}
    full.update(params)
    coordinator = Coordinator(ctx.run_id, ctx.run_dir / "results.jsonl", "test-env", Settings(repeats, warmup, timeout_s))
    return coordinator.run_case(CaseRun(spec, full), LocalWorker(ctx))


def harness_cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path | None = None,
                input: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m harness ARGS` the way a user would; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, input=input)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
