"""PythonRuntime: a pool of kernel processes (runtimes/python/kernel.py), a subinterpreter per workspace.

The service keeps the policy here: which kernel holds a workspace (it sticks to one while resident;
new ones go to the least loaded), LRU and idle eviction, timeouts (a subinterpreter cannot be
interrupted, so a run over its timeout costs its kernel, replaced by a booted spare), and which
workspaces need a kernel of their own (packages that need compiled extension modules, their own or a
dependency's, run in the main interpreter of a kernel of their own).
"""

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from attrs import define, field

from adapters.hosts.process import HostProcess, Message, outcome_of, raise_compile_errors
from adapters.hosts.residency import evict_idle_forever, least_recently_used
from adapters.hosts.walls import HostPlan, Launch, Walls
from adapters.python.packages import install_packages, installed_modules
from adapters.python.script import function_specs, generate_main, imported_modules
from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Status, Workspace

KERNEL_SCRIPT = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "kernel.py"
KERNEL_OPEN_FILES = 256  # as the kernel sets for itself
# Address space a kernel reserves without using it, on top of PYTHON_WORKER_MAX_MEMORY_MB: a 2 MiB stack
# for each of up to ~130 threads (a run thread per busy workspace, a GIL nudger per run on 3.11) and two
# 64 MiB malloc arenas. Without it, a kernel under load runs out of address space with half its limit
# unused (measured: 25 resident workspaces, 90 threads, 240 MiB resident, 450 MiB of address space).
ADDRESS_SPACE_RESERVE_MB = 384
# A kernel using more than this share of its limit takes no new workspaces and is replaced once they
# leave: Python 3.12 and 3.13 keep ~8 MiB of every sandboxed subinterpreter they close (3.11: ~0.2 MiB).
RECYCLE_AT_MEMORY_SHARE = 0.75
REFUSED_MODULES = ("logging.config",)  # dictConfig imports whatever callable its dict names
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
log = logging.getLogger("functions.python")


@define(eq=False)
class Kernel:
    """One kernel process and the workspaces it holds."""

    host: HostProcess
    dedicated: bool = False
    resident: set[str] = field(factory=set)
    loads: int = 0  # interpreters it has built: 3.11 keeps ~0.2 MiB of each one it closes
    draining: bool = False  # takes no new workspaces; closed once the last one leaves
    in_flight: int = 0

    @property
    def alive(self) -> bool:
        return self.host.alive

    def resident_mb(self) -> float | None:
        """Memory the process uses (RSS), where /proc tells."""
        try:
            with open(f"/proc/{self.host.pid}/statm", "rb") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * PAGE_SIZE / 2**20


@define
class Loaded:
    """A workspace loaded in a kernel, and how it is being used."""

    revision: str
    kernel: Kernel
    last_used: float
    in_flight: int = 0


class PythonRuntime:
    """Runs python functions in subinterpreters of KERNEL_POOL_SIZE kernel processes."""

    language = Language.PYTHON

    def __init__(
        self,
        *,
        timeout_ms: int,
        pool_size: int,
        max_memory_mb: int,
        builtin_modules: Sequence[str],
        packages_whitelist: Sequence[str],
        packages_dir: Path | str | None = None,
        max_workspaces: int = 500,
        idle_timeout_s: float = 3600.0,
        python_binary: str = sys.executable,
        packages_auto_install: Sequence[str] = (),
        pip_options: Sequence[str] = (),
        max_result_bytes: int = 10 * 1024 * 1024,
        restart_backoff_s: tuple[float, float] = (0.1, 5.0),
        dedicated_kernels: bool = False,
        walls: Walls | None = None,
        recycle_after_loads: int = 300,
    ) -> None:
        self.timeout_ms = timeout_ms
        self.recycle_after_loads = recycle_after_loads
        # FUNCTIONS_ISOLATION=dedicated: every workspace in a kernel process of its own; the pool then only
        # compiles and inspects packages, which one kernel does.
        self.dedicated_kernels = dedicated_kernels
        self.pool_size = 1 if dedicated_kernels else max(1, pool_size)
        self.max_memory_mb = max_memory_mb
        self.max_workspaces = max_workspaces
        self.idle_timeout_s = idle_timeout_s
        self.python_binary = python_binary
        self.packages_dir = Path(packages_dir).resolve() if packages_dir is not None else None
        self.packages_auto_install = list(packages_auto_install)
        self.pip_options = list(pip_options)
        self.builtin_modules = list(builtin_modules)
        self.packages_whitelist = list(packages_whitelist)
        self.max_result_bytes = max_result_bytes
        self.restart_backoff_s = restart_backoff_s
        self.walls = walls
        self.restarts = 0
        self._pool: list[Kernel] = []
        self._spare: Kernel | None = None
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._loading: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Workspaces that met a compiled extension that cannot load in a subinterpreter: kernels of their own.
        self._main_only: set[str] = set()
        # module -> the distribution with compiled extensions that it needs, or None (asked once per module)
        self._compiled: dict[str, str | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._state, self._error, self._python = "starting", "", ""
        self._closing = False

    # -- the port ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Install PYTHON_PACKAGES_AUTO_INSTALL (a failure stops start-up), then boot the kernels."""
        if self.packages_auto_install:
            assert self.packages_dir is not None, "PYTHON_PACKAGES_AUTO_INSTALL needs PYTHON_PACKAGES_DIR"
            await install_packages(
                self.python_binary, self.packages_dir, self.packages_auto_install, self.pip_options
            )
        if self.packages_dir is not None and self.packages_dir.is_dir():
            self.packages_whitelist += sorted(
                installed_modules(self.packages_dir) - set(self.packages_whitelist)
            )
        try:
            kernels = await asyncio.gather(*(self._launch() for _ in range(self.pool_size + 1)))
        except Unavailable as exc:
            self._state, self._error = "unavailable", exc.message
            log.error("python runtime unavailable: %s", exc.message)
            return
        self._pool, self._spare = kernels[:-1], kernels[-1]
        self._state = "ok"
        for kernel in kernels:
            self._spawn(self._replace_when_dead(kernel))
        self._spawn(self._evict_idle_forever())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        specs = function_specs(workspace)
        if not specs:
            return {}
        reply = await self._any_kernel().host.request({"type": "compile", "functions": specs}, timeout_s=30.0)
        raise_compile_errors(reply)
        if not self.dedicated_kernels:
            # Decided at save, so that the first run goes straight to the right kernel (and if the kernel
            # cannot answer now, the first run asks again).
            with contextlib.suppress(Unavailable):
                await self._compiled_packages(workspace)
        return {"main.py": generate_main(workspace)}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        for _attempt in range(
            3
        ):  # again only if the kernel lost the workspace or it needs a main interpreter
            reply = await self._run_once(workspace, function, params)
            if reply["status"] == "needs_main":
                error = reply.get("error") or {}
                log.info(
                    "workspace %r moves to a kernel of its own: %s",
                    workspace.id,
                    f"{error.get('name')}: {error.get('message')}",
                )
                self._main_only.add(workspace.id)
                await self.evict(workspace.id)
            elif reply["status"] == "not_loaded":
                self._forget(workspace.id)
            else:
                if (
                    reply["status"] == Status.RESOURCE_LIMIT
                ):  # give the memory back: a fresh interpreter next time
                    await self.evict(workspace.id)
                return outcome_of(reply)
        raise Unavailable(f"the python runtime could not load workspace {workspace.id!r}")

    async def evict(self, workspace_id: str) -> None:
        self._evict_now(workspace_id)

    def health(self) -> Mapping[str, Json]:
        report: dict[str, Json] = {
            "status": self._state,
            "workers": len(self._loaded),
            "kernels": len({e.kernel for e in self._loaded.values() if e.kernel.alive} | set(self._pool)),
            "restarts": self.restarts,
        }
        if self._python:
            report["python"] = self._python
        if self._error:
            report["error"] = self._error
        return report

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        kernels = {*self._pool, *(e.kernel for e in self._loaded.values())}
        if self._spare is not None:
            kernels.add(self._spare)
        await asyncio.gather(*(k.host.close() for k in kernels), return_exceptions=True)
        self._state = "stopped"

    @property
    def kernel_pids(self) -> list[int]:
        return [pid for k in self._pool if (pid := k.host.pid) is not None]

    def kernel_of(self, workspace_id: str) -> int | None:
        entry = self._loaded.get(workspace_id)
        return entry.kernel.host.pid if entry else None

    # -- runs -------------------------------------------------------------------------------------

    async def _run_once(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Message:
        entry = await self._ensure_loaded(workspace)
        message = {"type": "run", "workspace": workspace.id, "revision": workspace.revision, "fn": function}
        entry.in_flight += 1
        kernel = entry.kernel
        kernel.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_ms / 1000):
                return await kernel.host.request({**message, "params": params}, timeout_s=3600.0)
        except TimeoutError:
            # The run cannot be stopped inside its interpreter: the kernel goes, the spare takes its place.
            await kernel.host.kill(f"a run of workspace {workspace.id!r} went over its timeout")
            return {
                "status": "timed_out",
                "durationMs": float(self.timeout_ms),
                "error": self._timeout_error(),
            }
        finally:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()
            kernel.in_flight -= 1
            self._close_if_drained(kernel)

    def _timeout_error(self) -> dict[str, str]:
        return {
            "name": "TimeoutError",
            "message": f"the function ran longer than {self.timeout_ms} ms (PYTHON_FUNCTIONS_RUN_TIMEOUT)",
        }

    async def _ensure_loaded(self, workspace: Workspace) -> Loaded:
        entry = self._loaded.get(workspace.id)
        if entry is not None and entry.revision == workspace.revision and entry.kernel.alive:
            self._loaded.move_to_end(workspace.id)
            return entry
        # Two first runs at once must not both launch a kernel of its own for the workspace: one loads it.
        lock = self._loading.setdefault(workspace.id, asyncio.Lock())
        async with lock:
            return await self._load(workspace)

    async def _load(self, workspace: Workspace) -> Loaded:
        entry = self._loaded.get(workspace.id)
        if entry is not None and entry.revision == workspace.revision and entry.kernel.alive:
            self._loaded.move_to_end(workspace.id)
            return entry  # a run that waited for another's load
        if entry is not None:
            await self.evict(workspace.id)
        kernel = await self._kernel_for(workspace)
        kernel.loads += 1
        if self._worn(kernel) and not kernel.dedicated and len(self._pool) > 1:
            # One kernel drains at a time: its workspaces move to the others as they are saved or evicted.
            kernel.draining = not any(k.draining for k in self._pool if k is not kernel)
        load = {"type": "load", "workspace": workspace.id, "revision": workspace.revision}
        kernel.host.send({**load, "functions": function_specs(workspace)})
        kernel.resident.add(workspace.id)
        entry = self._loaded[workspace.id] = Loaded(workspace.revision, kernel, time.monotonic())
        self._evict_least_recently_used(keep=workspace.id)
        return entry

    def _worn(self, kernel: Kernel) -> bool:
        """Whether a kernel has built enough interpreters, or kept enough memory, to be replaced."""
        if kernel.loads >= self.recycle_after_loads:
            return True
        used = kernel.resident_mb()
        return used is not None and used > self.max_memory_mb * RECYCLE_AT_MEMORY_SHARE

    async def _kernel_for(self, workspace: Workspace) -> Kernel:
        if self.dedicated_kernels or workspace.id in self._main_only:
            return await self._launch(dedicated=True)
        compiled = await self._compiled_packages(workspace)
        if compiled:
            why = ", ".join(f"{module} ({name})" for module, name in sorted(compiled.items()))
            log.debug(
                "workspace %r runs in a kernel of its own: compiled extensions in %s", workspace.id, why
            )
            return await self._launch(dedicated=True)
        live = [k for k in self._pool if k.alive]
        if not live:
            raise Unavailable(f"the python runtime is {self._state}: {self._error or 'no kernel is running'}")
        fresh = [k for k in live if not k.draining] or live
        return min(fresh, key=lambda k: len(k.resident))

    async def _compiled_packages(self, workspace: Workspace) -> dict[str, str]:
        """The whitelisted packages the workspace imports that need compiled extension modules (their own
        or a dependency's: python-docx needs lxml), each with the distribution that ships them.

        Such modules may not load in a subinterpreter (CPython 3.12+ refuses most; Cython's and PyO3's
        load in one interpreter per process), so these workspaces run in the main interpreter of a kernel
        of their own. A kernel answers from the installed distributions' files and metadata; the answer
        is kept per module."""
        packages = {m for m in imported_modules(workspace) if m in self.packages_whitelist}
        unknown = sorted(packages - set(self._compiled))
        if unknown:
            reply = await self._any_kernel().host.request(
                {"type": "inspect", "modules": unknown}, timeout_s=30.0
            )
            found = reply.get("compiled") or {}
            self._compiled.update({m: found.get(m) for m in unknown})
        return {m: name for m in packages if (name := self._compiled[m]) is not None}

    # -- residency --------------------------------------------------------------------------------

    def _forget(self, workspace_id: str) -> Loaded | None:
        entry = self._loaded.pop(workspace_id, None)
        if entry is not None:
            entry.kernel.resident.discard(workspace_id)
            self._close_if_drained(entry.kernel)
        return entry

    def _close_if_drained(self, kernel: Kernel) -> None:
        """A draining kernel with nothing left in it goes; the spare takes its place (a restart).

        The spare steps in before the kernel is told to stop, so no load, compile or run picks a kernel
        on its way out. Without a spare ready, the kernel stays until a later run finds one.
        """
        if not (kernel.draining and not kernel.resident and kernel.in_flight == 0 and kernel.alive):
            return
        spare = self._spare
        if self._closing or spare is None or not spare.alive or kernel not in self._pool:
            return
        self._pool[self._pool.index(kernel)], self._spare = spare, None
        self.restarts += 1
        self._spawn(kernel.host.close())

    def _evict_least_recently_used(self, keep: str) -> None:
        for workspace_id in least_recently_used(self._loaded, self.max_workspaces, keep):
            self._evict_now(workspace_id)

    def _evict_now(self, workspace_id: str) -> None:
        entry = self._forget(workspace_id)
        if entry is None or not entry.kernel.alive:
            return
        if entry.kernel.dedicated:
            self._spawn(entry.kernel.host.close())
        else:
            entry.kernel.host.send({"type": "evict", "workspace": workspace_id})

    async def _evict_idle_forever(self) -> None:
        await evict_idle_forever(self._loaded, self.idle_timeout_s, self._evict_now)

    # -- kernel processes -------------------------------------------------------------------------

    def _kernel_path(self) -> list[str]:
        path = [str(self.packages_dir)] if self.packages_dir is not None else []
        if self.python_binary != sys.executable:  # another Python: lend it the backport (pure Python)
            spec = find_spec("backports.interpreters")
            if spec is not None and spec.origin:
                path.append(str(Path(spec.origin).parent.parent.parent))
        return path

    def _readable(self) -> list[str]:
        """What a kernel reads: its Python (prefix and, for a venv, the base), its scripts and packages."""
        if self.python_binary == sys.executable:
            prefixes = [sys.prefix, sys.base_prefix]
        else:
            prefixes = [str(Path(os.path.realpath(self.python_binary)).parent.parent)]
        return [*prefixes, str(KERNEL_SCRIPT.parent), *self._kernel_path()]

    def _launch_plan(self, dedicated: bool) -> Launch:
        argv = [self.python_binary, "-I", str(KERNEL_SCRIPT), self._kernel_config(dedicated)]
        if self.walls is None:
            return Launch(argv)
        plan = HostPlan(
            "python",
            self.python_binary,
            self._readable(),
            address_space_mb=self._address_space_mb(),
            open_files=KERNEL_OPEN_FILES,
            scratch=True,  # tempfile works in functions, in a folder of the kernel's own
        )
        return self.walls.launch(plan, argv)

    def _address_space_mb(self) -> int:
        return self.max_memory_mb + ADDRESS_SPACE_RESERVE_MB

    def _kernel_config(self, dedicated: bool) -> str:
        path = self._kernel_path()
        sandbox = {
            "builtins": self.builtin_modules,
            "packages": self.packages_whitelist,
            "refusedModules": list(REFUSED_MODULES),
            "path": path,
            "maxEntries": 1000,
            "maxBytes": 1024 * 1024,
            "maxResultBytes": self.max_result_bytes,
            "egress": self.walls.egress_enforced() if self.walls else None,
        }
        config = {
            "mode": "main" if dedicated else "pool",
            "addressSpaceMb": self._address_space_mb(),
            # Code left for an interpreter's close (a generator's `finally` kept in `cache`) gets as long
            # as a run, then the kernel exits. Not less: under load a close waits long for the GIL.
            "closeTimeoutS": self.timeout_ms / 1000,
            "path": path,
        }
        return json.dumps({**config, "sandbox": sandbox})

    async def _launch(self, dedicated: bool = False) -> Kernel:
        env = {
            "OPENBLAS_NUM_THREADS": "1",  # one run, one thread: native pools would multiply memory
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per arena, against RLIMIT_AS
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        launch = self._launch_plan(dedicated)
        host = HostProcess(
            launch.argv,
            name="python",
            env=env,
            on_closed=launch.cleanup,
            pass_fds=launch.pass_fds,
            on_started=launch.started,
        )
        try:
            ready = await host.start(ready_timeout_s=30.0)
        except asyncio.CancelledError:  # closing while a spare boots: no orphan kernel
            await asyncio.shield(host.kill())
            raise
        self._python = str(ready.get("python", ""))
        return Kernel(host, dedicated=dedicated)

    def _any_kernel(self) -> Kernel:
        for kernel in sorted(self._pool, key=lambda k: k.draining):  # one that stays, if it can
            if kernel.alive:
                return kernel
        raise Unavailable(f"the python runtime is {self._state}: {self._error or 'no kernel is running'}")

    async def _replace_when_dead(self, kernel: Kernel) -> None:
        await kernel.host.wait_closed()
        if self._closing:
            return
        for workspace_id in list(
            kernel.resident
        ):  # reloaded elsewhere on their next run; their cache is gone
            self._forget(workspace_id)
        if kernel is self._spare:
            self._spare = None
        elif kernel in self._pool:
            index = self._pool.index(kernel)
            spare, self._spare = self._spare, None
            if spare is not None and spare.alive:
                self._pool[index] = spare
                self.restarts += 1
            else:
                self._pool[index] = await self._relaunch()
                self._spawn(self._replace_when_dead(self._pool[index]))
        await self._refill_spare()

    async def _relaunch(self) -> Kernel:
        delay, ceiling = self.restart_backoff_s
        while True:
            try:
                kernel = await self._launch()
                self.restarts += 1
                return kernel
            except Unavailable as exc:
                self._error = exc.message
                await asyncio.sleep(delay)
                delay = min(delay * 2, ceiling)

    async def _refill_spare(self) -> None:
        if self._spare is None and not self._closing:
            self._spare = await self._relaunch()
            self.restarts -= 1  # booting a spare is not a restart
            self._spawn(self._replace_when_dead(self._spare))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # A background task's failure is logged here, not left for the event loop to find unretrieved.
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None and not self._closing:
            log.error("%s runtime: a background task failed: %s", self.language.value, error)
