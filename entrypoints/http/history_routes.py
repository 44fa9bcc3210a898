"""The routes of versions, run history and async runs: thin, as the Service checks and answers JSON."""

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.errors import InvalidRequest
from domain.model import Json, check_workspace_id
from entrypoints.http.bodies import JsonResponse

ASYNC_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
RUN_FILTERS = ("function", "status", "limit", "before")


def is_async(request: Request) -> bool:
    """`?async=true` on a run; InvalidRequest naming the field for a value that is not a boolean."""
    raw = request.query_params.get("async")
    if raw is None:
        return False
    if raw.lower() not in ASYNC_VALUES:
        raise InvalidRequest(f"invalid async {raw!r}: true or false", field="async")
    return ASYNC_VALUES[raw.lower()]


async def queue_run(request: Request, workspace_id: str, function: str, parameters: Json) -> Response:
    """202 with the queued run; `Location` is where its status, then its outcome, can be read."""
    run = await request.state.service.run_async(workspace_id, function, parameters)
    request.state.outcome = "queued"  # for the access log
    location = f"/v2/functions/{quote(workspace_id, safe='')}/runs/{run['id']}"
    return JsonResponse({"id": run["id"], "status": run["status"]}, 202, {"location": location})


async def list_versions(request: Request) -> Response:
    versions = await request.state.service.list_versions(request.path_params["workspace"])
    return JsonResponse({"versions": versions})


async def get_version(request: Request) -> Response:
    path = request.path_params
    return JsonResponse(await request.state.service.version_body(path["workspace"], path["number"]))


async def restore_version(request: Request) -> Response:
    path = request.path_params
    workspace_id = check_workspace_id(path["workspace"])
    number, saved = await request.state.service.restore(workspace_id, path["number"])
    headers = {"x-functions-version": str(number)} if number is not None else None
    return JsonResponse(saved, 200, headers)


async def list_runs(request: Request) -> Response:
    query = request.query_params
    unknown = sorted(set(query) - set(RUN_FILTERS))
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter {unknown[0]!r}: the filters are {', '.join(RUN_FILTERS)}",
            field=unknown[0],
        )
    runs = await request.state.service.list_runs(
        request.path_params["workspace"],
        function=query.get("function"),
        status=query.get("status"),
        limit=query.get("limit", "50"),
        before=query.get("before"),
    )
    return JsonResponse({"runs": runs})


async def get_run(request: Request) -> Response:
    path = request.path_params
    return JsonResponse(await request.state.service.get_run(path["workspace"], path["run"]))


async def cancel_run(request: Request) -> Response:
    path = request.path_params
    return JsonResponse(await request.state.service.cancel_run(path["workspace"], path["run"]))


async def run(request: Request) -> Response:
    # One route for both methods, so a 405 lists them in its Allow header.
    return await (get_run if request.method in ("GET", "HEAD") else cancel_run)(request)


HISTORY_ROUTES = [
    Route("/v2/functions/{workspace}/versions", list_versions, methods=["GET"]),
    Route("/v2/functions/{workspace}/versions/{number}", get_version, methods=["GET"]),
    Route("/v2/functions/{workspace}/versions/{number}/restore", restore_version, methods=["POST"]),
    Route("/v2/functions/{workspace}/runs", list_runs, methods=["GET"]),
    Route("/v2/functions/{workspace}/runs/{run}", run, methods=["GET", "DELETE"]),
]
