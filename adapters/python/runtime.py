"""PythonRuntime: a pool of kernel processes (runtimes/python/kernel.py), a subinterpreter per workspace.

The service keeps the policy here: which kernel holds a workspace (it sticks to one while resident;
new ones go to the least loaded), LRU and idle eviction, timeouts (a subinterpreter cannot be
interrupted, so a run over its timeout costs its kernel, replaced by a booted spare), and which
workspaces need a kernel of their own (packages that need compiled extension modules, their own or a
dependency's, run in the main interpreter of a kernel of their own).
"""

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from attrs import define

from adapters.hosts.process import HostProcess, timed_out
from adapters.hosts.protocol import (
    Compile,
    Compiled,
    Evict,
    Inspect,
    Inspected,
    Load,
    Result,
    Run,
    RunStatus,
)
from adapters.hosts.supervisor import HostPool, Residency, Resident
from adapters.hosts.walls import Walls
from adapters.python.interpreter import KernelPython, choose_kernel_python
from adapters.python.kernels import KernelLauncher, KernelProcess
from adapters.python.packages import install_packages, installed_modules
from adapters.python.script import function_specs, generate_main, imported_modules
from domain.errors import StaleCode, Unavailable
from domain.model import Json, Language, Outcome, Workspace

# A kernel using more than this share of its limit takes no new workspaces and is replaced once they
# leave: Python 3.12 and 3.13 keep ~8 MiB of every sandboxed subinterpreter they close.
RECYCLE_AT_MEMORY_SHARE = 0.75
log = logging.getLogger("functions.python")


@define
class LoadedWorkspace(Resident):
    """A workspace resident in a kernel."""

    kernel: KernelProcess | None = None

    @property
    def on(self) -> KernelProcess:
        assert self.kernel is not None
        return self.kernel


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
        python_binary: str | None = None,  # PYTHON_KERNEL_BINARY; None: the newest CPython found
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
        self.interpreter: KernelPython = choose_kernel_python(python_binary)
        # FUNCTIONS_ISOLATION=dedicated, or a Python before 3.12 (subinterpreters would share one GIL): every
        # workspace in a kernel process of its own; the pool then only compiles and inspects packages, which
        # one kernel does.
        self.isolated_by_setting = dedicated_kernels
        self.dedicated_kernels = dedicated_kernels or not self.interpreter.subinterpreters
        self.pool_size = 1 if self.dedicated_kernels else max(1, pool_size)
        self.max_memory_mb = max_memory_mb
        self.max_workspaces = max_workspaces
        self.idle_timeout_s = idle_timeout_s
        self.python_binary = self.interpreter.binary
        self.packages_dir = Path(packages_dir).resolve() if packages_dir is not None else None
        self.packages_auto_install = list(packages_auto_install)
        self.pip_options = list(pip_options)
        self.builtin_modules = list(builtin_modules)
        self.packages_whitelist = list(packages_whitelist)
        self.max_result_bytes = max_result_bytes
        self.restart_backoff_s = restart_backoff_s
        self.walls = walls
        self.kernels = HostPool(
            "python",
            self._launch_pooled,
            size=self.pool_size,
            spare=True,
            backoff_s=restart_backoff_s,
            on_lost=self._lost,
        )
        self._records: dict[HostProcess, KernelProcess] = {}
        # workspace id -> the pool kernel it was last loaded in, which keeps an evicted workspace's
        # interpreter a few seconds for its next version (a save evicts, then the next run loads)
        self._last_kernel: dict[str, KernelProcess] = {}
        self.resident: Residency[LoadedWorkspace] = Residency(
            max_workspaces, idle_timeout_s, self._tell_evicted
        )
        self._loading: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Workspaces that met a compiled extension that cannot load in a subinterpreter: kernels of their own.
        self._main_only: set[str] = set()
        # module -> the distribution with compiled extensions that it needs, or None (asked once per module)
        self._compiled: dict[str, str | None] = {}
        self.launcher = KernelLauncher(
            self.interpreter,
            timeout_ms,
            max_memory_mb,
            self.builtin_modules,
            self.packages_whitelist,
            self.packages_dir,
            max_result_bytes,
            walls,
        )

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
        await self.kernels.start()
        if self.kernels.live():
            self.kernels.tasks.spawn(self.resident.evict_idle_forever())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        specs = function_specs(workspace)
        if not specs:
            return {}
        reply = await self._any_kernel().host.request(Compile(specs).wire, timeout_s=30.0)
        assert isinstance(reply, Compiled)
        reply.raise_first()
        if not self.dedicated_kernels:
            # Decided at save, so that the first run goes straight to the right kernel (and if the kernel
            # cannot answer now, the first run asks again).
            with contextlib.suppress(Unavailable):
                await self._compiled_packages(workspace)
        return {"main.py": generate_main(workspace)}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        run = Run(workspace.id, workspace.revision, function, params)
        for _attempt in range(3):  # again if the kernel lost the code (docs/hosts.md) or needs a main one
            reply = await self._run_once(workspace, run)
            if reply.status is RunStatus.NEEDS_MAIN:
                error = reply.error or {}
                why = f"{error.get('name')}: {error.get('message')}"
                log.info("workspace %r moves to a kernel of its own: %s", workspace.id, why)
                self._main_only.add(workspace.id)
                await self.evict(workspace.id)
            elif reply.status is RunStatus.NOT_LOADED:
                self._stale_or_forget(workspace)
            elif reply.status is RunStatus.ABORTED:
                raise Unavailable((reply.error or {}).get("message", "the run was aborted"))
            else:
                if reply.status is RunStatus.RESOURCE_LIMIT:  # give the memory back: a fresh interpreter
                    await self.evict(workspace.id)
                return reply.outcome()
        raise Unavailable(f"the python runtime could not load workspace {workspace.id!r}")

    async def evict(self, workspace_id: str) -> None:
        self.resident.evict(workspace_id)

    def health(self) -> Mapping[str, Json]:
        report: dict[str, Json] = self.kernels.health()
        held = {e.on.host for e in self.resident.values() if e.on.alive}
        report["workers"] = len(self.resident)
        report["kernel_processes"] = len(held | set(self.kernels.hosts))
        report.update(self.interpreter.health())  # which Python, subinterpreters or not, and why
        if self.isolated_by_setting:
            report["kernels"] = "process per workspace"
            report["why"] = f"FUNCTIONS_ISOLATION=dedicated; Python: {self.interpreter.why}"
        return report

    async def aclose(self) -> None:
        dedicated = [e.on.host for e in self.resident.values() if e.on.dedicated]
        await self.kernels.aclose()
        await asyncio.gather(*(host.close() for host in dedicated), return_exceptions=True)

    @property
    def restarts(self) -> int:
        return self.kernels.restarts

    @property
    def kernel_pids(self) -> list[int]:
        return [pid for host in self.kernels.hosts if (pid := host.pid) is not None]

    def kernel_of(self, workspace_id: str) -> int | None:
        entry = self.resident.get(workspace_id)
        return entry.on.host.pid if entry else None

    # -- runs -------------------------------------------------------------------------------------

    async def _run_once(self, workspace: Workspace, run: Run) -> Result:
        entry = await self._ensure_loaded(workspace)
        kernel = entry.on
        kernel.in_flight += 1
        try:
            with self.resident.using(entry):
                reply = await kernel.host.request(run.wire, self.timeout_ms / 1000, self._overran(kernel))
            assert isinstance(reply, Result)
            return reply
        finally:
            kernel.in_flight -= 1
            if kernel.draining and entry.in_flight == 0 and self.resident.get(workspace.id) is entry:
                self.resident.evict(workspace.id)  # its last run here: the next one goes to another kernel
            self._retire_if_drained(kernel)

    def _overran(self, kernel: KernelProcess) -> Callable[[int], Result]:
        def overran(request_id: int) -> Result:
            # Nothing stops a run inside its interpreter: the kernel goes, the spare takes its place.
            kernel.host.end(f"a run (request {request_id}) went over its timeout")
            message = f"the function ran longer than {self.timeout_ms} ms (PYTHON_FUNCTIONS_RUN_TIMEOUT)"
            return timed_out(request_id, self.timeout_ms, message)

        return overran

    async def _ensure_loaded(self, workspace: Workspace) -> LoadedWorkspace:
        entry = self.resident.get(workspace.id, workspace.revision)
        if entry is not None and entry.on.alive and not entry.on.draining:
            return entry
        # Two first runs at once must not both launch a kernel of its own for the workspace: one loads it.
        lock = self._loading.setdefault(workspace.id, asyncio.Lock())
        async with lock:
            return await self._load(workspace)

    async def _load(self, workspace: Workspace) -> LoadedWorkspace:
        entry = self.resident.get(workspace.id, workspace.revision)
        if entry is not None and entry.on.alive and not entry.on.draining:
            return entry  # a run that waited for another's load
        # On a draining kernel too, it moves now: a busy workspace's runs would otherwise keep it there.
        # The runs already queued on the old kernel finish there (the kernel lets them).
        await self.evict(workspace.id)
        kernel = await self._kernel_for(workspace)
        if not kernel.dedicated and self._worn(kernel):
            self._drain(kernel, keep="")
            if kernel.draining:  # out of the pool: the spare took its place, and takes this workspace
                kernel = await self._kernel_for(workspace)
        kernel.loads += 1
        if not kernel.dedicated:
            self._last_kernel[workspace.id] = kernel
        load = Load(workspace.id, workspace.revision, functions=function_specs(workspace))
        kernel.host.send(load.wire())
        kernel.resident.add(workspace.id)
        loaded = LoadedWorkspace(workspace.revision, time.monotonic(), kernel=kernel)
        return self.resident.admit(workspace.id, loaded)

    def _worn(self, kernel: KernelProcess) -> bool:
        """Whether a kernel has built enough interpreters, or holds enough memory, to be replaced: CPython
        3.12 and 3.13 keep ~4.5 MiB of every subinterpreter they close (measured), so a kernel fills up
        as saves replace its interpreters, and past RLIMIT_AS it would abort."""
        if kernel.loads >= self.recycle_after_loads:
            return True
        used, held = kernel.resident_mb(), kernel.address_space_mb()
        limit = self.launcher.address_space_mb()
        return (used or 0) > self.max_memory_mb * RECYCLE_AT_MEMORY_SHARE or (held or 0) > limit * 0.75

    def _drain(self, kernel: KernelProcess, keep: str) -> None:
        """A worn kernel leaves the pool at once (the spare takes its place, so new workspaces go to a
        fresh kernel); its idle workspaces are evicted now and its busy ones after their runs (their next
        run loads them, cold, elsewhere); once empty it is closed. Without a spare ready it stays for now."""
        if not self.kernels.swap_out(kernel.host):
            return
        kernel.draining = True
        log.info("a python kernel is worn (%d loads): its workspaces move to the others", kernel.loads)
        for workspace_id in list(kernel.resident):
            entry = self.resident.get(workspace_id)
            if workspace_id != keep and entry is not None and entry.in_flight == 0:
                self.resident.evict(workspace_id)
        self._retire_if_drained(kernel)

    async def _kernel_for(self, workspace: Workspace) -> KernelProcess:
        if self.dedicated_kernels or workspace.id in self._main_only:
            return await self._launch_dedicated()
        compiled = await self._compiled_packages(workspace)
        if compiled:
            why = ", ".join(f"{module} ({name})" for module, name in sorted(compiled.items()))
            log.debug(
                "workspace %r runs in a kernel of its own: compiled extensions in %s", workspace.id, why
            )
            return await self._launch_dedicated()
        await self.kernels.wait_up()
        last = self._last_kernel.get(workspace.id)
        if last is not None and last.alive and not last.draining and last.host in self.kernels.hosts:
            return last  # where its evicted interpreter waits to be taken over by this version
        live = [self._record(host) for host in self.kernels.live()]
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
            reply = await self._any_kernel().host.request(Inspect(unknown).wire, timeout_s=30.0)
            assert isinstance(reply, Inspected)
            found = reply.compiled
            self._compiled.update({m: found.get(m) for m in unknown})
        return {m: name for m in packages if (name := self._compiled[m]) is not None}

    # -- residency --------------------------------------------------------------------------------

    def _stale_or_forget(self, workspace: Workspace) -> None:
        """The kernel did not hold the revision the run named. If another version is resident now, this
        run's code is probably the older one: StaleCode (the use case runs the stored version); else the
        kernel lost it (restart, eviction) and the run loads it again."""
        held = self.resident.get(workspace.id)
        if held is not None and held.revision != workspace.revision:
            raise StaleCode(f"workspace {workspace.id!r} changed while this run waited")
        self._forget(workspace.id)

    def _forget(self, workspace_id: str) -> None:
        """Drop a workspace its kernel no longer holds (nothing to tell the kernel)."""
        entry = self.resident.forget(workspace_id)
        if entry is not None:
            entry.on.resident.discard(workspace_id)
            self._retire_if_drained(entry.on)

    def _tell_evicted(self, workspace_id: str, entry: LoadedWorkspace) -> None:
        kernel = entry.on
        kernel.resident.discard(workspace_id)
        if not kernel.alive:
            return
        if kernel.dedicated:
            self.kernels.tasks.spawn(kernel.host.close())
        else:
            kernel.host.send(Evict(workspace_id).wire())
            self._retire_if_drained(kernel)

    def _retire_if_drained(self, kernel: KernelProcess) -> None:
        """A draining kernel (out of the pool already) with nothing left in it is closed."""
        if kernel.draining and not kernel.resident and kernel.in_flight == 0 and not kernel.closing:
            kernel.closing = True
            self.kernels.tasks.spawn(kernel.host.close())

    def _lost(self, host: HostProcess) -> None:
        """A kernel died: its workspaces load again on their next run, elsewhere (their cache is gone)."""
        record = self._records.pop(host, None)
        for workspace_id in list(record.resident if record else ()):
            self.resident.forget(workspace_id)
        self._last_kernel = {w: k for w, k in self._last_kernel.items() if k is not record}

    def _record(self, host: HostProcess) -> KernelProcess:
        record = self._records.get(host)
        if record is None:
            record = self._records[host] = KernelProcess(host)
        return record

    async def _launch_pooled(self) -> HostProcess:
        return await self.launcher.launch(dedicated=False)

    async def _launch_dedicated(self) -> KernelProcess:
        return KernelProcess(await self.launcher.launch(dedicated=True), dedicated=True)

    def _any_kernel(self) -> KernelProcess:
        live = [self._record(host) for host in self.kernels.live()]
        for kernel in sorted(live, key=lambda k: k.draining):  # one that stays, if it can
            return kernel
        error = self.kernels.error or "no kernel is running"
        raise Unavailable(f"the python runtime is {self.kernels.state}: {error}")
