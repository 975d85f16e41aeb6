"""The emulated cluster (scripts/emulated-cluster.sh) as the scaling experiment sees it: its state file, its link
rate (changed between cases with the script's `rate`), the rate tc really applies, and which ranks share a
physical core (read from /sys, so the record says when "two hosts" were one core)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

LOOPBACK = "loopback"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "emulated-cluster.sh"
_RATE = re.compile(r"^(\d+)(kbit|mbit|gbit)$")
_UNITS = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


class Network(str):
    """A `network` axis value: `loopback`, or a tc rate such as 10gbit, 1gbit, 100mbit."""

    def __new__(cls, value: str):
        value = str(value).strip().lower()
        if value != LOOPBACK and not _RATE.match(value):
            raise ValueError(f"network takes loopback or a link rate like 1gbit / 100mbit, got {value!r}")
        return super().__new__(cls, value)


def rate_bits(rate: str) -> int:
    m = _RATE.match(rate)
    if not m:
        raise ValueError(f"not a link rate: {rate!r} (e.g. 1gbit, 100mbit)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def state_dir() -> Path:
    return Path(os.environ.get("HCL_DIR", "/tmp/harness-emulated-cluster"))


def read_state() -> dict | None:
    """The running cluster's KEY=VALUE state (MASTER, DRIVER_IP, RATE, IFACE, PREFIX, N, WORKERS), or None."""
    path = state_dir() / "state"
    if not path.is_file():
        return None
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def up_command(rate: str) -> str:
    return f"sudo {SCRIPT} up 2 --rate {rate}"


def check(master: str, driver_host: str | None, rate: str) -> tuple[dict, str | None]:
    """(the cluster's state, why this run can't use it or None)."""
    state = read_state()
    if state is None:
        return {}, (f"network={rate} runs the ranks on the emulated cluster, which is not up: start it with "
                    f"`{up_command(rate)}` and run the harness in its driver namespace as the script prints")
    if master != state.get("MASTER"):
        return state, (f"network={rate} needs this run's master to be the emulated cluster's {state.get('MASTER')} "
                       f"(this run's is {master}): run the command `{SCRIPT} up` printed")
    if driver_host != state.get("DRIVER_IP"):
        return state, (f"network={rate}: the workers reach the driver at spark.driver.host, which must be the "
                       f"driver namespace's {state.get('DRIVER_IP')} (it is {driver_host}): add --conf "
                       f"spark.driver.host={state.get('DRIVER_IP')} --conf spark.driver.bindAddress="
                       f"{state.get('DRIVER_IP')}")
    return state, None


def set_rate(rate: str, timeout_s: float = 60) -> dict:
    """Re-shapes the running cluster's links to `rate` (the script's `rate`) unless they already have it;
    returns the state and the rate tc reports on every bridge-side link."""
    state = read_state() or {}
    if state.get("RATE") != rate:
        done = subprocess.run(["bash", str(SCRIPT), "rate", rate], capture_output=True, text=True,
                              timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"{SCRIPT.name} rate {rate} failed: {(done.stderr or done.stdout).strip()}")
        state = read_state() or {}
    return {**state, "applied": applied_rates(state.get("PREFIX", "hcl"))}


def applied_rates(prefix: str) -> dict[str, str]:
    """{bridge-side link: the tbf rate tc shows on it} in the cluster's hub namespace."""
    out = subprocess.run(["ip", "netns", "exec", f"{prefix}-hub", "tc", "qdisc", "show"], capture_output=True,
                         text=True, timeout=30).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"qdisc tbf \S+ dev (\S+) .*?rate (\S+)", out)}


# ---- which ranks share a physical core ------------------------------------------------------------------------

def core_of_cpu(sys_cpu: Path = Path("/sys/devices/system/cpu")) -> dict[int, tuple[int, int]]:
    """{logical cpu: (package id, core id)} from sysfs; hyperthreads of one core map to the same pair."""
    out = {}
    for d in sys_cpu.glob("cpu[0-9]*"):
        topo = d / "topology"
        try:
            out[int(d.name[3:])] = (int((topo / "physical_package_id").read_text()),
                                    int((topo / "core_id").read_text()))
        except (OSError, ValueError):
            continue
    return out


def core_sharing(affinities: dict[int, list[int]], topology: dict[int, tuple[int, int]]) -> dict:
    """From each rank's CPU affinity: the physical cores each rank may run on, and the groups of ranks that can
    land on one physical core (empty when every rank has cores of its own)."""
    cores = {rank: sorted({topology.get(c, (0, c)) for c in cpus}) for rank, cpus in affinities.items()}
    shared: dict[tuple[int, int], list[int]] = {}
    for rank, cs in cores.items():
        for c in cs:
            shared.setdefault(c, []).append(rank)
    groups = sorted({tuple(sorted(rs)) for rs in shared.values() if len(rs) > 1})
    return {"rank_physical_cores": {str(r): [list(c) for c in cs] for r, cs in sorted(cores.items())},
            "ranks_sharing_a_core": [list(g) for g in groups],
            "physical_cores": len(set(topology.values()))}
