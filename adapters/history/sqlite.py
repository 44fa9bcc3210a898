"""SqliteHistory: the default history, one SQLite file in the storage folder.

The stdlib driver blocks, so every call runs in a worker thread, one at a time on one connection (an
anyio lock keeps waiting calls off the thread pool). WAL lets readers in other processes go on during a
write; busy_timeout makes writers of several processes on one folder wait for each other instead of
failing; every write transaction starts with BEGIN IMMEDIATE, as a deferred one that turns into a write
gets SQLITE_BUSY at once, whatever the timeout.
"""

import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio import to_thread

from adapters.history.migrations import SCHEMA_VERSION_TABLE, pending, statements
from adapters.history.records import Row
from adapters.history.sql import SqlHistory, Statement
from domain.errors import Unavailable

# A dot-name in the storage folder: never a workspace id (domain.model.WORKSPACE_ID).
HISTORY_FILE = ".history.sqlite3"
BUSY_TIMEOUT_S = 30.0  # long: on a loaded machine another process may hold the write lock a while

T = TypeVar("T")


class SqliteDatabase:
    """adapters/history/sql.py's Database on a SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._lock: anyio.Lock | None = None

    async def start(self) -> None:
        self._lock = self._lock or anyio.Lock()
        await self._call(self._open_and_migrate)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._call(self._query, sql, params)

    async def transaction(self, statements: Sequence[Statement]) -> tuple[list[Row], int]:
        return await self._call(self._transaction, statements)

    async def aclose(self) -> None:
        if self._connection is not None and self._lock is not None:
            async with self._lock:
                connection, self._connection = self._connection, None
                await to_thread.run_sync(connection.close)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._lock is None:
            raise Unavailable("the run history is not started")
        async with self._lock:
            try:
                # Not abandoned on cancel: the lock is held until the transaction has ended either way.
                return await to_thread.run_sync(function, *args)
            except (sqlite3.Error, OSError) as exc:
                raise Unavailable(f"the history database {self.path} cannot be used: {exc}") from exc

    def _open_and_migrate(self) -> None:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                _set_wal(connection)
                connection.execute("PRAGMA synchronous = NORMAL")  # WAL: durable but for the last commits
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        self._transaction_with(_migrate)

    def _query(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._open().execute(sql, params).fetchall()

    def _transaction(self, statements: Sequence[Statement]) -> tuple[list[Row], int]:
        def run(connection: sqlite3.Connection) -> tuple[list[Row], int]:
            rows: list[Row] = []
            count = 0
            for sql, params in statements:
                cursor = connection.execute(sql, params)
                rows, count = cursor.fetchall(), cursor.rowcount  # fetched: COMMIT refuses open statements
            return rows, count

        return self._transaction_with(run)

    def _transaction_with(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._open()
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise sqlite3.ProgrammingError("the history database is closed")
        return self._connection


class SqliteHistory(SqlHistory):
    """The History port on the SQLite file `path` (history_path: the storage folder's)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(SqliteDatabase(path))


def history_path(storage_root: Path | str) -> Path:
    return Path(storage_root) / HISTORY_FILE


def _set_wal(connection: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock that the busy handler does not always wait
    # for: processes starting together on one folder retry here.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _migrate(connection: sqlite3.Connection) -> None:
    connection.execute(SCHEMA_VERSION_TABLE)
    (current,) = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    for migration in pending(current):
        for statement in statements(migration, "sqlite"):
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, datetime.now(UTC).isoformat()),
        )
