"""Service logs: one JSON object per line for machines, or plain lines on a terminal."""

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from entrypoints.http.bodies import reusable

# LogRecord attributes that are not `extra=` fields.
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str)
# Prepared fields (the access log's) are flat: strings, numbers and None, so no circular check.
_ENCODE_FLAT = reusable(_ENCODER, check_circular=False)


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the record's `extra` fields, and the traceback if any."""

    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):  # prepared by the caller (the access log): no scan of the record
            entry.update(fields)
            if not record.exc_info:
                return _ENCODE_FLAT(entry)
        else:
            entry.update((k, v) for k, v in vars(record).items() if k not in STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

    def _time(self, created: float) -> str:
        # ISO 8601 in UTC, as datetime.isoformat() writes it, at a third of its cost: one line per
        # request is written, and the seconds part changes once a second.
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1e6):06d}+00:00"


def configure_logging(level: str, format: str) -> None:
    """Send every log record to stderr in `format` (json or console) from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class ConsoleFormatter(logging.Formatter):
    """Plain lines for a terminal; a record's prepared `fields` follow its message as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in SHORT)
            line = f"{line} {shown}"
        return line


SHORT = ("method", "path", "status")  # already in the access line's message
ACCESS_MESSAGE = "%s %s %s"


class AccessLog:
    """One line per request on the `functions.access` logger: request id, method, path, status,
    workspace, function, outcome and duration."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("functions.access")

    def write(self, scope: Mapping[str, Any], state: Mapping[str, Any], status: int, seconds: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):  # cached by the logger: costs a dict lookup
            return
        params = scope.get("path_params") or {}  # set by the router when a route matched
        method, path = scope["method"], scope["path"]
        fields = {
            "request_id": state["request_id"],
            "method": method,
            "path": path,
            "status": status,
            "workspace": params.get("workspace"),
            "function": params.get("function"),
            "outcome": state.get("outcome"),
            "duration_ms": round(seconds * 1000, 3),
        }
        # makeRecord + handle, not logger.info: info() walks the stack to find its caller on every call.
        record = logger.makeRecord(
            logger.name, logging.INFO, "access", 0, ACCESS_MESSAGE, (method, path, status), None
        )
        record.fields = fields
        logger.handle(record)


USER_LOG = logging.getLogger("functions.user")


def log_user_output(logs: Iterable[Any], workspace: str, function: str, request_id: str | None) -> None:
    """A run's own console output, into the service log: only at LOG_LEVEL=debug, so user code cannot
    flood (or forge lines in) the service log otherwise."""
    if not USER_LOG.isEnabledFor(logging.DEBUG):
        return
    for entry in logs:
        fields = {
            "request_id": request_id,
            "workspace": workspace,
            "function": function,
            "user_level": entry.level,
        }
        record = USER_LOG.makeRecord(USER_LOG.name, logging.DEBUG, "user", 0, "%s", (entry.message,), None)
        record.fields = {**fields, "user_timestamp": entry.timestamp}
        USER_LOG.handle(record)
