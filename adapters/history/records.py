"""How versions and runs become rows and back: the one codec every history adapter shares.

JSON values are stored as JSON text, never as jsonb: jsonb reorders keys and drops duplicates, and a
version's body must read back exactly as it was sent. ensure_ascii keeps lone surrogates (valid in a
parsed JSON string, invalid UTF-8) and NUL (refused in PostgreSQL text) storable.
"""

import json
from collections.abc import Sequence
from typing import Any

from domain.model import Json
from ports.history import RunRecord, Version

Row = Sequence[Any]

# The error of a run the service stopped under (fail_unfinished): the type the HTTP answer of an
# Unavailable error carries.
UNFINISHED = ("queued", "running")
UNFINISHED_ERROR_TYPE = "Unavailable"

RUN_COLUMNS = (
    "id",
    "workspace",
    "function",
    "status",
    "queued_at",
    "version",
    "started_at",
    "duration_ms",
    "parameters",
    "result",
    "error",
    "logs",
    "cold",
    "is_async",
    "notes",
)


def dump_json(value: Json) -> str | None:
    """JSON text; None stays SQL NULL, which reads back as None too."""
    return None if value is None else json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def load_json(text: str | None) -> Json:
    return None if text is None else json.loads(text)


def run_to_row(run: RunRecord) -> tuple[Any, ...]:
    """The values of RUN_COLUMNS, in order."""
    return (
        run.id,
        run.workspace,
        run.function,
        run.status,
        run.queued_at,
        run.version,
        run.started_at,
        run.duration_ms,
        dump_json(run.parameters),
        dump_json(run.result),
        dump_json(run.error),
        dump_json(list(run.logs)),
        run.cold,
        run.is_async,
        dump_json(list(run.notes)),
    )


def run_from_row(row: Row) -> RunRecord:
    """A row of RUN_COLUMNS; sequences come back as tuples (RunRecord's defaults), SQLite's 0/1 as bools."""
    (run_id, workspace, function, status, queued_at, version, started_at, duration_ms) = row[:8]
    parameters, result, error, logs, cold, is_async, notes = row[8:]
    return RunRecord(
        id=run_id,
        workspace=workspace,
        function=function,
        status=status,
        queued_at=queued_at,
        version=version,
        started_at=started_at,
        duration_ms=None if duration_ms is None else float(duration_ms),
        parameters=load_json(parameters),
        result=load_json(result),
        error=load_json(error),
        logs=tuple(load_json(logs) or ()),
        cold=None if cold is None else bool(cold),
        is_async=bool(is_async),
        notes=tuple(load_json(notes) or ()),
    )


def version_from_row(row: Row) -> Version:
    """A row of (workspace, number, saved_at, functions[, body])."""
    body = load_json(row[4]) if len(row) > 4 else None
    return Version(row[0], row[1], row[2], tuple(load_json(row[3])), body)


def unfinished_error(reason: str) -> Json:
    return {"type": UNFINISHED_ERROR_TYPE, "message": reason}


def as_stored(run: RunRecord) -> RunRecord:
    """The run as a database would give it back (lists become tuples, JSON is copied): the memory
    adapter keeps this, so it answers exactly as the SQL ones do."""
    return run_from_row(run_to_row(run))
