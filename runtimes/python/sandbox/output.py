"""Logs: print, sys.stdout and sys.stderr, the logging module, kept per run by a Capture."""

import datetime
import logging
import sys
import threading
from typing import Any

from .state import CONFIG
from .state import capture as current_capture

LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}


class Capture:
    """One run's logs, capped like the Node runtime's: the last entry says what was dropped.

    Printed text is kept as a terminal shows it: an entry ends where a write ends with a newline, so
    `print(x, end=",")` in a loop makes one entry, and so do the pieces a package's `print` writes.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.bytes = self.dropped = self.dropped_bytes = 0
        self.lock = threading.Lock()
        self.pending: list[str] = []  # printed text not yet ended by a newline
        self.pending_level = "log"
        self.pending_bytes = 0

    def add(self, level: str, message: str) -> None:
        with self.lock:
            self._end_line(keep_blank=True)
            self._append(level, message)

    def write(self, level: str, text: str, keep_blank: bool) -> None:
        """Printed text; `keep_blank` for the user's own `print()`, whose empty lines are entries."""
        with self.lock:
            if self.pending and level != self.pending_level:
                self._end_line(keep_blank)
            self.pending_level = level
            self.pending.append(text)
            self.pending_bytes += len(text)
            if text.endswith("\n") or self.pending_bytes > CONFIG["maxBytes"]:
                self._end_line(keep_blank)

    def _end_line(self, keep_blank: bool) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        text = text[:-1] if text.endswith("\n") else text
        if keep_blank or text.strip():
            self._append(self.pending_level, text)

    def _append(self, level: str, message: str) -> None:
        size = len(message.encode("utf-8", "replace"))
        if len(self.entries) >= CONFIG["maxEntries"] or self.bytes + size > CONFIG["maxBytes"]:
            self.dropped += 1
            self.dropped_bytes += size
            return
        self.bytes += size
        self.entries.append({"level": level, "message": message, "timestamp": now()})

    def finish(self) -> list[dict[str, str]]:
        with self.lock:
            self._end_line(keep_blank=False)
        if self.dropped:
            limits = CONFIG["maxEntries"], CONFIG["maxBytes"]
            if len(self.entries) >= CONFIG["maxEntries"]:
                last = self.entries.pop()
                self.dropped += 1
                self.dropped_bytes += len(last["message"].encode("utf-8", "replace"))
            self.entries.append(
                {
                    "level": "warn",
                    "message": f"{self.dropped} more log entries ({self.dropped_bytes} bytes) were dropped: "
                    f"a run keeps at most {limits[0]} entries and {limits[1]} bytes of logs",
                    "timestamp": now(),
                }
            )
            self.dropped = 0
        return self.entries


def now() -> str:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def log(level: str, message: str) -> None:
    capture = current_capture.get()
    if capture is not None:  # outside a run (a thread the user left behind): nowhere to go
        capture.add(level, message)


def write(level: str, text: str, keep_blank: bool) -> None:
    capture = current_capture.get()
    if capture is not None:
        capture.write(level, text, keep_blank)


def user_print(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    if file is not None and file is not sys.stdout and file is not sys.stderr:
        print(*args, sep=sep, end=end, file=file, flush=flush)
        return
    for name, value in (("sep", sep), ("end", end)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be None or a string, not {type(value).__name__}")
    text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
    write("error" if file is sys.stderr else "log", text, keep_blank=True)


class Stream:
    """sys.stdout/sys.stderr of the interpreter: never the kernel's protocol pipe."""

    def __init__(self, level: str) -> None:
        self.level = level

    def write(self, text: str) -> int:
        write(self.level, text, keep_blank=False)
        return len(text)

    def flush(self) -> None:
        pass


class Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(LEVELS.get(record.levelno, "error"), record.getMessage())
        except Exception:
            self.handleError(record)


def configure_output() -> None:
    sys.stdout, sys.stderr = Stream("log"), Stream("error")
    root = logging.getLogger()
    root.handlers[:] = [Handler()]
    root.setLevel(logging.DEBUG)  # logging.info() is captured too, as console.info is in JavaScript
    logging.getLogger("asyncio").setLevel(logging.WARNING)  # its debug lines are ours, not the user's
    logging.captureWarnings(True)
    logging.raiseExceptions = False
