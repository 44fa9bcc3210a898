"""The HTTP API: routes, handlers and the tables that turn errors and outcomes into answers."""

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.codec import body_from_workspace, workspace_from_body
from domain.errors import (
    CompileError,
    DependencyError,
    DomainError,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from domain.model import Outcome, Status, check_workspace_id
from entrypoints.bodies import JsonResponse, PayloadTooLarge, read_json
from entrypoints.container import Container, build_container, running
from entrypoints.docs import docs_page, openapi_json
from entrypoints.middleware import ApiKeyMiddleware

log = logging.getLogger(__name__)


class Unauthorized(DomainError):
    """Missing or wrong API key (FUNCTIONS_API_KEY)."""


# Looked up along the MRO: the most specific class wins.
ERRORS: dict[type[DomainError], tuple[int, str]] = {
    InvalidRequest: (400, "InvalidRequest"),
    InvalidParameters: (400, "InvalidParameters"),
    CompileError: (400, "CompileError"),
    DependencyError: (400, "DependencyError"),
    Unauthorized: (401, "Unauthorized"),
    NotFound: (404, "NotFound"),
    PayloadTooLarge: (413, "PayloadTooLarge"),
    Unavailable: (503, "Unavailable"),
}
OUTCOMES: dict[Status, tuple[int, str]] = {
    Status.FAILED: (422, "FunctionError"),
    Status.RESOURCE_LIMIT: (422, "ResourceLimitError"),
    Status.NOT_SERIALIZABLE: (422, "ResultNotSerializable"),
    Status.TIMED_OUT: (504, "TimeoutError"),
}
DEFAULT_MESSAGES = {
    Status.FAILED: "the function threw an error",
    Status.RESOURCE_LIMIT: "the run went over its memory or output limit",
    Status.NOT_SERIALIZABLE: "the function's result cannot become JSON",
    Status.TIMED_OUT: "the run went over its timeout",
}
HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed"}


def error_body(kind: str, message: str, details: Any = ()) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **dict(details)}}


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, kind = next((ERRORS[c] for c in type(exc).__mro__ if c in ERRORS), (500, "InternalError"))
    return JsonResponse(error_body(kind, exc.message, exc.details), status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in the service's error shape."""
    assert isinstance(exc, HTTPException)
    kind = HTTP_KINDS.get(exc.status_code, "HTTPError")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JsonResponse(error_body(kind, message), exc.status_code, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug of ours: logged with an id that the answer carries, so a report can be matched to it."""
    request_id = uuid.uuid4().hex
    log.error("unhandled error (request %s)", request_id, exc_info=exc, extra={"request_id": request_id})
    body = error_body("InternalError", "an unexpected error on our side", {"requestId": request_id})
    return JsonResponse(body, 500)


def server_timing(outcome: Outcome) -> str:
    timings = [f"{name};dur={ms:.2f}" for name, ms in outcome.timings.items()]
    if "run" not in outcome.timings:
        timings.append(f"run;dur={outcome.duration_ms:.2f}")
    return ", ".join(timings)


def outcome_response(outcome: Outcome) -> Response:
    worker = "cold" if outcome.cold else "warm"
    headers = {"server-timing": server_timing(outcome), "x-functions-worker": worker}
    logs = [{"level": e.level, "message": e.message, "timestamp": e.timestamp} for e in outcome.logs]
    if outcome.status is Status.SUCCEEDED:
        try:
            body = {"result": outcome.result, "logs": logs, "duration": outcome.duration_ms}
            return JsonResponse(body, 200, headers)
        except (ValueError, TypeError):  # NaN, Infinity or a non-JSON object from a runtime
            outcome = Outcome(Status.NOT_SERIALIZABLE, logs=outcome.logs, duration_ms=outcome.duration_ms)
    status, kind = OUTCOMES[outcome.status]
    error = {k: v for k, v in (outcome.error or {}).items() if k not in ("type", "message")}
    message = (outcome.error or {}).get("message") or DEFAULT_MESSAGES[outcome.status]
    failure = {**error_body(kind, str(message), error), "logs": logs, "duration": outcome.duration_ms}
    return JsonResponse(failure, status, headers)


async def run_function(request: Request) -> Response:
    state, path = request.state, request.path_params
    body = await read_json(request, state.max_body, empty={})
    if not isinstance(body, dict):
        raise InvalidRequest('the run body must be a JSON object such as {"parameters": {...}}')
    outcome = await state.workspaces.run(path["workspace"], path["function"], body.get("parameters"))
    return outcome_response(outcome)


async def save_workspace(request: Request) -> Response:
    state = request.state
    workspace_id = check_workspace_id(request.path_params["workspace"])  # before reading any body
    workspace = workspace_from_body(workspace_id, await read_json(request, state.max_body), state.body)
    saved = await state.workspaces.save(workspace)
    return JsonResponse(body_from_workspace(saved, state.body))


async def get_workspace(request: Request) -> Response:
    workspace = await request.state.workspaces.get(request.path_params["workspace"])
    return JsonResponse(body_from_workspace(workspace, request.state.body))


async def delete_workspace(request: Request) -> Response:
    await request.state.workspaces.delete(request.path_params["workspace"])
    return Response(status_code=204)


WORKSPACE_METHODS = {
    "GET": get_workspace,
    "HEAD": get_workspace,
    "POST": save_workspace,
    "DELETE": delete_workspace,
}


async def workspace(request: Request) -> Response:
    # One route for the three methods, so a 405 lists them all in its Allow header.
    return await WORKSPACE_METHODS[request.method](request)


async def list_workspaces(request: Request) -> Response:
    return JsonResponse({"workspaces": await request.state.workspaces.list()})


async def healthcheck(request: Request) -> Response:
    runtimes = {lang.value: dict(rt.health()) for lang, rt in request.state.workspaces.runtimes.items()}
    healthy = all(health.get("status") == "ok" for health in runtimes.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "runtimes": runtimes})


async def openapi(request: Request) -> Response:
    return Response(openapi_json(), media_type="application/json")


async def docs(request: Request) -> Response:
    # The page is self-contained; the policy makes sure it stays so (no script or style from elsewhere).
    policy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
    return Response(docs_page(), media_type="text/html", headers={"content-security-policy": policy})


ROUTES = [
    Route("/v2/functions", list_workspaces, methods=["GET"]),
    Route("/v2/functions/{workspace}", workspace, methods=["GET", "POST", "DELETE"]),
    Route("/v2/functions/{workspace}/run/{function}", run_function, methods=["POST"]),
    Route("/sys/healthcheck", healthcheck, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]


def create_app(container: Container | None = None) -> Starlette:
    """The ASGI app; its lifespan starts and stops the runtimes through `running()`."""
    services = container or build_container()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with running(services) as workspaces:  # the same code path embedders use
            max_body = services.settings().request_max_size
            yield {"workspaces": workspaces, "body": services.body(), "max_body": max_body}

    handlers = {DomainError: on_domain_error, HTTPException: on_http_error, Exception: on_unexpected}
    api_key = services.settings().api_key
    middleware = [Middleware(ApiKeyMiddleware, key=api_key)] if api_key else []
    return Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
