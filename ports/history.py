"""The history port: a workspace's saved versions and its runs, kept beside the workspace store.

The embedded default is SQLite in the storage folder; FUNCTIONS_DATABASE_URL=postgresql://... selects
PostgreSQL, for replicas that share the data. Both pass tests/contract/test_history_contract.py.
"""

from collections.abc import Sequence
from typing import Protocol

from attrs import frozen

from domain.model import Json


@frozen
class Version:
    """One saved version of a workspace: its body exactly as it was sent."""

    workspace: str
    number: int  # from 1, per workspace
    saved_at: str  # ISO 8601, UTC
    functions: Sequence[str]  # the names of its functions
    body: Json = None  # left out (None) in listings


@frozen
class RunRecord:
    """One run as the history keeps it. `status` is queued, running, or an outcome (succeeded, failed,
    timed_out, resource_limit, not_serializable, unavailable, cancelled). Run ids sort in the order the
    runs were made (a time-ordered prefix), so `before=<id>` compares ids."""

    id: str
    workspace: str
    function: str
    status: str
    queued_at: str  # ISO 8601, UTC
    version: int | None = None
    started_at: str | None = None
    duration_ms: float | None = None
    parameters: Json = None  # None when FUNCTIONS_RUN_HISTORY_PARAMETERS=no
    result: Json = None
    error: Json = None  # {"type", "message", ...} as the HTTP answer's error
    logs: Sequence[Json] = ()
    cold: bool | None = None
    is_async: bool = False
    notes: Sequence[str] = ()  # what was cut to fit the size caps, and why


class History(Protocol):
    """Versions and runs by workspace. Every method may raise Unavailable (the database is down)."""

    async def start(self) -> None:
        """Open the database and bring its schema to the current migration."""
        ...

    async def add_version(self, workspace: str, body: Json, functions: Sequence[str], saved_at: str) -> int:
        """Keep a saved body as the workspace's next version; its number."""
        ...

    async def versions(self, workspace: str) -> list[Version]:
        """The versions kept, newest first, without their bodies."""
        ...

    async def version(self, workspace: str, number: int) -> Version:
        """One version with its body; NotFound if it is not kept."""
        ...

    async def keep_versions(self, workspace: str, newest: int) -> None:
        """Drop all but the `newest` versions of the workspace."""
        ...

    async def record_runs(self, runs: Sequence[RunRecord]) -> None:
        """Insert or replace these runs (by id), in one transaction."""
        ...

    async def runs(
        self,
        workspace: str,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[RunRecord]:
        """The workspace's runs, newest first; `before` is a run id: only runs older than it."""
        ...

    async def run(self, workspace: str, run_id: str) -> RunRecord:
        """One run; NotFound if it is not kept."""
        ...

    async def keep_runs(self, workspace: str, newest: int) -> None:
        """Drop all but the `newest` runs of the workspace."""
        ...

    async def forget_workspace(self, workspace: str) -> None:
        """Drop the workspace's versions and runs (it was deleted)."""
        ...

    async def fail_unfinished(self, reason: str) -> int:
        """Mark every queued or running run failed with `reason` (the service stopped under them);
        how many. Called at start-up."""
        ...

    async def aclose(self) -> None:
        """Flush and close."""
        ...
