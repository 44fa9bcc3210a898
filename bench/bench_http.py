"""Minimal HTTP/1.1 clients on raw keep-alive sockets.

http.client parses headers with the email package, which costs tens of microseconds per answer: more than
the bare server's own work. A pre-built request and a hand-rolled reader keep the client's share of a
measured latency as small as Python allows.
"""

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(method: str, path: str, port: int, payload: Any = None) -> bytes:
    """The bytes of one keep-alive request; built once and re-sent for repeated runs."""
    body = b"" if payload is None else json.dumps(payload).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if payload is not None:
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def body_length(headers: dict[str, str]) -> int:
    # Both servers answer with Content-Length; a chunked answer would be a change worth failing loudly on.
    if "content-length" not in headers:
        raise RuntimeError(f"answer without Content-Length: {headers}")
    return int(headers["content-length"])


@dataclass
class Connection:
    """One blocking keep-alive connection to 127.0.0.1:port."""

    port: int
    timeout: float = 60.0
    reconnects: int = 0  # connections the server closed after an answer (Connection: close)
    _sock: socket.socket | None = None
    _buffer: bytes = field(default=b"", repr=False)

    def request(self, method: str, path: str, payload: Any = None) -> Answer:
        return self.send(build_request(method, path, self.port, payload))

    def send(self, request: bytes) -> Answer:
        sock = self.connect()
        sock.sendall(request)
        head = self._read_until_head_end(sock)
        status, headers = parse_head(head)
        answer = Answer(status, headers, self._read_exactly(sock, body_length(headers)))
        if headers.get("connection", "").lower() == "close":
            # Hypercorn ends a keep-alive connection after keep_alive_max_requests (1000) answers.
            self.close()
            self.reconnects += 1
        return answer

    def connect(self) -> socket.socket:
        """The open socket, connecting first if needed; callers that time requests call it beforehand."""
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            # Without it, Nagle holds the body segment until the head is acknowledged (~40 ms).
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def _recv(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def _read_until_head_end(self, sock: socket.socket) -> bytes:
        while (end := self._buffer.find(HEAD_END)) < 0:
            self._recv(sock)
        head, self._buffer = self._buffer[:end], self._buffer[end + len(HEAD_END) :]
        return head

    def _read_exactly(self, sock: socket.socket, size: int) -> bytes:
        while len(self._buffer) < size:
            self._recv(sock)
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body


@dataclass
class LoadTally:
    """What the asyncio fallback load generator collects from all its connections."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0


async def _one_connection(port: int, request: bytes, deadline: float, tally: LoadTally) -> None:
    while time.perf_counter() < deadline:  # one pass per connection: the server may close it (keep-alive cap)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _requests(reader, writer, request, deadline, tally)
        finally:
            writer.close()


async def _requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    deadline: float,
    tally: LoadTally,
) -> None:
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        writer.write(request)
        status, headers = parse_head((await reader.readuntil(HEAD_END))[: -len(HEAD_END)])
        await reader.readexactly(body_length(headers))
        tally.latencies_ns.append(time.perf_counter_ns() - start)
        tally.errors += status != 200
        if headers.get("connection", "").lower() == "close":
            return


async def closed_loop_load(port: int, request: bytes, connections: int, seconds: float) -> LoadTally:
    """`connections` clients, each sending its next request as soon as the previous answer is in."""
    tally = LoadTally()
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_one_connection(port, request, deadline, tally) for _ in range(connections)))
    return tally
