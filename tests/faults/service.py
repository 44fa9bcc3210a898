"""A `functions serve` process that a test may kill -9, and the runtime host processes it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.serving import SERVE, free_port

HOST_SCRIPTS = {"nodejs": b"host.mjs", "python": b"kernel.py"}


class Service:
    """One started service on a free port; `kill()` is a SIGKILL, `stop()` a graceful SIGTERM."""

    def __init__(self, storage: Path, log: Path | None = None, **environ: str) -> None:
        self.port = free_port()
        # A file, not a pipe: a pipe nobody reads fills up and blocks the service on its next log line.
        self.log = log or storage.with_name(f"{storage.name}-{self.port}.log")
        env = {
            **os.environ,
            "PORT": str(self.port),
            "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage),
            "KERNEL_POOL_SIZE": "1",  # one kernel and its spare: a faster start, as many faults
            **environ,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stdout=out, stderr=out)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode} before it was ready")
            try:
                if httpx.get(f"{self.url}/sys/healthcheck", timeout=1).json().get("ready"):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service was not ready within {timeout_s} s")
            time.sleep(0.02)

    def hosts(self, language: str) -> list[int]:
        """The pids of the service's children that run this language's host script."""
        return [pid for pid in children(self.process.pid) if HOST_SCRIPTS[language] in cmdline(pid)]

    def kill(self) -> None:
        """SIGKILL the service, then its hosts (they would exit on their own when their stdin closes)."""
        orphans = self.hosts("nodejs") + self.hosts("python")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except FileNotFoundError:  # gone meanwhile
        pass
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def cpu_ticks(pid: int) -> int:
    """User + system CPU time the process used so far, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])
