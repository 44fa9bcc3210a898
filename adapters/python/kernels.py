"""The kernel processes of the Python runtime: how one is launched (its argv, configuration, walls and
environment), and the service's record of each (the workspaces it holds, its memory)."""

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

from attrs import define, field

from adapters.hosts.process import HostProcess
from adapters.hosts.walls import HostPlan, Launch, Walls
from adapters.python.interpreter import KernelPython, lent_originals

KERNEL_SCRIPT = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "kernel.py"
KERNEL_OPEN_FILES = 256  # as the kernel sets for itself
# Address space a kernel reserves without using it, on top of PYTHON_WORKER_MAX_MEMORY_MB: a 2 MiB stack
# for each of up to ~130 threads (a run thread per busy workspace) and two 64 MiB malloc arenas. Without
# it, a kernel under load runs out of address space with half its limit unused (measured: 25 resident
# workspaces, 90 threads, 240 MiB resident, 450 MiB of address space).
ADDRESS_SPACE_RESERVE_MB = 384
REFUSED_MODULES = ("logging.config",)  # dictConfig imports whatever callable its dict names
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Only what a kernel needs, none of the service's variables.
KERNEL_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",  # one run, one thread: native pools would multiply memory
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per arena, against RLIMIT_AS
    "PYTHONDONTWRITEBYTECODE": "1",
    "LANG": "C.UTF-8",
}


@define(eq=False)
class KernelProcess:
    """The service's record of one kernel process and the workspaces it holds."""

    host: HostProcess
    dedicated: bool = False
    resident: set[str] = field(factory=set)
    loads: int = 0  # interpreters it has built (each one closed keeps a little memory)
    draining: bool = False  # out of the pool: takes no new workspaces; its workspaces move off
    closing: bool = False  # drained and told to stop
    in_flight: int = 0

    @property
    def alive(self) -> bool:
        return self.host.alive

    def resident_mb(self) -> float | None:
        """Memory the process uses (RSS), where /proc tells."""
        return self._statm_mb(1)

    def address_space_mb(self) -> float | None:
        """Address space the process holds (what RLIMIT_AS counts), where /proc tells."""
        return self._statm_mb(0)

    def _statm_mb(self, field: int) -> float | None:
        try:
            with open(f"/proc/{self.host.pid}/statm", "rb") as statm:
                pages = int(statm.read().split()[field])
        except (OSError, ValueError, IndexError):
            return None
        return pages * PAGE_SIZE / 2**20


@define(slots=False)  # tests count launches by wrapping `launch`
class KernelLauncher:
    """Starts kernel processes with the runtime's settings: `main` mode holds one workspace in the
    kernel's own interpreter, `pool` mode a subinterpreter per workspace (CPython 3.12+)."""

    interpreter: KernelPython
    timeout_ms: int
    max_memory_mb: int
    builtin_modules: Sequence[str]
    packages_whitelist: list[str]  # extended at start with what PYTHON_PACKAGES_DIR holds
    packages_dir: Path | None
    max_result_bytes: int
    walls: Walls | None

    @property
    def binary(self) -> str:
        return self.interpreter.binary

    async def launch(self, dedicated: bool) -> HostProcess:
        """A started kernel; Unavailable if it does not start."""
        launch = self.plan(dedicated)
        host = HostProcess(
            launch.argv,
            name="python",
            env=KERNEL_ENVIRONMENT,
            on_closed=launch.cleanup,
            pass_fds=launch.pass_fds,
            on_started=launch.started,
        )
        try:
            await host.start(ready_timeout_s=30.0)
        except asyncio.CancelledError:  # closing while a spare boots: no orphan kernel
            await asyncio.shield(host.kill())
            raise
        return host

    def path(self) -> list[str]:
        path = [str(self.packages_dir)] if self.packages_dir is not None else []
        # A foreign Python sees the packages dir and the lent backport, never the service's site-packages:
        # their compiled wheels were built for the service's Python.
        return path + self.interpreter.lent

    def readable(self) -> list[str]:
        """What a kernel reads: its Python (prefix and, for a venv, the base), its scripts and packages."""
        lent = lent_originals() if self.interpreter.lent else []
        prefixes = list(self.interpreter.found.prefixes)
        return [*prefixes, str(KERNEL_SCRIPT.parent), *self.path(), *lent]

    def plan(self, dedicated: bool) -> Launch:
        argv = [self.binary, "-I", str(KERNEL_SCRIPT), self.config(dedicated)]
        if self.walls is None:
            return Launch(argv)
        plan = HostPlan(
            "python",
            self.binary,
            self.readable(),
            address_space_mb=self.address_space_mb(),
            open_files=KERNEL_OPEN_FILES,
            scratch=True,  # tempfile works in functions, in a folder of the kernel's own
        )
        return self.walls.launch(plan, argv)

    def address_space_mb(self) -> int:
        return self.max_memory_mb + ADDRESS_SPACE_RESERVE_MB

    def config(self, dedicated: bool) -> str:
        path = self.path()
        sandbox = {
            "builtins": list(self.builtin_modules),
            "packages": self.packages_whitelist,
            "refusedModules": list(REFUSED_MODULES),
            "path": path,
            "maxEntries": 1000,
            "maxBytes": 1024 * 1024,
            "maxResultBytes": self.max_result_bytes,
            "egress": self.walls.egress_enforced() if self.walls else None,
        }
        config = {
            # Before 3.12 even the pool's kernels (compile checks and inspections only) start in `main`.
            "mode": "main" if dedicated or not self.interpreter.subinterpreters else "pool",
            "addressSpaceMb": self.address_space_mb(),
            # Code left for an interpreter's close (a generator's `finally` kept in `cache`) gets as long
            # as a run, then the kernel exits.
            "closeTimeoutS": self.timeout_ms / 1000,
            "path": path,
        }
        return json.dumps({**config, "sandbox": sandbox})
