"""Where the CLI's commands go: a running service over HTTP (`--url`), or the local storage in-process.

Both answer alike: JSON bodies in and out, and the service's own error bodies in CommandError, so a
command prints the same thing whichever way it went.
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

import anyio
from anyio import to_thread
from dependency_injector import providers

from domain.errors import DomainError
from domain.model import Json
from entrypoints.container import Container
from entrypoints.embed import Service, open_service
from entrypoints.http.app import error_answer, not_serializable, outcome_answer
from entrypoints.settings import Settings

Answer = tuple[int, dict[str, Any]]


class CommandError(Exception):
    """The service refused: its status and JSON error body (`{"error": {"type", "message", ...}}`)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        found = body.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        self.status = status
        self.body = body
        self.kind = str(error.get("type", f"HTTP {status}"))
        self.message = str(error.get("message", ""))
        super().__init__(f"{self.kind}: {self.message}")


class Unreachable(Exception):
    """No answer from the service's URL."""


class Target(Protocol):
    """The API the commands use. Errors raise CommandError; `run` answers its status and body."""

    where: str

    async def save(self, workspace_id: str, body: Json) -> Json: ...
    async def get(self, workspace_id: str) -> Json: ...
    async def delete(self, workspace_id: str) -> None: ...
    async def list(self) -> list[str]: ...
    async def run(self, workspace_id: str, function: str, body: dict[str, Any]) -> Answer: ...
    async def run_async(self, workspace_id: str, function: str, body: dict[str, Any]) -> Json: ...
    async def versions(self, workspace_id: str) -> Sequence[Json]: ...
    async def restore(self, workspace_id: str, number: int) -> tuple[int | None, Json]: ...
    async def runs(self, workspace_id: str, filters: dict[str, str]) -> Sequence[Json]: ...
    async def get_run(self, workspace_id: str, run_id: str) -> Json: ...


class HttpTarget:
    """A running service, through its HTTP API (the standard library's client: no extra dependency)."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.where = self.url
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s  # a save may install dependencies: minutes, not seconds

    async def save(self, workspace_id: str, body: Json) -> Json:
        return self._ok(await self._call("POST", _path(workspace_id), body))

    async def get(self, workspace_id: str) -> Json:
        return self._ok(await self._call("GET", _path(workspace_id)))

    async def delete(self, workspace_id: str) -> None:
        self._ok(await self._call("DELETE", _path(workspace_id)))

    async def list(self) -> list[str]:
        answer = self._ok(await self._call("GET", "/v2/functions"))
        return list(answer["workspaces"])

    async def run(self, workspace_id: str, function: str, body: dict[str, Any]) -> Answer:
        status, answer = await self._call("POST", f"{_path(workspace_id)}/run/{_quote(function)}", body)
        if "result" not in answer and "logs" not in answer:  # refused before the run started
            raise CommandError(status, answer)
        return status, answer

    async def run_async(self, workspace_id: str, function: str, body: dict[str, Any]) -> Json:
        path = f"{_path(workspace_id)}/run/{_quote(function)}?async=true"
        return self._ok(await self._call("POST", path, body))

    async def versions(self, workspace_id: str) -> Sequence[Json]:
        return list(self._ok(await self._call("GET", f"{_path(workspace_id)}/versions"))["versions"])

    async def restore(self, workspace_id: str, number: int) -> tuple[int | None, Json]:
        saved = self._ok(await self._call("POST", f"{_path(workspace_id)}/versions/{number}/restore", {}))
        current = (await self.versions(workspace_id))[0]["version"]  # the version the restore made
        return current, saved

    async def runs(self, workspace_id: str, filters: dict[str, str]) -> Sequence[Json]:
        query = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        return list(self._ok(await self._call("GET", f"{_path(workspace_id)}/runs{query}"))["runs"])

    async def get_run(self, workspace_id: str, run_id: str) -> Json:
        return self._ok(await self._call("GET", f"{_path(workspace_id)}/runs/{_quote(run_id)}"))

    @staticmethod
    def _ok(answer: Answer) -> Any:
        status, body = answer
        if status >= 400:
            raise CommandError(status, body)
        return body

    async def _call(self, method: str, path: str, body: Json = None) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, self.headers, method=method)
        return await to_thread.run_sync(self._send, request)

    def _send(self, request: urllib.request.Request) -> Answer:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return answer.status, _json_of(answer.read(), answer.status)
        except urllib.error.HTTPError as exc:  # an answer, with an error status
            return exc.code, _json_of(exc.read(), exc.code)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the service at {self.url}: {reason}") from None


def _path(workspace_id: str) -> str:
    return f"/v2/functions/{_quote(workspace_id)}"


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _json_of(raw: bytes, status: int) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        message = f"the answer is not a JSON object: {raw[:200]!r}"
        return {"error": {"type": f"HTTP {status}", "message": message}}
    return body


class LocalTarget:
    """The service built in-process on the local storage (FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH)."""

    def __init__(self, service: Service, storage_dir: object) -> None:
        self.service = service
        self.where = f"local storage {storage_dir}"

    async def save(self, workspace_id: str, body: Json) -> Json:
        with _refusals():
            return await self.service.save(workspace_id, body)

    async def get(self, workspace_id: str) -> Json:
        with _refusals():
            return await self.service.get(workspace_id)

    async def delete(self, workspace_id: str) -> None:
        with _refusals():
            await self.service.delete(workspace_id)

    async def list(self) -> list[str]:
        return await self.service.list()

    async def run(self, workspace_id: str, function: str, body: dict[str, Any]) -> Answer:
        with _refusals():
            outcome = await self.service.run(workspace_id, function, body.get("parameters"))
        status, answer = outcome_answer(outcome)
        try:
            json.dumps(answer, allow_nan=False)
        except (ValueError, TypeError):  # as the HTTP answer does for NaN and the like
            status, answer = outcome_answer(not_serializable(outcome))
        return status, answer

    async def run_async(self, workspace_id: str, function: str, body: dict[str, Any]) -> Json:
        """Queued in this process, which stops with the command: it waits for the outcome."""
        with _refusals():
            run = await self.service.run_async(workspace_id, function, body.get("parameters"))
            while run["status"] in ("queued", "running"):
                await anyio.sleep(0.05)
                run = await self.service.get_run(workspace_id, run["id"])
        return run

    async def versions(self, workspace_id: str) -> Sequence[Json]:
        with _refusals():
            return list(await self.service.list_versions(workspace_id))

    async def restore(self, workspace_id: str, number: int) -> tuple[int | None, Json]:
        with _refusals():
            return await self.service.restore(workspace_id, number)

    async def runs(self, workspace_id: str, filters: dict[str, str]) -> Sequence[Json]:
        with _refusals():
            return list(await self.service.list_runs(workspace_id, **filters))

    async def get_run(self, workspace_id: str, run_id: str) -> Json:
        with _refusals():
            return await self.service.get_run(workspace_id, run_id)


@contextmanager
def _refusals() -> Iterator[None]:
    """A DomainError as the HTTP API would have answered it."""
    try:
        yield
    except DomainError as exc:
        raise CommandError(*error_answer(exc)) from None


@asynccontextmanager
async def open_target(url: str | None, settings: Settings) -> AsyncIterator[Target]:
    """`url`'s service (with FUNCTIONS_API_KEY as its bearer key), or the local one when None."""
    if url is not None:
        yield HttpTarget(url, settings.api_key)
        return
    # A service may be running on this storage: the async runs it holds are not ours to fail.
    local = Container(settings=providers.Object(settings))
    async with open_service(container=local, recover_runs=False) as service:
        yield LocalTarget(service, settings.storage_dir)
