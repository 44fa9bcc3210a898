"""DedicatedRuntime: each workspace gets a runtime, so host processes, of its own (the `dedicated` tier).

A factory makes a workspace's runtime on its first run, so that host's OS walls can admit that workspace's
folder alone: code that escapes its `vm` context still finds no other workspace to read. The host is
closed when the workspace is evicted (a save or a delete: its next run starts a fresh process), when it is
the least recently used over the limit, when it sits idle, and when this runtime closes. Compile checks
parse and run nothing, so a save can use one shared checker instead of starting a host.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from attrs import define

from adapters.hosts.supervisor import Residency, Resident, Tasks
from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace
from ports.runtime import Runtime

log = logging.getLogger("functions.dedicated")
T = TypeVar("T")


@define(eq=False)
class Host(Resident):
    """One workspace's runtime: started once (runs of that workspace wait on the same start)."""

    starting: "asyncio.Task[Runtime] | None" = None
    retired: bool = False  # evicted while runs were in flight: closed when the last one ends
    closed: bool = False


class DedicatedRuntime:
    """A Runtime that gives every workspace a runtime of its own, made by `factory(workspace_id)`.

    `factory` returns a runtime not started yet; it is started here and must report `status: ok`.
    """

    def __init__(
        self,
        factory: Callable[[str], Runtime],
        *,
        language: Language,
        max_hosts: int,
        idle_timeout_s: float,
        checker: Runtime | None = None,
    ) -> None:
        self.factory = factory
        self.language = language
        self.max_hosts = max_hosts
        self.idle_timeout_s = idle_timeout_s
        self.checker = checker  # None: a save's compile check starts the workspace's own host
        self._hosts: Residency[Host] = Residency(max_hosts, idle_timeout_s, self._evicted)
        self._tasks = Tasks(f"the dedicated {language.value} hosts")
        self._idle: asyncio.Task[None] | None = None
        self._restarts_of_closed = 0
        self._state, self._error = "starting", ""
        self._closing = False

    # -- the port ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.checker is not None:
            await self.checker.start()
            health = self.checker.health()
            self._state, self._error = str(health.get("status", "ok")), str(health.get("error", ""))
        else:
            self._state = "ok"
        self._idle = self._tasks.spawn(self._hosts.evict_idle_forever())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        if self.checker is not None:
            return await self.checker.prepare(workspace)
        return await self._on_own_host(workspace.id, lambda runtime: runtime.prepare(workspace))

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        return await self._on_own_host(workspace.id, lambda runtime: runtime.run(workspace, function, params))

    async def evict(self, workspace_id: str) -> None:
        host = self._hosts.forget(workspace_id)
        if host is not None:
            await self._retire(host)

    def health(self) -> Mapping[str, Json]:
        started = [runtime for host in self._hosts.values() if (runtime := _started(host)) is not None]
        restarts = self._restarts_of_closed + sum(_restarts(runtime) for runtime in started)
        report: dict[str, Json] = {
            "status": self._state,
            "isolation": "dedicated",
            "hosts": len(self._hosts),
            "workers": len(self._hosts),
            "restarts": restarts,
        }
        if self.checker is not None:
            checker = report["checker"] = dict(self.checker.health())
            if self._state == "ok":  # once started, a checker that is restarting makes saves fail: say so
                report["status"] = checker.get("status", "ok")
        if self._error:
            report["error"] = self._error
        return report

    def runtime_of(self, workspace_id: str) -> Runtime | None:
        """The started runtime of a workspace, if it has one now."""
        host = self._hosts.get(workspace_id)
        return _started(host) if host is not None else None

    async def aclose(self) -> None:
        self._closing = True
        hosts = self._hosts.values()
        self._hosts.clear()
        if self._idle is not None:
            self._idle.cancel()
        closing = [self._close(host) for host in hosts]
        if self.checker is not None:
            closing.append(self.checker.aclose())
        await asyncio.gather(*closing, self._tasks.wait_all(), return_exceptions=True)
        self._state = "stopped"

    # -- a workspace's own host -------------------------------------------------------------------

    async def _on_own_host(self, workspace_id: str, call: Callable[[Runtime], Awaitable[T]]) -> T:
        host = self._host_for(workspace_id)
        host.in_flight += 1
        try:
            runtime = await self._started(workspace_id, host)
            return await call(runtime)
        finally:
            host.in_flight -= 1
            host.last_used = time.monotonic()
            if host.retired and host.in_flight == 0:
                self._spawn_close(host)

    def _host_for(self, workspace_id: str) -> Host:
        if self._closing:
            raise Unavailable(f"the {self.language.value} runtime is stopping")
        host = self._hosts.get(workspace_id)
        if host is None:
            # Made and registered before any await: a second first run finds this one and waits on it.
            starting = asyncio.create_task(self._start_one(workspace_id))
            host = self._hosts.admit(workspace_id, Host("", time.monotonic(), starting=starting))
        return host

    async def _started(self, workspace_id: str, host: Host) -> Runtime:
        try:
            # Shielded: a cancelled run must not cancel a start that other runs wait on too.
            return await asyncio.shield(_starting(host))
        except Unavailable:
            if self._hosts.get(workspace_id) is host:  # the next run tries again
                self._hosts.forget(workspace_id)
            raise

    async def _start_one(self, workspace_id: str) -> Runtime:
        runtime = self.factory(workspace_id)
        try:
            await runtime.start()
            health = runtime.health()
        except BaseException:
            await asyncio.shield(runtime.aclose())
            raise
        if health.get("status") != "ok":
            await runtime.aclose()
            why = health.get("error") or health.get("status")
            raise Unavailable(
                f"the {self.language.value} host of workspace {workspace_id!r} did not start: {why}"
            )
        log.info("started a dedicated %s host for workspace %r", self.language.value, workspace_id)
        return runtime

    # -- closing ----------------------------------------------------------------------------------

    async def _retire(self, host: Host) -> None:
        """Close now when idle; with runs in flight, when the last of them ends (their timeouts bound it)."""
        host.retired = True
        if host.in_flight == 0:
            await self._close(host)

    async def _close(self, host: Host) -> None:
        if host.closed:
            return
        host.closed = True
        try:
            runtime = await asyncio.shield(_starting(host))
        except Exception:
            return  # it never started: nothing to close
        self._restarts_of_closed += _restarts(runtime)
        try:
            await runtime.aclose()
        except Exception:
            log.exception("closing a dedicated %s host failed", self.language.value)

    def _spawn_close(self, host: Host) -> None:
        self._tasks.spawn(self._close(host))

    def _evicted(self, _workspace_id: str, host: Host) -> None:
        """Over the limit or idle: closed now (a host with runs in flight is never chosen)."""
        self._spawn_close(host)


def _starting(host: Host) -> "asyncio.Task[Runtime]":
    assert host.starting is not None
    return host.starting


def _started(host: Host) -> Runtime | None:
    task = _starting(host)
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _restarts(runtime: Runtime) -> int:
    restarts = runtime.health().get("restarts")
    return restarts if isinstance(restarts, int) else 0
