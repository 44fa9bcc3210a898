"""The wire format of the remote Python runtime (docs/remote-python.md), shared by both ends: the client
(adapters/remote/runtime.py) and the `functions python-api` app (entrypoints/http/python_api.py).

Protocol v1, JSON both ways:
  POST /v1/prepare {id, workspace}                         -> {files}
  POST /v1/run     {id, revision, function, params[, workspace]} -> {outcome}, or 409 RevisionUnknown
  POST /v1/evict   {id}                                    -> 204
  GET  /v1/health                                          -> the remote runtime's health
A run names the workspace's content by digest; a remote that does not hold it answers 409 RevisionUnknown
(the host protocol's `not_loaded`), and the client sends the run again with the body (docs/hosts.md).
Errors come back as {"error": {"type", "message", ...details}} and are raised as the same DomainError.
"""

import hashlib
import json
from collections.abc import Mapping

from domain.errors import (
    CompileError,
    DependencyError,
    DomainError,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from domain.model import Json, LogEntry, Outcome, Status, Workspace

PROTOCOL = 1
REVISION_UNKNOWN = "RevisionUnknown"
# Error types that cross the wire as themselves; any other type becomes Unavailable.
WIRE_ERRORS: dict[str, type[DomainError]] = {
    cls.__name__: cls
    for cls in (InvalidRequest, InvalidParameters, CompileError, DependencyError, NotFound, Unavailable)
}


def outcome_to_wire(outcome: Outcome) -> dict[str, Json]:
    """An Outcome as JSON; `outcome_from_wire` gives back an equal one."""
    return {
        "status": outcome.status.value,
        "result": outcome.result,
        "logs": [{"level": e.level, "message": e.message, "timestamp": e.timestamp} for e in outcome.logs],
        "durationMs": outcome.duration_ms,
        "error": None if outcome.error is None else dict(outcome.error),
        "cold": outcome.cold,
        "timings": dict(outcome.timings),
    }


def outcome_from_wire(data: Mapping[str, Json]) -> Outcome:
    """The Outcome that `outcome_to_wire` sent; a malformed one is the remote's fault: Unavailable."""
    try:
        return Outcome(
            Status(data["status"]),
            result=data.get("result"),
            logs=[LogEntry(e["level"], e["message"], e["timestamp"]) for e in data.get("logs") or ()],
            duration_ms=float(data.get("durationMs") or 0.0),
            error=data.get("error"),
            cold=bool(data.get("cold")),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise Unavailable(f"the python runtime answered a malformed outcome: {exc!r}") from None


def error_from_wire(status: int, body: Json, url: str) -> DomainError:
    """The DomainError that an error answer of the remote stands for."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return Unavailable(f"the python runtime at {url} answered HTTP {status} without an error", url=url)
    kind, message = error.get("type"), str(error.get("message", ""))
    details = {k: v for k, v in error.items() if k not in ("type", "message")}
    cls = WIRE_ERRORS.get(str(kind))
    if cls is None:  # Unauthorized, InternalError, ...: the remote cannot serve us, whatever the reason
        return Unavailable(f"the python runtime at {url} answered {kind}: {message}", url=url, remote=kind)
    return cls(message, **details)


def workspace_digest(workspace: Workspace, body: Mapping[str, Json]) -> str:
    """What identifies a workspace's content on the remote: a hash of its id and body.

    Not the store's revision: a remote shared by several services (or in-memory stores, whose revisions
    restart at 1) must never run another service's code that happens to carry the same revision.
    """
    canonical = json.dumps([workspace.id, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
