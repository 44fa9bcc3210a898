"""SqlHistory: the History port in SQL that SQLite and PostgreSQL both speak, over a small Database.

Each adapter only opens its database, applies the migrations and runs statements in transactions;
every query lives here, once. Statements use `?` placeholders (PostgreSQL's adapter rewrites them).
Every operation is one statement or one transaction, so it needs no read-then-write round trips.
"""

from collections.abc import Sequence
from typing import Any, Protocol

from adapters.history.records import (
    RUN_COLUMNS,
    Row,
    dump_json,
    run_from_row,
    run_to_row,
    unfinished_error,
    version_from_row,
)
from domain.errors import NotFound
from domain.model import Json
from ports.history import RunRecord, Version

Statement = tuple[str, Sequence[Any]]


class Database(Protocol):
    async def start(self) -> None:
        """Connect, and bring the schema to the last migration."""
        ...

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of one read-only statement."""
        ...

    async def transaction(self, statements: Sequence[Statement]) -> tuple[list[Row], int]:
        """Run the statements in one write transaction; the rows and row count of the last one."""
        ...

    async def aclose(self) -> None: ...


_RUN_SELECT = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
_RUN_UPSERT = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in RUN_COLUMNS[1:])}"
)
_NEXT_NUMBER = (
    "INSERT INTO version_numbers (workspace, last_number) VALUES (?, 1) ON CONFLICT (workspace) "
    "DO UPDATE SET last_number = version_numbers.last_number + 1"
)
_ADD_VERSION = (
    "INSERT INTO workspace_versions (workspace, number, saved_at, functions, body) "
    "SELECT workspace, last_number, ?, ?, ? FROM version_numbers WHERE workspace = ? RETURNING number"
)
# Everything at or below the (newest + 1)-th newest; NULL (nothing) when there are not that many.
_DROP_OLD_VERSIONS = (
    "DELETE FROM workspace_versions WHERE workspace = ? AND number <= (SELECT number FROM "
    "workspace_versions WHERE workspace = ? ORDER BY number DESC LIMIT 1 OFFSET ?)"
)
_DROP_OLD_RUNS = (
    "DELETE FROM runs WHERE workspace = ? AND id <= "
    "(SELECT id FROM runs WHERE workspace = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)
_FAIL_UNFINISHED = "UPDATE runs SET status = 'failed', error = ? WHERE status IN ('queued', 'running')"


class SqlHistory:
    """The History port on a SQL Database (adapters/history/sqlite.py, adapters/history/postgres.py)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def start(self) -> None:
        await self.database.start()

    async def add_version(self, workspace: str, body: Json, functions: Sequence[str], saved_at: str) -> int:
        rows, _ = await self.database.transaction(
            [
                (_NEXT_NUMBER, (workspace,)),
                (_ADD_VERSION, (saved_at, dump_json(list(functions)), dump_json(body), workspace)),
            ]
        )
        return int(rows[0][0])

    async def versions(self, workspace: str) -> list[Version]:
        rows = await self.database.query(
            "SELECT workspace, number, saved_at, functions FROM workspace_versions WHERE workspace = ? "
            "ORDER BY number DESC",
            (workspace,),
        )
        return [version_from_row(row) for row in rows]

    async def version(self, workspace: str, number: int) -> Version:
        rows = await self.database.query(
            "SELECT workspace, number, saved_at, functions, body FROM workspace_versions "
            "WHERE workspace = ? AND number = ?",
            (workspace, number),
        )
        if not rows:
            raise NotFound(f"workspace {workspace!r} has no version {number} kept", version=number)
        return version_from_row(rows[0])

    async def keep_versions(self, workspace: str, newest: int) -> None:
        await self.database.transaction([(_DROP_OLD_VERSIONS, (workspace, workspace, max(newest, 0)))])

    async def record_runs(self, runs: Sequence[RunRecord]) -> None:
        if runs:
            await self.database.transaction([(_RUN_UPSERT, run_to_row(run)) for run in runs])

    async def runs(
        self,
        workspace: str,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[RunRecord]:
        conditions, params = ["workspace = ?"], [workspace]
        for condition, value in (("function = ?", function), ("status = ?", status), ("id < ?", before)):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        sql = f"{_RUN_SELECT} WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT ?"
        rows = await self.database.query(sql, (*params, max(limit, 0)))
        return [run_from_row(row) for row in rows]

    async def run(self, workspace: str, run_id: str) -> RunRecord:
        rows = await self.database.query(f"{_RUN_SELECT} WHERE workspace = ? AND id = ?", (workspace, run_id))
        if not rows:
            raise NotFound(f"workspace {workspace!r} has no run {run_id!r} kept", run=run_id)
        return run_from_row(rows[0])

    async def keep_runs(self, workspace: str, newest: int) -> None:
        await self.database.transaction([(_DROP_OLD_RUNS, (workspace, workspace, max(newest, 0)))])

    async def forget_workspace(self, workspace: str) -> None:
        await self.database.transaction(
            [
                (f"DELETE FROM {table} WHERE workspace = ?", (workspace,))
                for table in ("runs", "workspace_versions", "version_numbers")
            ]
        )

    async def fail_unfinished(self, reason: str) -> int:
        _, count = await self.database.transaction(
            [(_FAIL_UNFINISHED, (dump_json(unfinished_error(reason)),))]
        )
        return count

    async def aclose(self) -> None:
        await self.database.aclose()
