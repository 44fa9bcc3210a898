"""Async runs and the per-workspace concurrency limit.

`POST .../run/f?async=true` answers at once with a queued RunRecord; the run goes on in a task of its
own and its record moves from queued to running to its outcome in the run history, which is where the
caller reads it (async runs are recorded even with FUNCTIONS_RUN_HISTORY=0: it is their only answer).
Past FUNCTIONS_MAX_CONCURRENT_RUNS runs of one workspace, sync runs are refused (429) and async ones
wait their turn, in order.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from attrs import evolve

from application.history import (
    CANCELLED,
    QUEUED,
    RUNNING,
    UNAVAILABLE,
    UNFINISHED,
    HistoryPolicy,
    RunLog,
    exception_error,
    finished,
    kept_parameters,
    new_run_id,
    utc_now,
)
from application.versions import Versions
from domain.errors import DomainError, Unavailable
from domain.model import Json, Outcome
from ports.history import RunRecord

RETRY_AFTER_S = 1
STOPPED_REASON = "the service stopped before this run finished; run it again"
Runner = Callable[[str, str, Json], Awaitable[Outcome]]


class TooManyRequests(DomainError):
    """The workspace runs FUNCTIONS_MAX_CONCURRENT_RUNS already; `retryAfter` seconds is a fair wait."""


class Conflict(DomainError):
    """The request does not fit the resource's state (cancelling a run that has finished)."""


class ConcurrencyLimit:
    """At most `most` runs at a time per workspace (0: no limit)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._slots: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def now(self, workspace: str) -> AsyncIterator[None]:
        """A slot at once, or TooManyRequests; queued async runs keep their turn (`locked()` counts
        them)."""
        slots = self._slots_of(workspace)
        if slots.locked():
            raise TooManyRequests(
                f"workspace {workspace!r} runs {self.most} functions at once already "
                "(FUNCTIONS_MAX_CONCURRENT_RUNS): try again shortly",
                retryAfter=RETRY_AFTER_S,
                limit=self.most,
            )
        async with slots:
            yield

    @asynccontextmanager
    async def queued(self, workspace: str) -> AsyncIterator[None]:
        """A slot when one is free, first come first served."""
        if not self.most:
            yield
            return
        async with self._slots_of(workspace):
            yield

    def _slots_of(self, workspace: str) -> asyncio.Semaphore:
        slots = self._slots.get(workspace)
        if slots is None:
            slots = self._slots[workspace] = asyncio.Semaphore(self.most)
        return slots


class AsyncRuns:
    """The async runs this instance holds, until each has an outcome in the run history."""

    def __init__(
        self, run: Runner, run_log: RunLog, versions: Versions, policy: HistoryPolicy, limit: ConcurrencyLimit
    ) -> None:
        self._run = run  # a run let in through the service's Gate, so a graceful stop drains it
        self._run_log = run_log
        self._versions = versions
        self._policy = policy
        self._limit = limit
        self._live: dict[str, tuple[RunRecord, asyncio.Task[None]]] = {}
        self._cancelled: dict[str, str] = {}  # run id -> why we cancelled its task

    def submit(self, workspace: str, function: str, parameters: Json) -> RunRecord:
        """Queue a run (its workspace and parameters checked already); its queued record."""
        kept, notes = kept_parameters(parameters, self._policy)
        run = RunRecord(
            id=new_run_id(),
            workspace=workspace,
            function=function,
            status=QUEUED,
            queued_at=utc_now(),
            parameters=kept,
            is_async=True,
            notes=tuple(notes),
        )
        task = asyncio.create_task(self._execute(run, parameters), name=f"async-run-{run.id}")
        task.add_done_callback(lambda _: self._never_started(run.id))
        self._update(run, task)
        return run

    def live(self, workspace: str, run_id: str) -> RunRecord | None:
        held = self._live.get(run_id)
        return held[0] if held is not None and held[0].workspace == workspace else None

    async def cancel(self, workspace: str, run_id: str) -> RunRecord:
        """Cancel a run that has not finished; Conflict if it has, NotFound if it is not kept."""
        held = self._live.get(run_id)
        if held is None or held[0].workspace != workspace:
            run = await self._run_log.run(workspace, run_id)
            state = "finished" if run.status not in UNFINISHED else "not held by this instance"
            raise Conflict(f"run {run_id!r} cannot be cancelled: it is {state} ({run.status})", run=run_id)
        self._cancelled[run_id] = f"cancelled while {held[0].status}"
        return await self._stopped(held[1], workspace, run_id)

    async def stop(self) -> None:
        """The service stops: runs still held (queued, or left after the drain) fail with a reason."""
        for run_id, (_, task) in list(self._live.items()):
            self._cancelled[run_id] = STOPPED_REASON
            task.cancel()
        await asyncio.gather(*(task for _, task in self._live.values()), return_exceptions=True)

    async def cancel_workspace(self, workspace: str) -> None:
        """The workspace is being deleted: its runs stop."""
        for run_id, (run, _) in list(self._live.items()):
            if run.workspace == workspace and run_id in self._live:
                self._cancelled[run_id] = "cancelled: the workspace was deleted"
                await self._stopped(self._live[run_id][1], workspace, run_id)

    async def _stopped(self, task: asyncio.Task[None], workspace: str, run_id: str) -> RunRecord:
        task.cancel()
        await asyncio.wait([task])  # not `await task`: a cancel of the caller must not reach it
        return await self._run_log.run(workspace, run_id)  # its final record, waiting to be written

    async def _execute(self, run: RunRecord, parameters: Json) -> None:
        started = 0.0
        try:
            async with self._limit.queued(run.workspace):
                started = time.monotonic()
                version = await self._versions.current(run.workspace)
                run = evolve(run, status=RUNNING, started_at=utc_now(), version=version)
                self._update(run)
                outcome = await self._run(run.workspace, run.function, parameters)
            run = finished(run, outcome, self._policy)
        except asyncio.CancelledError:
            run = self._cancelled_run(run, started)
        except DomainError as exc:  # the runtime went away, the service is stopping, the code is gone
            status = UNAVAILABLE if isinstance(exc, Unavailable) else "failed"
            run = evolve(run, status=status, error=exception_error(exc), duration_ms=_since(started))
        self._finish(run)

    def _cancelled_run(self, run: RunRecord, started: float) -> RunRecord:
        why = self._cancelled.pop(run.id, STOPPED_REASON)
        if why == STOPPED_REASON:
            error: Json = {"type": "Unavailable", "message": why}
            return evolve(run, status="failed", error=error, duration_ms=_since(started))
        error = {"type": "Cancelled", "message": why}
        return evolve(run, status=CANCELLED, error=error, duration_ms=_since(started))

    def _never_started(self, run_id: str) -> None:
        # A task cancelled before its first step never enters _execute: its record is finished here.
        held = self._live.get(run_id)
        if held is not None:
            self._finish(self._cancelled_run(held[0], 0.0))

    def _update(self, run: RunRecord, task: asyncio.Task[None] | None = None) -> None:
        self._live[run.id] = (run, task or self._live[run.id][1])
        self._run_log.record(run)

    def _finish(self, run: RunRecord) -> None:
        self._live.pop(run.id, None)
        self._run_log.record(run)


def _since(started: float) -> float | None:
    return (time.monotonic() - started) * 1000 if started else None
