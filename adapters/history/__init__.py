"""The history port's adapters: SQLite in the storage folder (the default), PostgreSQL for replicas that
share one database, and memory. SQLite and PostgreSQL share their SQL (sql.py), codec (records.py) and
schema (migrations.py); tests/contract/test_history_contract.py holds all three to one contract."""

from pathlib import Path

from adapters.history.sql import SqlHistory
from adapters.history.sqlite import SqliteHistory, history_path


def open_history(database_url: str | None, storage_root: Path | str) -> SqlHistory:
    """PostgreSQL when FUNCTIONS_DATABASE_URL is a postgresql:// URL, else the storage folder's SQLite."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        from adapters.history.postgres import PostgresHistory  # only then: psycopg loads libpq

        return PostgresHistory(database_url)
    return SqliteHistory(history_path(storage_root))
