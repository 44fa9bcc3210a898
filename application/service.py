"""The application: the service that HTTP, the CLI and embedders all run on.

`Service` takes and answers the API's JSON bodies, checked the same way everywhere; `Gate` lets work in
while the service is ready and drains it on stop. The use cases themselves are `Workspaces`; versions,
run history and async runs are `ServiceHistory` (application/service_history.py), which Service is.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from application.async_runs import AsyncRuns, ConcurrencyLimit
from application.history import HistoryPolicy, RunLog
from application.service_history import CUT_MESSAGE, ServiceHistory
from application.versions import Versions
from application.workspaces import Workspaces
from domain.body import body_from_workspace, workspace_from_body
from domain.errors import Unavailable
from domain.model import Json, Outcome, check_workspace_id
from ports.history import History
from ports.metrics import MetricsText

log = logging.getLogger("functions.service")
STARTING, READY, STOPPING, STOPPED = "starting", "ready", "stopping", "stopped"
P = ParamSpec("P")
T = TypeVar("T")


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

    def is_cutting(self, task: asyncio.Task[Any]) -> bool:
        """Whether the gate is cancelling `task` (its grace period ran out), without taking it back."""
        return task in self._cut

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


class Service(ServiceHistory):
    """The functions service built in-process: save, get, delete, list and run workspaces.

    Bodies are the HTTP API's JSON bodies, checked the same way; failures raise the same DomainError
    subclasses (InvalidRequest, NotFound, CompileError, Unavailable, ...). A run's own failure (the
    function threw, timed out, ...) is not raised: it is the returned Outcome's `status` and `error`.
    With a `history`, saves keep versions and runs are recorded (ServiceHistory).
    """

    def __init__(
        self,
        workspaces: Workspaces,
        *,
        grace_s: float = 10.0,
        walls: Callable[[], Mapping[str, Json]] | None = None,
        metrics: MetricsText | None = None,
        history: History | None = None,
        policy: HistoryPolicy | None = None,
        max_concurrent_runs: int = 0,  # per workspace; 0: no limit
    ) -> None:
        self.workspaces = workspaces  # the use cases, for callers who prefer domain types
        self.gate = Gate()
        self.limit = ConcurrencyLimit(max_concurrent_runs)
        self.policy = policy = policy or HistoryPolicy()
        self.run_log = None if history is None else RunLog(history, policy)
        self.versions = None if history is None else Versions(history, policy.versions_kept)
        self.async_runs = (
            None
            if self.run_log is None or self.versions is None
            else AsyncRuns(self._gated_run, self.run_log, self.versions, policy, self.limit)
        )
        self.grace_s = grace_s  # SHUTDOWN_GRACE_PERIOD
        self._walls = walls  # the hosts' OS walls, for the health report
        self.metrics = metrics  # `service.metrics.render()`: the /metrics text

    @property
    def ready(self) -> bool:
        return self.gate.state == READY

    async def save(self, workspace_id: str, body: Json) -> Json:
        """Create or replace a workspace from its JSON body; answers the body as saved."""
        check_workspace_id(workspace_id)
        workspace = workspace_from_body(workspace_id, body)
        saved = await self._admitted(self.workspaces.save, workspace)
        await self._keep_version(workspace_id, body, list(saved.functions))
        return body_from_workspace(saved)

    async def get(self, workspace_id: str) -> Json:
        return body_from_workspace(await self.workspaces.get(workspace_id))

    async def delete(self, workspace_id: str) -> None:
        await self.workspaces.delete(workspace_id)
        await self._forget(workspace_id)  # its versions and runs go with it

    async def list(self) -> list[str]:
        return await self.workspaces.list()

    async def run(self, workspace_id: str, function: str, params: Json = None) -> Outcome:
        """Run one function; Unavailable while the service starts or stops, TooManyRequests past
        FUNCTIONS_MAX_CONCURRENT_RUNS."""
        if not self.limit.most:
            return await self._admitted(self._recorded_run, workspace_id, function, params)
        async with self.limit.now(workspace_id):
            return await self._admitted(self._recorded_run, workspace_id, function, params)

    async def _gated_run(self, workspace_id: str, function: str, params: Json) -> Outcome:
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
        if self._walls is not None and (walled := dict(self._walls()))["hosts"]:  # once a host started
            report["walls"] = walled
        return report

    async def stop(self, grace_s: float | None = None) -> int:
        """Stop taking runs and let those in flight finish (SHUTDOWN_GRACE_PERIOD by default); async
        runs still queued then are recorded failed, and the run history is written out."""
        cut = await self.gate.drain(self.grace_s if grace_s is None else grace_s)
        await self.close_history()
        return cut
