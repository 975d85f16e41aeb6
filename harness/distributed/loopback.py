"""Keeps the scaling launchers' servers off every network but loopback.

The launchers' libraries bind their servers to every interface and give no option to choose (Gloo's own
pairs aside, which follow `lo`): horovodrun's and horovod.spark's Gloo rendezvous and services (Python
`socketserver` on `('', port)`), TensorFlow's gRPC server (`0.0.0.0`/`[::]`, fixed in its C++ code), torchrun's
rendezvous store (c10d TCPStore, any address) and TorchDistributor's log server (`0.0.0.0`). Two remedies, each
where it applies:

- `Namespace`: the process trees the harness starts (horovodrun, TF workers, torchrun) run in a private network
  namespace holding only loopback, shared by all ranks of one launch; nothing in it is reachable from another
  host. It needs root or unprivileged user namespaces (`unshare`, `nsenter`, `ip`); where the machine allows
  neither, the launcher runs as before and its record says that it listens beyond loopback (`not_isolated`).
- `loopback_servers()`: Python servers inside processes that cannot move to another namespace (the harness
  itself, which talks to Spark's JVM; Spark's Python workers, which talk to the JVM too): while it is open, a
  `socketserver` server asking for every interface binds 127.0.0.1 instead.
"""
from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import socketserver
import subprocess
import threading
from typing import Any, Iterator

LOOPBACK = "127.0.0.1"
ISOLATED = {"network": "private namespace, loopback only"}


class NamespaceUnavailable(RuntimeError):
    pass


class Namespace:
    """A network namespace with only `lo` (up). A holder process keeps it alive until `close()` (or until this
    process dies: the holder waits on a pipe from here); `wrap(cmd)` is `cmd` run inside it."""

    def __init__(self, timeout_s: float = 10.0):
        missing = [tool for tool in ("unshare", "nsenter", "ip") if not shutil.which(tool)]
        if missing:
            raise NamespaceUnavailable(f"{', '.join(missing)} not found (util-linux, iproute2)")
        # as root a network namespace is enough; otherwise it has to live in a user namespace of our own
        rootless = os.geteuid() != 0
        unshare = ["unshare", "--net", *(["--user", "--map-root-user"] if rootless else [])]
        self._holder = subprocess.Popen([*unshare, "sh", "-c", "ip link set lo up && echo up && exec cat >/dev/null"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        ready, _, _ = select.select([self._holder.stdout], [], [], timeout_s)
        if not ready or self._holder.stdout.readline().strip() != "up":
            self.close()
            with self._holder.stderr:
                why = (self._holder.stderr.read() or "no answer").strip().splitlines()
            raise NamespaceUnavailable(f"`{' '.join(unshare)}` failed: {why[-1] if why else ''}")
        ns = f"/proc/{self._holder.pid}/ns"
        self.prefix = (["nsenter", f"--user={ns}/user", f"--net={ns}/net", "--preserve-credentials", "--"]
                       if rootless else ["nsenter", f"--net={ns}/net", "--"])
        self._holder.stderr.close()

    def wrap(self, cmd: list[str]) -> list[str]:
        return [*self.prefix, *cmd]

    def close(self) -> None:
        self._holder.stdin.close()  # the holder's `cat` ends; the namespace goes with its last process
        try:
            self._holder.wait(5)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()
        self._holder.stdout.close()


@contextlib.contextmanager
def namespace(what: str) -> Iterator[tuple[Namespace | None, dict[str, Any]]]:
    """(the launch's Namespace, or None where the machine can't make one; the record's extra for it)."""
    try:
        ns = Namespace()
    except (NamespaceUnavailable, OSError) as e:
        yield None, not_isolated(what, f"no private network namespace on this machine ({e}): run as root or "
                                       "enable unprivileged user namespaces (sysctl user.max_user_namespaces)")
        return
    try:
        yield ns, dict(ISOLATED)
    finally:
        ns.close()


def not_isolated(what: str, why: str) -> dict[str, Any]:
    """The record's extra saying that `what` listens beyond loopback, and why (the experiment prints it too)."""
    return {"network": "host", "listens_beyond_loopback": f"{what} listen(s) on every interface: {why}"}


# ---- Python servers in processes that stay in the host's namespace --------------------------------------------

_WILDCARDS = ("", "0.0.0.0")
_patch_lock = threading.Lock()
_patch_depth = 0
_original_bind = socketserver.TCPServer.server_bind


def _bind_loopback(server: socketserver.TCPServer) -> None:
    host, *rest = server.server_address
    if host in _WILDCARDS:
        server.server_address = (LOOPBACK, *rest)
    _original_bind(server)


@contextlib.contextmanager
def loopback_servers() -> Iterator[None]:
    """While open, socketserver servers of this process that ask for every interface bind 127.0.0.1
    (http.server's and Horovod's subclasses call TCPServer.server_bind too)."""
    global _patch_depth
    with _patch_lock:
        _patch_depth += 1
        socketserver.TCPServer.server_bind = _bind_loopback
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                socketserver.TCPServer.server_bind = _original_bind


@contextlib.contextmanager
def horovod_spark_on_loopback() -> Iterator[None]:
    """For horovod.spark.run: its driver service and Gloo rendezvous (in this process) and its task services (in
    Spark's Python workers) bind 127.0.0.1. The tasks run `horovod.spark.runner._task_fn`, which the Spark job's
    function refers to by name when it is pickled; while this is open the name points at `_horovod_task`, which
    runs Horovod's function under `loopback_servers()` in the worker."""
    from horovod.spark import runner

    original = runner._task_fn
    runner._task_fn = _horovod_task
    try:
        with loopback_servers():
            yield
    finally:
        runner._task_fn = original


def _horovod_task(*args: Any) -> Any:
    """Runs in a Spark Python worker, which imported horovod.spark.runner afresh: `_task_fn` is Horovod's own."""
    from horovod.spark import runner

    if runner._task_fn is _horovod_task:  # only ever in the driver's process, where it would recurse
        raise RuntimeError("horovod.spark task ran in the driver process")
    with loopback_servers():
        return runner._task_fn(*args)


# ---- torchrun under TorchDistributor -----------------------------------------------------------------------------

def torchrun_runner(prefix: list[str], local_addr: str | None = LOOPBACK):
    """TorchDistributor's hook for running a training file (the `run_pytorch_file_fn` of its `_run`, as pyspark's
    DeepspeedTorchDistributor uses it): its own torchrun command, inside the namespace `prefix` enters, advertising
    `local_addr` (None: the address of the host it runs on, its SPARK_LOCAL_IP, as on the emulated cluster)."""
    return functools.partial(_run_torchrun, list(prefix), local_addr)


def _run_torchrun(prefix: list[str], local_addr: str | None, input_params: dict, train_path: str, *args: Any,
                  **kwargs: Any) -> None:
    from pyspark.ml.torch.distributor import TorchDistributor

    if kwargs:
        raise ValueError("a training file takes no keyword arguments")
    cmd = TorchDistributor._create_torchrun_command(input_params, train_path, *args)
    # torchrun advertises the host's FQDN to the ranks by default, which a loopback-only network (or an emulated
    # host, which shares the machine's name) can't reach
    addr = local_addr or os.environ.get("SPARK_LOCAL_IP", LOOPBACK)
    at = cmd.index("pyspark.ml.torch.torch_run_process_wrapper") + 1
    cmd[at:at] = [f"--local-addr={addr}"]
    TorchDistributor._execute_command(prefix + cmd, log_streaming_client=input_params.get("log_streaming_client"))
