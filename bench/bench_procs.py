"""Starting and stopping the servers under test, and reading what they cost from /proc."""

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from bench_http import Connection


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is still there after `grace` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


class Processes:
    """Every process group the bench starts, stopped on exit whatever happens (error, Ctrl-C)."""

    def __init__(self) -> None:
        # server pid -> (its Popen, the other groups to stop after it)
        self._owned: dict[int, tuple[subprocess.Popen[bytes], list[int]]] = {}

    def __enter__(self) -> "Processes":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for popen, _ in list(self._owned.values()):
            self.stop(popen)

    def start(self, command: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        # Its own session, so one killpg reaches the server and anything it forks into its group.
        popen = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._owned[popen.pid] = (popen, [])
        return popen

    def adopt(self, owner: subprocess.Popen[bytes] | int, pgid: int) -> None:
        """Also stop this group with `owner` (its Popen or pid): the service starts its Node host and its
        Python kernels in sessions of their own."""
        adopted = self._owned[owner if isinstance(owner, int) else owner.pid][1]
        if pgid not in adopted:
            adopted.append(pgid)

    def stop(self, popen: subprocess.Popen[bytes]) -> None:
        # The server first, so its own shutdown gets to stop its children cleanly; then whatever is left.
        _, adopted = self._owned.pop(popen.pid)
        try:
            os.killpg(popen.pid, signal.SIGTERM)
            popen.wait(timeout=10.0)  # reaped here: an unreaped zombie would keep its group "alive"
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        for pgid in [popen.pid, *adopted]:  # whatever outlived the server in its group, or in its host's
            stop_group(pgid, grace=2.0)


def wait_healthy(port: int, popen: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"server exited with {popen.returncode}:\n{tail(log)}")
        connection = Connection(port, timeout=2.0)
        try:
            if connection.request("GET", "/sys/healthcheck").status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout:g} s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def node_host_pid(service_pid: int) -> int:
    for child in children(service_pid):
        if b"host.mjs" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise RuntimeError(f"no child of {service_pid} runs host.mjs")


def kernel_pids(service_pid: int) -> list[int]:
    """The service's Python kernel processes (runtimes/python/kernel.py): the pool and its spare."""
    found = []
    for child in children(service_pid):
        try:
            if b"kernel.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except FileNotFoundError:  # a kernel replaced between the listing and the read
            pass
    return sorted(found)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "node": _node_version(),
        "kernel": platform.release(),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
    }


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return "not found"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (their threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks
