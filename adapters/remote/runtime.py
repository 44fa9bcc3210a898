"""RemotePythonRuntime: the Runtime port over HTTP, to a `functions python-api` (PYTHON_API_URL).

The wire format (protocol v1) is adapters/remote/wire.py, which the `functions python-api` app shares.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from adapters.remote.wire import REVISION_UNKNOWN, error_from_wire, outcome_from_wire, workspace_digest
from domain.body import body_from_workspace
from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace

log = logging.getLogger(__name__)
# The remote enforces the run timeout itself; the margin covers its queue and the network, so that a
# remote timeout comes back as a TimeoutError outcome rather than as our HTTP timeout.
MARGIN_S = 10.0
SHORT_TIMEOUT_S = 2.0  # health probes and evictions: they must never hold anything up
HEALTH_EVERY_S = 5.0


class RemotePythonRuntime:
    """Sends Python prepares and runs to a `functions python-api`; the same port, over HTTP."""

    language = Language.PYTHON

    def __init__(
        self,
        *,
        url: str,
        timeout_ms: int,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process app
        health_every_s: float = HEALTH_EVERY_S,
        margin_s: float = MARGIN_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.run_timeout_s = timeout_ms / 1000 + margin_s
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._health_every_s = health_every_s
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._health: dict[str, Json] = {"status": "starting", "url": self.url}
        # workspace id -> (store revision, digest): the body is hashed once per saved revision.
        self._digests: dict[str, tuple[str, str]] = {}

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={**self._headers, "content-type": "application/json"},
            transport=self._transport,
            timeout=self.run_timeout_s,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        await self._probe()  # health is known once started; a remote that is down is not our start failing
        self._refresher = asyncio.create_task(self._refresh())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        answer = await self._post("/v1/prepare", {"id": workspace.id, "workspace": self._body(workspace)})
        files = answer.get("files")
        if not isinstance(files, dict):
            raise Unavailable(f"the python runtime at {self.url} answered a malformed prepare", url=self.url)
        return files

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        request: dict[str, Json] = {
            "id": workspace.id,
            "revision": self._digest(workspace),
            "function": function,
            "params": dict(params),
        }
        # The hot path neither ships nor even encodes code: the remote keeps loaded workspaces by (id,
        # revision). Only when it does not have this one (first run, restart, eviction) is the body sent.
        answer = await self._post(
            "/v1/run", request, resend_with=lambda: {"workspace": self._body(workspace)}
        )
        return outcome_from_wire(answer.get("outcome") or {})

    async def evict(self, workspace_id: str) -> None:
        self._digests.pop(workspace_id, None)
        try:
            await self._post("/v1/evict", {"id": workspace_id}, timeout_s=SHORT_TIMEOUT_S)
        except Unavailable as exc:
            # Runs name the content they want (its digest), so a missed eviction can never run stale code:
            # it only leaves memory (and `cache`) on the remote until its own eviction. A save must not fail.
            log.warning("could not evict workspace %r from the python runtime: %s", workspace_id, exc.message)

    def health(self) -> Mapping[str, Json]:
        return dict(self._health)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._client is not None:
            await self._client.aclose()
        self._health = {"status": "unavailable", "url": self.url, "reason": "closed"}

    # -- the wire --------------------------------------------------------------------------------

    def _body(self, workspace: Workspace) -> dict[str, Json]:
        return body_from_workspace(workspace)

    def _digest(self, workspace: Workspace) -> str:
        known = self._digests.get(workspace.id)
        if known is not None and workspace.revision and known[0] == workspace.revision:
            return known[1]
        digest = workspace_digest(workspace, self._body(workspace))
        self._digests[workspace.id] = (workspace.revision, digest)
        return digest

    async def _post(
        self,
        path: str,
        payload: dict[str, Json],
        *,
        resend_with: Callable[[], dict[str, Json]] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Json]:
        status, answer = await self._call("POST", path, payload, timeout_s)
        if status == 409 and resend_with is not None and _error_type(answer) == REVISION_UNKNOWN:
            status, answer = await self._call("POST", path, {**payload, **resend_with()}, timeout_s)
        if status >= 400:
            raise error_from_wire(status, answer, self.url)
        return answer if isinstance(answer, dict) else {}

    async def _call(self, method: str, path: str, payload: Json, timeout_s: float | None) -> tuple[int, Json]:
        if self._client is None:
            raise Unavailable(f"the python runtime at {self.url} is not started", url=self.url)
        timeout = self.run_timeout_s if timeout_s is None else timeout_s
        try:
            response = await self._client.request(method, path, content=_encode(payload), timeout=timeout)
        except httpx.TimeoutException:
            raise Unavailable(
                f"the python runtime at {self.url} did not answer within {timeout:g} s", url=self.url
            ) from None
        except httpx.TransportError as exc:
            down = Unavailable(f"the python runtime at {self.url} cannot be reached: {exc}", url=self.url)
            self._health = {"status": "unavailable", "url": self.url, "reason": down.message}  # at once
            raise down from None
        return response.status_code, _json_of(response)

    # -- health ----------------------------------------------------------------------------------

    async def _probe(self) -> None:
        try:
            status, answer = await self._call("GET", "/v1/health", None, SHORT_TIMEOUT_S)
        except Unavailable as exc:
            self._health = {"status": "unavailable", "url": self.url, "reason": exc.message}
            return
        if status >= 400 or not isinstance(answer, dict):
            reason = error_from_wire(status, answer, self.url).message
            self._health = {"status": "unavailable", "url": self.url, "reason": reason}
            return
        self._health = {**answer, "url": self.url}

    async def _refresh(self) -> None:
        # health() is synchronous and must not wait on the network: it reads what this loop last saw.
        while True:
            await asyncio.sleep(self._health_every_s)
            await self._probe()


def _encode(payload: Json) -> bytes | None:
    # ASCII escapes carry what UTF-8 cannot: a lone surrogate that a JSON request put into a parameter.
    return None if payload is None else json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def _error_type(answer: Json) -> Any:
    error = answer.get("error") if isinstance(answer, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def _json_of(response: httpx.Response) -> Json:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {"error": {"type": "InternalError", "message": f"HTTP {response.status_code}, not JSON"}}
