"""Machine + software fingerprint (`env.json`, `harness env`).

`env_id` hashes what makes numbers comparable (hardware, OS, software versions, git commit); the run's Spark
section (master, conf, start-up time) is recorded beside it but kept out of the hash, since it is captured
only once the session starts. Every captured mapping goes through masking.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .masking import mask_mapping

STACK = ["pyspark", "pyarrow", "numpy", "pandas", "petastorm", "torch", "tensorflow-cpu", "tensorflow", "keras",
         "horovod", "mlflow", "asv", "matplotlib", "pillow", "scipy", "psutil"]
# environment variables that change how the stack behaves; captured (masked) for the record
ENV_PREFIXES = ("SPARK_", "PYSPARK_", "JAVA_HOME", "HADOOP_", "MLFLOW_", "HOROVOD_", "OMP_", "MKL_", "OPENBLAS_",
                "CUDA_", "NCCL_", "TF_", "TORCH_", "AWS_", "AZURE_", "GOOGLE_", "ARROW_", "HARNESS_")
# keys that don't change the numbers, kept out of env_id
VOLATILE = {"captured_at", "spark", "environment"}


def _run(cmd: list[str], timeout: float = 10) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Physical cores (psutil), falling back to logical CPUs."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count()
    except ImportError:
        return os.cpu_count()


def memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return 0.0


def java_version() -> str | None:
    """The first line of `java -version`, or None when Java is missing."""
    if not shutil.which("java"):
        return None
    out = _run(["java", "-version"])
    return out.splitlines()[0] if out else None


def java_major() -> int | None:
    v = java_version()
    m = re.search(r'version "(\d+)(?:\.(\d+))?', v or "")
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def gpus() -> dict[str, Any]:
    """GPU names, driver, CUDA and NCCL where present; {'count': 0} on CPU-only machines."""
    info: dict[str, Any] = {"count": 0}
    if shutil.which("nvidia-smi"):
        out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
        rows = [r.split(", ") for r in out.splitlines() if r.count(",") >= 2 and "failed" not in r.lower()]
        if rows:
            info.update(count=len(rows), names=[r[0] for r in rows], driver=rows[0][1],
                        memory=[r[2] for r in rows])
            m = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]))
            info["cuda_driver"] = m.group(1) if m else None
    try:  # torch knows its CUDA/NCCL build when installed; cheap to ask only if already imported
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            info["torch_cuda"] = torch.version.cuda
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop the fingerprint
        pass
    return info


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in STACK:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(repo: Path | None = None) -> dict[str, Any]:
    repo = repo or Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists() or not shutil.which("git"):
        return {"commit": None, "dirty": None}
    commit = _run(["git", "-C", str(repo), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None, "dirty": bool(status)}


def captured_environment() -> dict[str, str]:
    return mask_mapping({k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)})


def fingerprint() -> dict[str, Any]:
    """Everything that makes two runs comparable, masked."""
    u = platform.uname()
    return {
        "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_model": cpu_model(), "cores": physical_cores(), "threads": os.cpu_count(),
                    "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "memory_gb": memory_gb(), "arch": u.machine, "hostname": u.node},
        "os": {"system": u.system, "release": u.release, "version": u.version},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "java": java_version(),
        "packages": package_versions(),
        "gpu": gpus(),
        "git": git_info(),
        "environment": captured_environment(),
    }


def env_id(env: dict[str, Any]) -> str:
    stable = {k: v for k, v in env.items() if k not in VOLATILE}
    # where the checkout or venv lives, and the host's name, don't change the numbers
    stable["machine"] = {k: v for k, v in stable.get("machine", {}).items() if k != "hostname"}
    stable["python"] = {k: v for k, v in stable.get("python", {}).items() if k != "executable"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:12]
