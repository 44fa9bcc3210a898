"""A runtime host child process: a scrubbed environment, one JSON object per line each way, replies by id."""

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from domain.errors import Unavailable

Message = dict[str, Any]
LINE_LIMIT = 64 * 1024 * 1024  # one reply carries a whole result and its logs
log = logging.getLogger("functions.hosts")


class HostProcess:
    """One started host. Requests wait for the reply with their id; if the host dies they get Unavailable."""

    def __init__(self, argv: Sequence[str], name: str, env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.name = name
        self.env = dict(env or {})  # only what the host needs: none of the service's variables
        self.ready: Message = {}
        self.exit_reason = ""
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()

    async def start(self, ready_timeout_s: float = 10.0) -> Message:
        """Spawn the host and wait for its `ready` line; Unavailable if it cannot start."""
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                limit=LINE_LIMIT,
                start_new_session=True,  # a signal to the service's group does not hit the host first
            )
        except OSError as exc:
            raise Unavailable(f"the {self.name} host could not start: {exc}") from None
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), ready_timeout_s)
            self.ready = json.loads(line)
        except (TimeoutError, ValueError):
            await self.kill()
            raise Unavailable(f"the {self.name} host did not report ready (got {line[:200]!r})") from None
        self._tasks = [asyncio.create_task(self._read_replies()), asyncio.create_task(self._read_stderr())]
        return self.ready

    @property
    def alive(self) -> bool:
        return self._process is not None and not self._closed.is_set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message: Message) -> None:
        """Queue one message; ordering on the pipe is the order of calls."""
        if not self.alive:
            raise Unavailable(f"the {self.name} host is not running: {self.exit_reason or 'stopped'}")
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def request(self, message: Message, timeout_s: float) -> Message:
        """Send a message carrying a fresh `id` and wait for the reply with that id."""
        request_id = message["id"] = self.next_id()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self.send(message)
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            await self.kill(f"no reply from the {self.name} host within {timeout_s:.1f} s")
            raise Unavailable(f"the {self.name} host stopped answering and was restarted") from None
        finally:
            self._waiting.pop(request_id, None)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def kill(self, reason: str = "stopped by the service") -> None:
        self.exit_reason = self.exit_reason or reason
        if self._process and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        self._fail_all()

    async def close(self, grace_s: float = 2.0) -> None:
        """Ask the host to stop, then make sure it did."""
        if self.alive:
            with contextlib.suppress(Unavailable, ConnectionError):
                self.send({"type": "shutdown"})
            assert self._process is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), grace_s)
        await self.kill()
        for task in self._tasks:
            task.cancel()

    async def _read_replies(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        try:
            while line := await stdout.readline():
                self._dispatch(json.loads(line))
        except (ValueError, asyncio.LimitOverrunError) as exc:
            await self.kill(f"the {self.name} host broke the protocol: {exc}")
        code = await self._process.wait()
        self.exit_reason = self.exit_reason or f"the {self.name} host exited with code {code}"
        self._fail_all()

    def _dispatch(self, message: Message) -> None:
        if message.get("type") == "protocol_error":
            log.error("%s host protocol error: %s", self.name, message.get("detail"))
            return
        future = self._waiting.pop(message.get("id", -1), None)
        if future is not None and not future.done():
            future.set_result(message)

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            log.warning("%s host: %s", self.name, line.decode(errors="replace").rstrip())

    def _fail_all(self) -> None:
        self._closed.set()
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(Unavailable(f"the {self.name} host stopped: {self.exit_reason}"))
