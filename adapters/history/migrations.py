"""The history schema as an ordered list of migrations, shared by SQLite and PostgreSQL.

`schema_version` holds one row per applied migration. A database is brought up to date at start-up, in
one transaction that also holds a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two
replicas starting together never both apply one. Never edit a released migration: append a new one.
"""

from collections.abc import Mapping

from attrs import frozen


@frozen
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]  # with {placeholders} for what differs between the dialects


# Run ids are compared with < and sorted: PostgreSQL must compare them byte by byte (COLLATE "C"),
# whatever the database's locale; SQLite already does.
DIALECTS: Mapping[str, Mapping[str, str]] = {
    "sqlite": {"sorted_text": "TEXT", "float": "REAL", "bool": "INTEGER"},
    "postgres": {"sorted_text": 'TEXT COLLATE "C"', "float": "DOUBLE PRECISION", "bool": "BOOLEAN"},
}

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at TEXT NOT NULL)"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "versions and runs",
        (
            # The last number given per workspace, so keep_versions never lets a number be given twice.
            "CREATE TABLE version_numbers (workspace TEXT PRIMARY KEY, last_number INTEGER NOT NULL)",
            "CREATE TABLE workspace_versions (workspace TEXT NOT NULL, number INTEGER NOT NULL, "
            "saved_at TEXT NOT NULL, functions TEXT NOT NULL, body TEXT, PRIMARY KEY (workspace, number))",
            "CREATE TABLE runs (id {sorted_text} PRIMARY KEY, workspace TEXT NOT NULL, "
            "function TEXT NOT NULL, status TEXT NOT NULL, queued_at TEXT NOT NULL, version INTEGER, "
            "started_at TEXT, duration_ms {float}, parameters TEXT, result TEXT, error TEXT, "
            "logs TEXT NOT NULL, cold {bool}, is_async {bool} NOT NULL, notes TEXT NOT NULL)",
            "CREATE INDEX runs_by_workspace ON runs (workspace, id)",
            "CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running')",
        ),
    ),
)


def statements(migration: Migration, dialect: str) -> list[str]:
    return [statement.format_map(DIALECTS[dialect]) for statement in migration.statements]


def pending(current: int) -> list[Migration]:
    """The migrations a database at schema version `current` still needs, in order."""
    return [m for m in MIGRATIONS if m.version > current]
