"""A runtime host child process: a scrubbed environment, one JSON object per line each way, replies by id.

Replies are read by an asyncio protocol and handed straight to the waiting future: a run costs no
reader task hop and no timeout task, which matters at a few hundred microseconds per run.
"""

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from domain.errors import CompileError, InvalidRequest, Unavailable
from domain.model import LogEntry, Outcome, Status

Message = dict[str, Any]
LINE_LIMIT = 64 * 1024 * 1024  # one reply carries a whole result and its logs
STDOUT, STDERR = 1, 2
log = logging.getLogger("functions.hosts")
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # the host's JSON.parse has no NaN


class _Lines(asyncio.SubprocessProtocol):
    """Splits the host's stdout into lines for the host, and its stderr into the service log."""

    def __init__(self, host: "HostProcess") -> None:
        self.host = host
        self.partial = {STDOUT: bytearray(), STDERR: bytearray()}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer, start = self.partial[fd], 0
        while (end := data.find(b"\n", start)) >= 0:  # scan only the new bytes: a 10 MB line stays linear
            if buffer:
                buffer += data[start:end]
                line = bytes(buffer)
                buffer.clear()
            else:
                line = data[start:end]
            self.host._on_line(fd, line)
            start = end + 1
        buffer += data[start:]
        if len(buffer) > LINE_LIMIT:
            buffer.clear()
            self.host._broken(f"a line longer than {LINE_LIMIT} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.host._on_closed()  # the process exited and its pipes are drained


class HostProcess:
    """One started host. Requests wait for the reply with their id; if the host dies they get Unavailable."""

    def __init__(
        self,
        argv: Sequence[str],
        name: str,
        env: Mapping[str, str] | None = None,
        on_closed: Callable[[], None] | None = None,
        pass_fds: Sequence[int] = (),
        on_started: Callable[[int], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.pass_fds = tuple(pass_fds)  # what the launcher inherits (the egress guard's channel)
        self.on_started = on_started  # with the pid, as soon as the process exists
        self.name = name
        self.env = dict(env or {})  # only what the host needs: none of the service's variables
        self.on_closed = on_closed  # after the process has ended (its scratch folder goes)
        self.ready: Message = {}
        self.exit_reason = ""
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._first_line: asyncio.Future[Message] | None = None
        self._closed = asyncio.Event()

    async def start(self, ready_timeout_s: float = 10.0) -> Message:
        """Spawn the host and wait for its `ready` line; Unavailable if it cannot start."""
        loop = asyncio.get_running_loop()
        self._first_line = loop.create_future()
        try:
            self._transport, _ = await loop.subprocess_exec(
                lambda: _Lines(self),
                *self.argv,
                env=self.env,
                start_new_session=True,  # a signal to the service's group does not hit the host first
                pass_fds=self.pass_fds,
            )
        except OSError as exc:
            self._closed.set()
            if self.on_closed is not None:
                self.on_closed()
            raise Unavailable(f"the {self.name} host could not start: {exc}") from None
        self._stdin = self._transport.get_pipe_transport(0)  # type: ignore[assignment]
        if self.on_started is not None:
            self.on_started(self._transport.get_pid())
        try:
            self.ready = await asyncio.wait_for(self._first_line, ready_timeout_s)
        except (TimeoutError, Unavailable) as exc:
            await self.kill()
            raise Unavailable(f"the {self.name} host did not report ready: {exc or 'timed out'}") from None
        return self.ready

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self._closed.is_set()

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport else None

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message: Message) -> None:
        """Queue one message; ordering on the pipe is the order of calls."""
        if not self.alive or self._stdin is None or self._stdin.is_closing():
            raise Unavailable(f"the {self.name} host is not running: {self.exit_reason or 'stopped'}")
        try:
            line = _encode(message).encode()
        except ValueError as exc:  # NaN or infinity from an embedder: refused here, the host stays up
            raise InvalidRequest(f"the values sent to the {self.name} host are not JSON: {exc}") from None
        self._stdin.write(line + b"\n")

    async def request(self, message: Message, timeout_s: float) -> Message:
        """Send a message carrying a fresh `id` and wait for the reply with that id."""
        loop = asyncio.get_running_loop()
        request_id = message["id"] = next(self._ids)
        future: asyncio.Future[Message] = loop.create_future()
        self._waiting[request_id] = future
        # A timer, not wait_for: wait_for wraps every run in a task of its own.
        timer = loop.call_later(timeout_s, self._stuck, future, timeout_s)
        try:
            self.send(message)
            reply = await future
            if reply.get("type") == "unavailable":  # the host could not serve this one request
                raise Unavailable(str(reply.get("message", f"the {self.name} host could not answer")))
            return reply
        finally:
            timer.cancel()
            self._waiting.pop(request_id, None)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def kill(self, reason: str = "stopped by the service") -> None:
        self.exit_reason = self.exit_reason or reason
        if self._transport is not None and not self._closed.is_set():
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 5.0)
        self._on_closed()

    async def close(self, grace_s: float = 2.0) -> None:
        """Ask the host to stop, then make sure it did."""
        if self.alive:
            with contextlib.suppress(Unavailable, ConnectionError):
                self.send({"type": "shutdown"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), grace_s)
        await self.kill()

    def _on_line(self, fd: int, line: bytes) -> None:
        if fd == STDERR:
            log.warning("%s host: %s", self.name, line.decode(errors="replace").rstrip())
            return
        try:
            message = json.loads(line)
        except ValueError as exc:
            self._broken(f"not JSON: {exc}")
            return
        if self._first_line is not None and not self._first_line.done():
            self._first_line.set_result(message)
        elif message.get("type") == "protocol_error":
            log.error("%s host protocol error: %s", self.name, message.get("detail"))
        else:
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    def _stuck(self, future: asyncio.Future[Message], timeout_s: float) -> None:
        if not future.done():
            future.set_exception(Unavailable(f"the {self.name} host stopped answering and was restarted"))
            self._broken(f"no reply within {timeout_s:.1f} s")

    def _broken(self, why: str) -> None:
        """The host cannot be trusted any more: kill it; its death fails everything still waiting."""
        self.exit_reason = self.exit_reason or f"the {self.name} host broke: {why}"
        if self._transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def _on_closed(self) -> None:
        if self._closed.is_set():
            return
        code = self._transport.get_returncode() if self._transport else None
        self.exit_reason = self.exit_reason or f"the {self.name} host exited with code {code}"
        self._closed.set()
        failure = Unavailable(f"the {self.name} host stopped: {self.exit_reason}")
        waiting, self._waiting = self._waiting, {}
        for future in [self._first_line, *waiting.values()]:
            if future is not None and not future.done():
                future.set_exception(failure)
                # Whoever awaits it still gets the error; one nobody awaits any more (a start that was
                # cancelled while spawning) is not reported by the event loop as never retrieved.
                future.exception()
        if self._transport is not None:
            self._transport.close()
        if self.on_closed is not None:
            self.on_closed()


# -- what both hosts answer ------------------------------------------------------------------------


def raise_compile_errors(reply: Message) -> None:
    """A `compiled` reply with errors becomes a CompileError naming the first function, line and column."""
    if errors := reply.get("errors"):
        first = errors[0]
        raise CompileError(
            f"function {first['function']!r} does not compile: {first['message']} "
            f"(line {first['line']}, column {first['column']})",
            function=first["function"],
            line=first["line"],
            column=first["column"],
            errors=errors,
        )


def outcome_of(reply: Message) -> Outcome:
    """A `result` reply as an Outcome; `aborted` (the worker or kernel went away mid-run) is Unavailable."""
    error = reply.get("error")
    if reply["status"] == "aborted":
        raise Unavailable((error or {}).get("message", "the run was aborted"))
    host = reply.get("host") or {}
    duration = float(reply.get("durationMs", 0.0))
    timings = {"run": duration}
    if "startedAt" in reply and "receivedAt" in host:
        timings["queue"] = max(0.0, reply["startedAt"] - host["receivedAt"] - host.get("coldMs", 0.0))
    if host.get("cold"):
        timings["cold"] = host.get("coldMs", 0.0)
    return Outcome(
        Status(reply["status"]),
        result=reply.get("result"),
        logs=[LogEntry(e["level"], e["message"], e["timestamp"]) for e in reply.get("logs", ())],
        duration_ms=duration,
        error=error,
        cold=bool(host.get("cold")),
        timings=timings,
    )
