"""The python-api: any Runtime served over HTTP (wire protocol v1, adapters/remote/wire.py).

`functions python-api` serves the embedded PythonRuntime with it, so that Python can run on machines of
its own; the main service reaches it through RemotePythonRuntime when PYTHON_API_URL is set.
"""

from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from attrs import evolve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.hosts.walls import Walls
from adapters.remote.wire import PROTOCOL, REVISION_UNKNOWN, outcome_to_wire
from domain.body import workspace_from_body
from domain.errors import DomainError, InvalidRequest
from domain.model import Json, Outcome, Status, Workspace, check_function_name, check_workspace_id
from entrypoints.http.app import error_answer, on_http_error, on_unexpected
from entrypoints.http.bodies import JsonResponse, read_json
from entrypoints.http.middleware import ApiKeyMiddleware
from ports.runtime import Runtime

RESIDENT_WORKSPACES = 1000
MAX_REVISION = 128


class RecentWorkspaces:
    """The workspaces the remote holds, by id, each at the revision it was last sent; least recently
    used go first (a client whose workspace was dropped just sends it again)."""

    def __init__(self, capacity: int = RESIDENT_WORKSPACES) -> None:
        self.capacity = capacity
        self._workspaces: OrderedDict[str, Workspace] = OrderedDict()

    def get(self, workspace_id: str, revision: str) -> Workspace | None:
        workspace = self._workspaces.get(workspace_id)
        if workspace is None or workspace.revision != revision:
            return None
        self._workspaces.move_to_end(workspace_id)
        return workspace

    def put(self, workspace: Workspace) -> Workspace:
        self._workspaces[workspace.id] = workspace
        self._workspaces.move_to_end(workspace.id)
        while len(self._workspaces) > self.capacity:
            self._workspaces.popitem(last=False)
        return workspace

    def forget(self, workspace_id: str) -> None:
        self._workspaces.pop(workspace_id, None)


async def _request_object(request: Request) -> dict[str, Json]:
    body = await read_json(request, request.app.state.max_body)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _revision(value: Json) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REVISION:
        raise InvalidRequest(f"'revision' must be a string of 1 to {MAX_REVISION} characters")
    return value


def _params(value: Json) -> Mapping[str, Json]:
    if not isinstance(value, dict):
        raise InvalidRequest("'params' must be a JSON object")
    return value


async def prepare(request: Request) -> Response:
    body = await _request_object(request)
    workspace = workspace_from_body(check_workspace_id(body.get("id", "")), body.get("workspace"))
    files = await request.app.state.runtime.prepare(workspace)
    return JsonResponse({"files": dict(files)})


async def run(request: Request) -> Response:
    body = await _request_object(request)
    workspace_id, revision = check_workspace_id(body.get("id", "")), _revision(body.get("revision"))
    function, params = check_function_name(body.get("function", "")), _params(body.get("params", {}))
    resident: RecentWorkspaces = request.app.state.resident
    if "workspace" in body:
        sent = workspace_from_body(workspace_id, body["workspace"])
        workspace: Workspace | None = resident.put(evolve(sent, revision=revision))
    else:
        workspace = resident.get(workspace_id, revision)
    if workspace is None:
        message = f"workspace {workspace_id!r} at revision {revision!r} is not loaded: send its body"
        return JsonResponse({"error": {"type": REVISION_UNKNOWN, "message": message}}, 409)
    outcome = await request.app.state.runtime.run(workspace, function, params)
    return _outcome_response(outcome)


def _outcome_response(outcome: Outcome) -> Response:
    try:
        return JsonResponse({"outcome": outcome_to_wire(outcome)})
    except (ValueError, TypeError):  # NaN, or an object JSON cannot hold: as the main service answers it
        spoiled = Outcome(Status.NOT_SERIALIZABLE, logs=outcome.logs, duration_ms=outcome.duration_ms)
        return JsonResponse({"outcome": outcome_to_wire(spoiled)})


async def evict(request: Request) -> Response:
    workspace_id = check_workspace_id((await _request_object(request)).get("id", ""))
    request.app.state.resident.forget(workspace_id)
    await request.app.state.runtime.evict(workspace_id)
    return Response(status_code=204)


async def health(request: Request) -> Response:
    report = {**request.app.state.runtime.health(), "protocol": PROTOCOL}
    walls: Walls | None = getattr(request.app.state.runtime, "walls", None)  # the kernels' own, if any
    if walls is not None:
        report["walls"] = walls.report()
    return JsonResponse(report)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, body = error_answer(exc)  # the main service's own table: the client maps the types back
    return JsonResponse(body, status)


ROUTES = [
    Route("/v1/prepare", prepare, methods=["POST"]),
    Route("/v1/run", run, methods=["POST"]),
    Route("/v1/evict", evict, methods=["POST"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/sys/healthcheck", health, methods=["GET"]),  # open to probes even with an API key
]


def create_python_api(
    runtime: Runtime,
    *,
    api_key: str | None = None,
    max_body: int = 4 << 20,
    resident: int = RESIDENT_WORKSPACES,
) -> Starlette:
    """The python-api app serving `runtime`; its lifespan starts and closes the runtime."""

    # On app.state rather than the lifespan's state: the handlers then also work where no server runs the
    # lifespan protocol for the app (httpx's ASGITransport in tests).
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.resident = RecentWorkspaces(resident)  # a restarted python-api holds no workspace
        await runtime.start()
        try:
            yield
        finally:
            await runtime.aclose()

    handlers = {DomainError: on_domain_error, HTTPException: on_http_error, Exception: on_unexpected}
    middleware = [Middleware(ApiKeyMiddleware, key=api_key)] if api_key else []
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
    app.state.runtime, app.state.max_body = runtime, max_body
    return app
