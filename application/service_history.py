"""The Service's versions, run history and async runs, in the API's JSON bodies (a part of Service)."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from attrs import evolve

from application.async_runs import AsyncRuns, ConcurrencyLimit
from application.history import (
    CANCELLED,
    STATUSES,
    UNAVAILABLE,
    HistoryPolicy,
    RunLog,
    exception_error,
    finished,
    kept_parameters,
    new_run_id,
    utc_now,
)
from application.versions import Versions, check_version_number
from application.workspaces import Workspaces
from domain.errors import InvalidRequest, Unavailable
from domain.model import Json, Outcome, check_function_name, check_workspace_id
from domain.parameters import bind_parameters
from ports.history import RunRecord, Version

if TYPE_CHECKING:
    from application.service import Gate

RUN_ID = re.compile(r"[0-9a-f]{20}")
MAX_LIMIT = 500
NO_HISTORY = "this service keeps no history (it was built without one)"
CUT_MESSAGE = "the service stopped before this run finished (SHUTDOWN_GRACE_PERIOD)"


def check_run_id(text: str, field: str = "id") -> str:
    if not isinstance(text, str) or not RUN_ID.fullmatch(text):
        raise InvalidRequest(f"invalid run {field} {text!r}: 20 hex digits, as a run's id", field=field)
    return text


def check_limit(value: int | str) -> int:
    text = str(value)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidRequest(f"invalid limit {value!r}: a whole number from 1 to {MAX_LIMIT}", field="limit")
    return int(text)


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise InvalidRequest(f"invalid status {status!r}: one of {', '.join(STATUSES)}", field="status")
    return status


def version_json(version: Version, current: bool) -> dict[str, Json]:
    return {
        "version": version.number,
        "savedAt": version.saved_at,
        "functions": list(version.functions),
        "current": current,
    }


def run_json(run: RunRecord) -> dict[str, Json]:
    """A run as the API answers it: the outcome's fields as a sync run's answer names them."""
    return {
        "id": run.id,
        "function": run.function,
        "status": run.status,
        "version": run.version,
        "async": run.is_async,
        "queuedAt": run.queued_at,
        "startedAt": run.started_at,
        "duration": run.duration_ms,
        "parameters": run.parameters,
        "result": run.result,
        "error": run.error,
        "logs": list(run.logs),
        "cold": run.cold,
        "notes": list(run.notes),
    }


class ServiceHistory:
    """Service's half that keeps versions and runs; Service sets these attributes."""

    workspaces: Workspaces
    gate: "Gate"
    policy: HistoryPolicy
    limit: ConcurrencyLimit
    run_log: RunLog | None
    versions: Versions | None
    async_runs: AsyncRuns | None
    _admitted: Callable[..., Awaitable[Any]]
    save: Callable[[str, Json], Awaitable[Json]]

    def start_history(self) -> None:
        if self.run_log is not None:
            self.run_log.start()

    async def close_history(self) -> None:
        if self.async_runs is not None:
            await self.async_runs.stop()
        if self.run_log is not None:
            await self.run_log.aclose()

    # -- versions ---------------------------------------------------------------------------------

    async def list_versions(self, workspace_id: str) -> list[dict[str, Json]]:
        """The versions kept, newest (the current one) first."""
        versions = self._versions()
        await self.workspaces.get(workspace_id)  # NotFound for an unknown workspace
        kept = await versions.list(workspace_id)
        return [version_json(v, current=i == 0) for i, v in enumerate(kept)]

    async def version_body(self, workspace_id: str, number: int | str) -> Json:
        """A version's body, exactly as it was sent; NotFound if it is not kept."""
        check_workspace_id(workspace_id)
        return (await self._versions().get(workspace_id, check_version_number(str(number)))).body

    async def restore(self, workspace_id: str, number: int | str) -> tuple[int | None, Json]:
        """Save version `number`'s body again, through the normal save (packages installed), as a new
        version; that version's number and the body as saved."""
        body = await self.version_body(workspace_id, number)
        saved = await self.save(workspace_id, body)
        return await self._versions().current(workspace_id), saved

    async def _keep_version(self, workspace_id: str, body: Json, functions: list[str]) -> None:
        if self.versions is not None:
            await self.versions.saved(workspace_id, body, functions, utc_now())

    async def _forget(self, workspace_id: str) -> None:
        if self.async_runs is not None:
            await self.async_runs.cancel_workspace(workspace_id)
        if self.versions is not None:
            self.versions.forget(workspace_id)
        if self.run_log is not None:
            await self.run_log.forget(workspace_id)

    def _versions(self) -> Versions:
        if self.versions is None:
            raise Unavailable(NO_HISTORY)
        return self.versions

    # -- runs ---------------------------------------------------------------------------------------

    async def list_runs(
        self,
        workspace_id: str,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int | str = 50,
        before: str | None = None,
    ) -> list[dict[str, Json]]:
        """The runs kept, newest first, filtered; InvalidRequest naming a bad field."""
        run_log = self._run_log()
        if function is not None:
            check_function_name(function)
        if status is not None:
            check_status(status)
        if before is not None:
            check_run_id(before, "before")
        count = check_limit(limit)
        await self.workspaces.get(workspace_id)  # NotFound for an unknown workspace
        found = await run_log.runs(workspace_id, function=function, status=status, limit=count, before=before)
        return [run_json(run) for run in found]

    async def get_run(self, workspace_id: str, run_id: str) -> dict[str, Json]:
        check_workspace_id(workspace_id)
        check_run_id(run_id)
        live = self.async_runs.live(workspace_id, run_id) if self.async_runs else None
        return run_json(live or await self._run_log().run(workspace_id, run_id))

    async def run_async(self, workspace_id: str, function: str, params: Json = None) -> dict[str, Json]:
        """Queue a run and answer its record at once; a bad function or parameters answer now."""
        if self.async_runs is None:
            raise Unavailable(NO_HISTORY)
        check_function_name(function)
        workspace = await self.workspaces.get(workspace_id)
        bind_parameters(workspace.function(function), params)  # InvalidParameters now, not in the record
        self._admitted_now()
        return run_json(self.async_runs.submit(workspace_id, function, params))

    async def cancel_run(self, workspace_id: str, run_id: str) -> dict[str, Json]:
        if self.async_runs is None:
            raise Unavailable(NO_HISTORY)
        check_workspace_id(workspace_id)
        return run_json(await self.async_runs.cancel(workspace_id, check_run_id(run_id)))

    async def _recorded_run(self, workspace_id: str, function: str, params: Json) -> Outcome:
        """A run, recorded behind its answer when the history is on. Runs refused before they start
        (unknown function, bad parameters) are not recorded."""
        run_log = self.run_log
        if run_log is None or not run_log.enabled:
            return await self.workspaces.run(workspace_id, function, params)
        started = utc_now()
        try:
            outcome = await self.workspaces.run(workspace_id, function, params)
        except (Unavailable, asyncio.CancelledError) as exc:
            run = self._new_run(workspace_id, function, params, started)
            run_log.record(self._interrupted(run, exc))
            raise
        run = self._new_run(workspace_id, function, params, started)
        assert self.versions is not None  # made with the run log
        run = evolve(run, version=await self.versions.current(workspace_id))
        run_log.record(finished(run, outcome, self.policy))
        return outcome

    def _new_run(self, workspace_id: str, function: str, params: Json, started: str) -> RunRecord:
        kept, notes = kept_parameters(params, self.policy)
        return RunRecord(
            id=new_run_id(),
            workspace=workspace_id,
            function=function,
            status=UNAVAILABLE,
            queued_at=started,
            started_at=started,
            parameters=kept,
            notes=tuple(notes),
        )

    def _interrupted(self, run: RunRecord, exc: BaseException) -> RunRecord:
        if isinstance(exc, Unavailable):  # the runtime went away mid-run, the storage failed
            return evolve(run, error=exception_error(exc))
        task = asyncio.current_task()
        if task is not None and self.gate.is_cutting(task):
            return evolve(run, error={"type": "Unavailable", "message": CUT_MESSAGE})
        return evolve(run, status=CANCELLED, error={"type": "Cancelled", "message": "the caller went away"})

    def _admitted_now(self) -> None:
        """Unavailable unless the service takes runs now (an async run queued while it stops would be
        cut at once)."""
        gate = self.gate
        if gate.state != "ready":
            raise Unavailable(f"the service is {gate.state}: try again later", state=gate.state)

    def _run_log(self) -> RunLog:
        if self.run_log is None:
            raise Unavailable(NO_HISTORY)
        return self.run_log
