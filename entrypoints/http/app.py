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

from application.async_runs import Conflict, TooManyRequests
from application.history import outcome_error, outcome_logs
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
from entrypoints.container import Container, build_container
from entrypoints.embed import open_service
from entrypoints.http.bodies import JsonResponse, PayloadTooLarge, read_json
from entrypoints.http.docs import docs_page, openapi_json
from entrypoints.http.history_routes import HISTORY_ROUTES, is_async, queue_run
from entrypoints.http.logs import AccessLog, log_user_output
from entrypoints.http.metrics import CONTENT_TYPE as METRICS_TYPE
from entrypoints.http.middleware import AccessMiddleware, ApiKeyMiddleware
from entrypoints.http.playground import ROUTES as PLAYGROUND_ROUTES

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
    Conflict: (409, "Conflict"),
    PayloadTooLarge: (413, "PayloadTooLarge"),
    TooManyRequests: (429, "TooManyRequests"),
    Unavailable: (503, "Unavailable"),
}
# A failed outcome's status code; its error (type, message) is application/history.py's outcome_error,
# which the run history records too.
OUTCOMES: dict[Status, int] = {
    Status.FAILED: 422,
    Status.RESOURCE_LIMIT: 422,
    Status.NOT_SERIALIZABLE: 422,
    Status.TIMED_OUT: 504,
}
HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed"}


def error_body(kind: str, message: str, details: Any = ()) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **dict(details)}}


def error_answer(exc: DomainError) -> tuple[int, dict[str, Any]]:
    """The status and body of a DomainError (the CLI's local commands answer the same)."""
    status, kind = next((ERRORS[c] for c in type(exc).__mro__ if c in ERRORS), (500, "InternalError"))
    return status, error_body(kind, exc.message, exc.details)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, body = error_answer(exc)
    request.state.outcome = body["error"]["type"]  # for the access log
    retry_after = exc.details.get("retryAfter") if isinstance(exc, TooManyRequests) else None
    return JsonResponse(body, status, {"retry-after": str(retry_after)} if retry_after else None)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in the service's error shape."""
    assert isinstance(exc, HTTPException)
    kind = request.state.outcome = HTTP_KINDS.get(exc.status_code, "HTTPError")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JsonResponse(error_body(kind, message), exc.status_code, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug of ours: logged with an id that the answer carries, so a report can be matched to it."""
    # The access middleware's id; this answer bypasses it (ServerErrorMiddleware sits outside), so the
    # header is set here.
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    request.state.outcome = "InternalError"
    log.error("unhandled error (request %s)", request_id, exc_info=exc, extra={"request_id": request_id})
    body = error_body("InternalError", "an unexpected error on our side", {"requestId": request_id})
    return JsonResponse(body, 500, {"x-request-id": request_id})


def server_timing(outcome: Outcome) -> str:
    timings = [f"{name};dur={ms:.2f}" for name, ms in outcome.timings.items()]
    if "run" not in outcome.timings:
        timings.append(f"run;dur={outcome.duration_ms:.2f}")
    return ", ".join(timings)


def outcome_answer(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """The status and body of a run's outcome (the CLI's local `run` answers the same)."""
    logs = outcome_logs(outcome)
    error = outcome_error(outcome)
    if error is None:
        return 200, {"result": outcome.result, "logs": logs, "duration": outcome.duration_ms}
    return OUTCOMES[outcome.status], {"error": error, "logs": logs, "duration": outcome.duration_ms}


def not_serializable(outcome: Outcome) -> Outcome:
    """What a result that JSON cannot hold (NaN, Infinity, a non-JSON object from a runtime) becomes."""
    return Outcome(Status.NOT_SERIALIZABLE, logs=outcome.logs, duration_ms=outcome.duration_ms)


def outcome_response(outcome: Outcome) -> Response:
    worker = "cold" if outcome.cold else "warm"
    headers = {"server-timing": server_timing(outcome), "x-functions-worker": worker}
    status, body = outcome_answer(outcome)
    try:
        return JsonResponse(body, status, headers)
    except (ValueError, TypeError):
        return JsonResponse(outcome_answer(not_serializable(outcome))[1], 422, headers)


async def run_function(request: Request) -> Response:
    state, path = request.state, request.path_params
    body = await read_json(request, state.max_body, empty={})
    if not isinstance(body, dict):
        raise InvalidRequest('the run body must be a JSON object such as {"parameters": {...}}')
    workspace_id, function = path["workspace"], path["function"]
    if is_async(request):
        return await queue_run(request, workspace_id, function, body.get("parameters"))
    outcome = await state.service.run(workspace_id, function, body.get("parameters"))
    state.outcome = outcome.status.value  # for the access log
    if outcome.logs:
        log_user_output(outcome.logs, workspace_id, function, state.request_id)
    return outcome_response(outcome)


async def save_workspace(request: Request) -> Response:
    state = request.state
    workspace_id = check_workspace_id(request.path_params["workspace"])  # before reading any body
    saved = await state.service.save(workspace_id, await read_json(request, state.max_body))
    return JsonResponse(saved)


async def get_workspace(request: Request) -> Response:
    return JsonResponse(await request.state.service.get(request.path_params["workspace"]))


async def delete_workspace(request: Request) -> Response:
    await request.state.service.delete(request.path_params["workspace"])
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
    return JsonResponse({"workspaces": await request.state.service.list()})


async def healthcheck(request: Request) -> Response:
    """200 with the report (SPEC). With `?ready`, 503 while the service takes no runs (starting,
    stopping): what a load balancer's or Kubernetes' readiness probe needs."""
    service = request.state.service
    status = 503 if "ready" in request.query_params and not service.ready else 200
    return JsonResponse(service.health(), status)


async def metrics(request: Request) -> Response:
    return Response(request.state.metrics.render(), headers={"content-type": METRICS_TYPE})


async def openapi(request: Request) -> Response:
    return Response(openapi_json(), media_type="application/json")


async def docs(request: Request) -> Response:
    # The page is self-contained; the policy makes sure it stays so (no script or style from elsewhere).
    policy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
    return Response(docs_page(), media_type="text/html", headers={"content-security-policy": policy})


# The run route first: the router tries routes in order, and no other route matches its paths.
ROUTES = [
    Route("/v2/functions/{workspace}/run/{function}", run_function, methods=["POST"]),
    Route("/v2/functions", list_workspaces, methods=["GET"]),
    Route("/v2/functions/{workspace}", workspace, methods=["GET", "POST", "DELETE"]),
    *HISTORY_ROUTES,  # versions, restore, runs (entrypoints/http/history_routes.py)
    Route("/sys/healthcheck", healthcheck, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    *PLAYGROUND_ROUTES,  # /playground and its assets (entrypoints/http/playground.py)
]


def create_app(container: Container | None = None) -> Starlette:
    """The ASGI app; its lifespan starts and stops the runtimes through `running()`."""
    services = container or build_container()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_service(container=services) as service:  # the same object embedders use
            app.state.service = service  # for `functions serve` to stop it gracefully on SIGTERM
            max_body = services.settings().request_max_size
            yield {
                "service": service,
                "workspaces": service.workspaces,
                "metrics": services.metrics(),
                "max_body": max_body,
            }

    handlers = {DomainError: on_domain_error, HTTPException: on_http_error, Exception: on_unexpected}
    api_key = services.settings().api_key
    middleware = [Middleware(AccessMiddleware, metrics=services.metrics(), access_log=AccessLog())]
    if api_key:
        middleware.append(Middleware(ApiKeyMiddleware, key=api_key))  # inside: a 401 is logged too
    return Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
