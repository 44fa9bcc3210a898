"""Run history: each run kept as a RunRecord, written behind the run's answer in batches.

A run's answer never waits for the database: `RunLog.record` only puts the record in a queue that a
background task writes every FLUSH_EVERY_S (or sooner, once BATCH records wait), and on close. Reads
flush first, so a run is visible as soon as it is answered.
"""

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from attrs import evolve

from domain.errors import DomainError
from domain.model import Json, Outcome, Status
from ports.history import History, RunRecord

log = logging.getLogger("functions.history")

FLUSH_EVERY_S = 0.05
BATCH = 256
VALUE_CAP = 64 * 1024  # bytes of JSON kept of a run's parameters, result, and logs each
ASYNC_RESULT_CAP = 10 * 1024 * 1024  # an async run's result is its only answer: the runtimes' own limit
ASYNC_KEPT_WHEN_OFF = 100  # FUNCTIONS_RUN_HISTORY=0 still keeps async runs, which callers fetch
QUEUED, RUNNING, CANCELLED, UNAVAILABLE = "queued", "running", "cancelled", "unavailable"
UNFINISHED = (QUEUED, RUNNING)
STATUSES = (*UNFINISHED, *(s.value for s in Status), UNAVAILABLE, CANCELLED)
# The API's error kinds of a run's outcomes (the HTTP answer's `error.type`).
ERROR_KINDS = {
    Status.FAILED: "FunctionError",
    Status.RESOURCE_LIMIT: "ResourceLimitError",
    Status.NOT_SERIALIZABLE: "ResultNotSerializable",
    Status.TIMED_OUT: "TimeoutError",
}
DEFAULT_MESSAGES = {
    Status.FAILED: "the function threw an error",
    Status.RESOURCE_LIMIT: "the run went over its memory or output limit",
    Status.NOT_SERIALIZABLE: "the function's result cannot become JSON",
    Status.TIMED_OUT: "the run went over its timeout",
}
# The exceptions' kinds, as the HTTP answer names them (entrypoints/http/app.py ERRORS).
EXCEPTION_KINDS = ("InvalidRequest", "InvalidParameters", "NotFound", "Unavailable")


@dataclass(frozen=True)
class HistoryPolicy:
    """What is kept: FUNCTIONS_RUN_HISTORY, FUNCTIONS_RUN_HISTORY_PARAMETERS, FUNCTIONS_VERSIONS_KEPT."""

    runs_kept: int = 100  # per workspace; 0: sync runs are not recorded
    keep_parameters: bool = True  # no: neither parameters nor results are kept (async results are)
    versions_kept: int = 20
    value_cap: int = VALUE_CAP


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """12 hex digits of Unix time in ms, then 8 random ones: ids sort in the order runs were made."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(4).hex()}"


def outcome_error(outcome: Outcome) -> dict[str, Json] | None:
    """A failed outcome's error as the HTTP answer gives it: `{"type", "message", ...}`."""
    if outcome.status is Status.SUCCEEDED:
        return None
    extras = {k: v for k, v in (outcome.error or {}).items() if k not in ("type", "message")}
    message = (outcome.error or {}).get("message") or DEFAULT_MESSAGES[outcome.status]
    return {"type": ERROR_KINDS[outcome.status], "message": str(message), **extras}


def exception_error(exc: DomainError) -> dict[str, Json]:
    kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in EXCEPTION_KINDS), "InternalError")
    return {"type": kind, "message": exc.message, **dict(exc.details)}


def outcome_logs(outcome: Outcome) -> list[dict[str, str]]:
    return [{"level": e.level, "message": e.message, "timestamp": e.timestamp} for e in outcome.logs]


def finished(run: RunRecord, outcome: Outcome, policy: HistoryPolicy) -> RunRecord:
    """`run` (queued or running) with `outcome`, cut to the size caps."""
    keep_result = policy.keep_parameters or run.is_async
    result_cap = ASYNC_RESULT_CAP if run.is_async else policy.value_cap
    notes = list(run.notes)
    result = _capped("result", outcome.result, result_cap, notes) if keep_result else None
    logs = _capped_logs(outcome_logs(outcome), policy.value_cap, notes)
    return evolve(
        run,
        status=outcome.status.value,
        duration_ms=outcome.duration_ms,
        result=result if outcome.ok else None,
        error=outcome_error(outcome),
        logs=tuple(logs),
        cold=outcome.cold,
        notes=tuple(notes),
    )


def kept_parameters(parameters: Json, policy: HistoryPolicy) -> tuple[Json, list[str]]:
    notes: list[str] = []
    if not policy.keep_parameters:
        return None, notes
    return _capped("parameters", parameters, policy.value_cap, notes), notes


def _size(value: Json) -> int:
    try:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):  # NaN and the like are not JSON: never stored
        return -1


def _capped(what: str, value: Json, cap: int, notes: list[str]) -> Json:
    size = _size(value)
    if size < 0:
        notes.append(f"{what} not kept: it is not JSON")
        return None
    if size > cap:
        notes.append(f"{what} not kept: {size} bytes of JSON, over the {cap}-byte cap")
        return None
    return value


def _capped_logs(logs: list[dict[str, str]], cap: int, notes: list[str]) -> list[dict[str, str]]:
    kept: list[dict[str, str]] = []
    total = 0
    for entry in logs:
        total += _size(entry) + 1
        if total > cap:
            notes.append(f"logs cut to the first {len(kept)} of {len(logs)} entries ({cap}-byte cap)")
            break
        kept.append(entry)
    return kept


class RunLog:
    """Records runs behind their answers, and reads them back (flushing first)."""

    def __init__(self, history: History, policy: HistoryPolicy) -> None:
        self.history = history
        self.policy = policy
        self._pending: dict[str, RunRecord] = {}  # by id: a later state of a run replaces an earlier one
        self._writing: dict[str, RunRecord] = {}  # the batch being written: still read from here
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether sync runs are recorded (async ones always are)."""
        return self.policy.runs_kept > 0

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_behind(), name="run-history-writer")

    def record(self, run: RunRecord) -> None:
        if not (self.enabled or run.is_async):
            return
        self._pending[run.id] = run
        if len(self._pending) >= BATCH:
            self._wake.set()

    async def flush(self) -> None:
        async with self._flushing:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            batch = list(self._writing.values())
            try:
                await self.history.record_runs(batch)
                for workspace in {run.workspace for run in batch}:
                    await self.history.keep_runs(workspace, self._kept())
            except DomainError as exc:  # the database is down: these runs are lost, the service goes on
                log.error("could not record %d runs: %s", len(batch), exc.message)
            finally:
                self._writing = {}

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self.flush()

    async def runs(
        self, workspace: str, *, function: str | None, status: str | None, limit: int, before: str | None
    ) -> list[RunRecord]:
        await self.flush()
        return await self.history.runs(
            workspace, function=function, status=status, limit=limit, before=before
        )

    async def run(self, workspace: str, run_id: str) -> RunRecord:
        pending = self._pending.get(run_id) or self._writing.get(run_id)
        if pending is not None and pending.workspace == workspace:
            return pending
        return await self.history.run(workspace, run_id)

    async def forget(self, workspace: str) -> None:
        """The workspace was deleted: its runs (waiting ones too) and versions go."""
        async with self._flushing:
            self._drop(run.id for run in list(self._pending.values()) if run.workspace == workspace)
            await self.history.forget_workspace(workspace)

    def _drop(self, ids: Iterable[str]) -> None:
        for run_id in ids:
            self._pending.pop(run_id, None)

    def _kept(self) -> int:
        return self.policy.runs_kept or ASYNC_KEPT_WHEN_OFF

    async def _write_behind(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug must not stop the recording of every later run
                log.exception("recording runs failed")
