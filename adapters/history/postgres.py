"""PostgresHistory: the history in PostgreSQL (FUNCTIONS_DATABASE_URL=postgresql://...), for replicas.

One psycopg AsyncConnection in autocommit mode, one call at a time (an anyio lock): the history writes
little and in batches, so a pool would buy nothing. A broken or interrupted connection is dropped and the
next call connects again, so a database restart costs the calls made while it is down, not the service.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict

from adapters.history.migrations import SCHEMA_VERSION_TABLE, pending, statements
from adapters.history.records import Row
from adapters.history.sql import SqlHistory, Statement
from domain.errors import Unavailable

SETTING = "FUNCTIONS_DATABASE_URL"
CONNECT_TIMEOUT_S = 10  # unless the URL says otherwise
# pg_advisory_xact_lock's key for applying migrations: "function" in ASCII, unlikely to meet another app's.
MIGRATION_LOCK = 0x66756E6374696F6E

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class PostgresDatabase:
    """adapters/history/sql.py's Database on PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: Connection | None = None
        self._lock: anyio.Lock | None = None

    async def start(self) -> None:
        self._lock = self._lock or anyio.Lock()
        async with self._connected() as connection, connection.transaction():
            # Held to the end of this transaction: a replica starting meanwhile waits, then finds it done.
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await connection.execute(SCHEMA_VERSION_TABLE)
            cursor = await connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            row = await cursor.fetchone()
            for migration in pending(row[0] if row else 0):
                for statement in statements(migration, "postgres"):
                    await connection.execute(statement)
                await connection.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat()),
                )

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connected() as connection:
            cursor = await connection.execute(_placeholders(sql), params)
            return list(await cursor.fetchall())

    async def transaction(self, statements: Sequence[Statement]) -> tuple[list[Row], int]:
        rows: list[Row] = []
        count = 0
        async with self._connected() as connection, connection.transaction():
            for sql, params in statements:
                cursor = await connection.execute(_placeholders(sql), params)
                rows = list(await cursor.fetchall()) if cursor.description else []
                count = cursor.rowcount
        return rows, count

    async def aclose(self) -> None:
        if self._lock is not None:
            async with self._lock:
                await self._drop()

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[Connection]:
        if self._lock is None:
            raise Unavailable("the run history is not started")
        async with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = await self._connect()
                yield self._connection
            except psycopg.Error as exc:
                if self._connection is not None and self._connection.broken:
                    await self._drop()
                raise Unavailable(
                    f"the history database ({SETTING}: {self._where()}) cannot be used: {exc}"
                ) from exc
            except BaseException:
                # Cancelled mid-statement: the connection's state is unknown, a fresh one is cheap.
                await self._drop()
                raise

    async def _connect(self) -> Connection:
        options: dict[str, Any] = {}
        if "connect_timeout" not in conninfo_to_dict(self.url):
            options["connect_timeout"] = CONNECT_TIMEOUT_S
        return await psycopg.AsyncConnection.connect(self.url, autocommit=True, **options)

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.close()

    def _where(self) -> str:
        """The database's address without its password, for messages."""
        try:
            info = conninfo_to_dict(self.url)
        except psycopg.Error:
            return "not a valid PostgreSQL URL"
        host, port, dbname = info.get("host", "default"), info.get("port", 5432), info.get("dbname", "")
        return f"host={host} port={port} dbname={dbname}"


class PostgresHistory(SqlHistory):
    """The History port on the PostgreSQL database at `url` (postgresql://user:password@host/db)."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresDatabase(url))


def _placeholders(sql: str) -> str:
    # adapters/history/sql.py writes `?`, psycopg wants `%s`; no statement there has a literal ? or %.
    return sql.replace("?", "%s")
