"""A runtime host child process: a scrubbed environment, the host protocol (adapters/hosts/protocol.py) one
JSON object per line each way, replies matched to requests by id.

Replies are read by an asyncio protocol and handed straight to the waiting future: a run costs no
reader task hop and no timeout task, which matters at a few hundred microseconds per run. Every deadline
is kept here, by the service: a request's timer either ends the run (`on_deadline`) or finds the host stuck.
"""

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence

from adapters.hosts.protocol import (
    SHUTDOWN,
    HostMessage,
    Malformed,
    ProtocolError,
    Ready,
    Refused,
    Reply,
    Result,
    RunStatus,
    Wire,
    decode,
)
from domain.errors import InvalidRequest, Unavailable

LINE_LIMIT = 64 * 1024 * 1024  # one reply carries a whole result and its logs
STDOUT, STDERR = 1, 2
# A host told that a run's deadline passed confirms within this long (its worker ended), or is stuck.
STUCK_AFTER_S = 5.0
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
        self.ready = Ready(0, "")
        self.exit_reason = ""
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._overdue: dict[int, asyncio.TimerHandle] = {}  # runs past their deadline, until confirmed
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._first_line: asyncio.Future[Reply | Ready] | None = None
        self._closed = asyncio.Event()
        self._ending = False

    async def start(self, ready_timeout_s: float = 10.0) -> Ready:
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
            first = await asyncio.wait_for(self._first_line, ready_timeout_s)
        except (TimeoutError, Unavailable) as exc:
            await self.kill()
            raise Unavailable(f"the {self.name} host did not report ready: {exc or 'timed out'}") from None
        if not isinstance(first, Ready):
            await self.kill()
            raise Unavailable(f"the {self.name} host began with {type(first).__name__}, not ready")
        self.ready = first
        return first

    @property
    def alive(self) -> bool:
        """Running and trusted: false from the moment the service decides to end it."""
        return self._transport is not None and not self._closed.is_set() and not self._ending

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport else None

    def send(self, message: Wire) -> None:
        """Queue one message; ordering on the pipe is the order of calls."""
        if not self.alive or self._stdin is None or self._stdin.is_closing():
            raise Unavailable(f"the {self.name} host is not running: {self.exit_reason or 'stopped'}")
        try:
            line = _encode(message).encode()
        except ValueError as exc:  # NaN or infinity from an embedder: refused here, the host stays up
            raise InvalidRequest(f"the values sent to the {self.name} host are not JSON: {exc}") from None
        self._stdin.write(line + b"\n")

    async def request(
        self,
        wire: Callable[[int], Wire],
        timeout_s: float,
        on_deadline: Callable[[int], Reply] | None = None,
    ) -> Reply:
        """Send `wire(id)` with a fresh id and wait for the reply with that id.

        At `timeout_s` the request is over: with `on_deadline` (a run), its answer is what that returns
        (the runtime ends the run its own way) and the host must confirm within STUCK_AFTER_S; without
        it, the host is stuck and is killed.
        """
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting[request_id] = future
        # A timer, not wait_for: wait_for wraps every run in a task of its own.
        timer = loop.call_later(timeout_s, self._deadline, request_id, future, timeout_s, on_deadline)
        try:
            self.send(wire(request_id))
            reply = await future
            if isinstance(reply, Refused):  # the host could not serve this one request
                raise Unavailable(reply.message)
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
                self.send(SHUTDOWN)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), grace_s)
        await self.kill()

    def _on_line(self, fd: int, line: bytes) -> None:
        if fd == STDERR:
            log.warning("%s host: %s", self.name, line.decode(errors="replace").rstrip())
            return
        try:
            message: HostMessage = decode(json.loads(line))
        except (ValueError, Malformed) as exc:
            self._broken(f"not a protocol message: {exc}")
            return
        if self._first_line is not None and not self._first_line.done():
            self._first_line.set_result(message)  # type: ignore[arg-type]
        elif isinstance(message, ProtocolError):
            log.error("%s host protocol error: %s", self.name, message.detail)
        elif isinstance(message, Ready):
            self._broken("a second ready line")
        else:
            if (confirmed := self._overdue.pop(message.id, None)) is not None:
                confirmed.cancel()  # the host ended the overdue run: it is not stuck
            future = self._waiting.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)

    def _deadline(
        self,
        request_id: int,
        future: asyncio.Future[Reply],
        timeout_s: float,
        on_deadline: Callable[[int], Reply] | None,
    ) -> None:
        if future.done():
            return
        if on_deadline is None:
            future.set_exception(Unavailable(f"the {self.name} host stopped answering and was restarted"))
            self._broken(f"no reply within {timeout_s:.1f} s")
            return
        loop = asyncio.get_running_loop()
        stuck = f"a run overran its deadline and the host did not end it within {STUCK_AFTER_S:g} s"
        self._overdue[request_id] = loop.call_later(STUCK_AFTER_S, self._broken, stuck)
        future.set_result(on_deadline(request_id))

    def end(self, reason: str) -> None:
        """Kill the host now, for `reason` (what waits on it fails; `wait_closed` hears of the end)."""
        self.exit_reason = self.exit_reason or reason
        self._ending = True
        if self._transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def _broken(self, why: str) -> None:
        """The host cannot be trusted any more: kill it; its death fails everything still waiting."""
        self.exit_reason = self.exit_reason or f"the {self.name} host broke: {why}"
        self._ending = True
        if self._transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def _on_closed(self) -> None:
        if self._closed.is_set():
            return
        code = self._transport.get_returncode() if self._transport else None
        self.exit_reason = self.exit_reason or f"the {self.name} host exited with code {code}"
        self._closed.set()
        for timer in self._overdue.values():
            timer.cancel()
        self._overdue.clear()
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


def timed_out(request_id: int, timeout_ms: int, message: str) -> Result:
    """The answer of a run whose deadline passed."""
    return Result(
        request_id,
        RunStatus.TIMED_OUT,
        duration_ms=float(timeout_ms),
        error={"name": "TimeoutError", "message": message},
    )
