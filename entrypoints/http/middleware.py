"""ASGI middleware of the service; plain ASGI, so a run pays no per-request framework wrapper."""

import hmac
import json
import os
import re
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entrypoints.http.logs import AccessLog
from entrypoints.http.metrics import Metrics
from entrypoints.http.playground import PAGE_PATHS as PLAYGROUND_PATHS

# Liveness and metrics stay open for probes; the API description, the playground and their pages hold no
# data (the playground's page asks for the key and sends it on its API calls).
OPEN_PATHS = frozenset({"/sys/healthcheck", "/metrics", "/openapi.json", "/docs", *PLAYGROUND_PATHS})


class ApiKeyMiddleware:
    """With FUNCTIONS_API_KEY set, every other route needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["outcome"] = "Unauthorized"  # for the access log
        body = {
            "error": {
                "type": "Unauthorized",
                "message": "missing or wrong API key: send "
                "'Authorization: Bearer <key>' with the key of FUNCTIONS_API_KEY",
            }
        }
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected)  # constant time: no key by timing
        return False


# An incoming X-Request-Id is kept when it is short, printable and safe in a log line and a header.
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class AccessMiddleware:
    """Gives every request an id (kept from a sane X-Request-Id, else new) that the answer carries in
    X-Request-Id, counts the request in the metrics and writes one access-log line for it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: AccessLog) -> None:
        self.app = app
        self.requests = CachedChildren(metrics.requests)
        self.sizes = CachedChildren(metrics.request_size)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, size = _id_and_size(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500  # what ServerErrorMiddleware answers if the app raises before its answer starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            state.setdefault("outcome", "InternalError")  # answered outside, by ServerErrorMiddleware
            raise
        finally:
            route = _route_of(scope)
            self.requests.get(route, str(status)).inc()
            if size is not None:
                self.sizes.get(route).observe(size)
            self.access_log.write(scope, state, status, time.perf_counter() - started)


class CachedChildren:
    """A labelled metric's children, looked up once per label values."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def get(self, *labels: str) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


def _id_and_size(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, int | None]:
    request_id: str | None = None
    size: int | None = None
    for name, value in headers:
        if name == b"x-request-id" and SANE_REQUEST_ID.fullmatch(value):
            request_id = value.decode()
        elif name == b"content-length" and value.isdigit():
            size = int(value)
    return request_id or os.urandom(16).hex(), size


def _route_of(scope: Scope) -> str:
    # The route's template, not the path: one label value per route, whatever the ids in it.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
