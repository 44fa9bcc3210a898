"""ASGI middleware of the service; plain ASGI, so a run pays no per-request framework wrapper."""

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Liveness and metrics stay open for probes; the API description and its page hold no data.
OPEN_PATHS = frozenset({"/sys/healthcheck", "/metrics", "/openapi.json", "/docs"})


class ApiKeyMiddleware:
    """With FUNCTIONS_API_KEY set, every other route needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
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
