"""The service in-process: what the HTTP API does, for a Python program that wants no HTTP.

    async with open_service({"FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": "/tmp/fns"}) as service:
        await service.save("demo", {"functions": {"hi": {"code": "return 'hi';"}}})
        outcome = await service.run("demo", "hi")

The HTTP app runs on this same object, so both get the same validation, errors, readiness and stop.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from adapters.codec import body_from_workspace, workspace_from_body
from domain.errors import Unavailable
from domain.model import Json, Outcome, check_workspace_id
from domain.usecases import Workspaces
from entrypoints.container import Container, build_container, running
from entrypoints.metrics import Metrics

log = logging.getLogger("functions.service")
STARTING, READY, STOPPING, STOPPED = "starting", "ready", "stopping", "stopped"
P = ParamSpec("P")
T = TypeVar("T")
CUT_MESSAGE = "the service stopped before this run finished (SHUTDOWN_GRACE_PERIOD)"


class Gate:
    """Lets runs and saves in while the service is ready; on stop, refuses new ones and lets those in
    flight finish for a grace period, then cuts them short with Unavailable."""

    def __init__(self) -> None:
        self.state = STARTING
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def open(self) -> None:
        self.state = READY

    def admit(self) -> asyncio.Task[Any]:
        if self.state != READY:
            later = "in a moment" if self.state == STARTING else "on another instance"
            raise Unavailable(f"the service is {self.state}: try again {later}", state=self.state)
        task = asyncio.current_task()
        assert task is not None  # only called from a coroutine
        self._in_flight.add(task)
        return task

    def release(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not self._in_flight:
            self._idle.set()

    def was_cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether the gate cancelled `task`; if so the cancellation is taken back, as it was ours."""
        if task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True

    async def drain(self, grace_s: float) -> int:
        """Refuse new work, wait up to `grace_s` for the work in flight, cut the rest; how many were cut."""
        if self.state in (STOPPING, STOPPED):
            return 0
        self.state = STOPPING
        if self._in_flight:
            self._idle.clear()
            log.info("stopping: waiting up to %s s for %d runs in flight", grace_s, len(self._in_flight))
            await _wait(self._idle, grace_s)
        cut = list(self._in_flight)
        for task in cut:
            self._cut.add(task)
            task.cancel()
        if cut:
            log.warning("stopping: cut %d runs still in flight after %s s", len(cut), grace_s)
            await _wait(self._idle, 1.0)  # time for their 503 answers to be written
        self.state = STOPPED
        return len(cut)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        pass


class Service:
    """The functions service built in-process: save, get, delete, list and run workspaces.

    Bodies are the HTTP API's JSON bodies, checked the same way; failures raise the same DomainError
    subclasses (InvalidRequest, NotFound, CompileError, Unavailable, ...). A run's own failure (the
    function threw, timed out, ...) is not raised: it is the returned Outcome's `status` and `error`.
    """

    def __init__(self, container: Container, workspaces: Workspaces) -> None:
        self.container = container
        self.workspaces = workspaces  # the use cases, for callers who prefer domain types
        self.gate = Gate()
        self.metrics: Metrics = container.metrics()
        self.metrics.ready = lambda: self.ready
        packages = getattr(container, "packages", None)  # the npm installer, once it has landed
        if packages is not None:
            self.metrics.install_stats = lambda: packages().stats()
        self._body = container.body()

    @property
    def ready(self) -> bool:
        return self.gate.state == READY

    async def save(self, workspace_id: str, body: Json) -> Json:
        """Create or replace a workspace from its JSON body; answers the body as saved."""
        check_workspace_id(workspace_id)
        workspace = workspace_from_body(workspace_id, body, self._body)
        saved = await self._admitted(self.workspaces.save, workspace)
        return body_from_workspace(saved, self._body)

    async def get(self, workspace_id: str) -> Json:
        return body_from_workspace(await self.workspaces.get(workspace_id), self._body)

    async def delete(self, workspace_id: str) -> None:
        await self.workspaces.delete(workspace_id)

    async def list(self) -> list[str]:
        return await self.workspaces.list()

    async def run(self, workspace_id: str, function: str, params: Json = None) -> Outcome:
        """Run one function; Unavailable while the service starts or stops."""
        return await self._admitted(self.workspaces.run, workspace_id, function, params)

    async def _admitted(self, work: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        gate = self.gate
        task = gate.admit()
        try:
            return await work(*args, **kwargs)
        except asyncio.CancelledError:
            if gate.was_cut(task):  # the grace period ran out: an answer, not a dropped connection
                raise Unavailable(CUT_MESSAGE) from None
            raise
        finally:
            gate.release(task)

    def health(self) -> dict[str, Json]:
        """Whether the service takes runs (`ready`), and each runtime's own report."""
        runtimes = {lang.value: dict(rt.health()) for lang, rt in self.workspaces.runtimes.items()}
        healthy = all(health.get("status") == "ok" for health in runtimes.values())
        status = "ok" if healthy else "degraded"
        report: dict[str, Json] = {"status": status, "ready": self.ready, "state": self.gate.state}
        report["runtimes"] = runtimes
        walls = getattr(self.container, "walls", None)  # a container built by hand may have none
        if walls is not None and (walled := walls().report())["hosts"]:  # once a host has been started
            report["walls"] = walled
        return report

    async def stop(self, grace_s: float | None = None) -> int:
        """Stop taking runs and let those in flight finish (SHUTDOWN_GRACE_PERIOD by default)."""
        grace = self.container.settings().shutdown_grace_s if grace_s is None else grace_s
        return await self.gate.drain(grace)


@asynccontextmanager
async def open_service(
    environ: Mapping[str, str] | None = None, *, container: Container | None = None
) -> AsyncIterator[Service]:
    """Build and start the service, yield it ready, and on the way out stop it and its runtime hosts.

    `environ` holds the settings (the README's variables); None reads the process environment.
    """
    services = container or build_container(environ)
    async with running(services) as workspaces:
        service = Service(services, workspaces)
        service.gate.open()
        try:
            yield service
        finally:
            await service.stop()
