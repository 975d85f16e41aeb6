"""Runs a function in a separate Python process (one framework per process, launchers such as horovodrun).

`run_function("pkg.module:func", kwargs, timeout_s)` starts a Python child on this same harness checkout, which
imports the function, calls it with kwargs and writes its JSON-able return value to a file. The child's output is
kept; on failure its tail goes into the exception, and so into the record. Children run in their own process
group, so a timeout or a cancel kills everything they started (ranks, launchers); the registry of running
children belongs to the worker process, and a worker killed by the coordinator takes its children with it.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

# the child imports the harness of this checkout, whatever its working folder holds
HARNESS_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from harness.isolation import _child_main; _child_main(*sys.argv[1:])"
_children: set[subprocess.Popen] = set()
_lock = threading.Lock()


class ChildFailed(RuntimeError):
    """The child exited non-zero; the message ends with the tail of its output."""


class ChildTimeout(TimeoutError):
    pass


def tail(text: str, lines: int = 40) -> str:
    """The last lines of a process's output, for error records."""
    return "\n".join(text.strip().splitlines()[-lines:])


def run_command(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None,
                cwd: str | None = None, what: str | None = None) -> str:
    """Runs a command in its own process group; returns its output; raises ChildFailed / ChildTimeout."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)
        with _lock:
            _children.add(proc)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            log.seek(0)
            raise ChildTimeout(f"{what or cmd[0]} ran past {timeout_s:.0f} s and was killed\n{tail(log.read())}") from None
        finally:
            with _lock:
                _children.discard(proc)
            _kill(proc)  # reap anything the child left in its group
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        raise ChildFailed(f"{what or ' '.join(cmd[:3]) + '...'} exited with {proc.returncode}:\n{tail(out)}")
    return out


def run_function(target: str, kwargs: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Calls `module:function(**kwargs)` in a fresh interpreter and returns its JSON result."""
    with tempfile.TemporaryDirectory(prefix="harness-child-") as tmp:
        args, result = Path(tmp, "args.json"), Path(tmp, "result.json")
        args.write_text(json.dumps({"target": target, "kwargs": kwargs}))
        run_command([sys.executable, "-c", _BOOT, HARNESS_ROOT, str(args), str(result)], timeout_s, env,
                    what=f"{target} (in a child process)")
        out = json.loads(result.read_text())
    if isinstance(out, dict) and "__raise__" in out:  # Unavailable / CheckFailed cross the process boundary
        from . import workload
        raise getattr(workload, out["__raise__"])(out["message"])
    return out


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def kill_all() -> None:
    """Kills every running child group (case timeout, Ctrl-C)."""
    with _lock:
        procs = list(_children)
    for p in procs:
        _kill(p)


def _child_main(args_path: str, result_path: str) -> None:
    spec = json.loads(Path(args_path).read_text())
    module, _, func = spec["target"].partition(":")
    from .workload import CheckFailed, Unavailable

    fn = getattr(importlib.import_module(module), func)
    try:
        out = fn(**spec["kwargs"])
    except (Unavailable, CheckFailed) as e:
        out = {"__raise__": type(e).__name__, "message": str(e)}
    Path(result_path).write_text(json.dumps(out))


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
