"""The OpenAPI description of versions, run history and async runs (merged in by openapi.py)."""

from typing import Any

from application.history import STATUSES
from application.service_history import MAX_LIMIT, RUN_ID

Doc = dict[str, Any]


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def error(name: str) -> Doc:
    return {"$ref": f"#/components/responses/{name}"}


def json_answer(description: str, schema: Doc, headers: Doc | None = None) -> Doc:
    response: Doc = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


NULLABLE_STRING = {"type": ["string", "null"]}
SCHEMAS: Doc = {
    "Version": {
        "type": "object",
        "required": ["version", "savedAt", "functions", "current"],
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "savedAt": {"type": "string", "format": "date-time"},
            "functions": {"type": "array", "items": {"type": "string"}},
            "current": {"type": "boolean", "description": "the newest: what runs now"},
        },
    },
    "VersionList": {
        "type": "object",
        "required": ["versions"],
        "properties": {"versions": {"type": "array", "items": ref("Version")}},
    },
    "Run": {
        "type": "object",
        "description": "A recorded run: a sync run's answer (result or error, logs, duration) and more.",
        "required": ["id", "function", "status", "queuedAt", "async", "logs", "notes"],
        "properties": {
            "id": {"type": "string", "pattern": f"^{RUN_ID.pattern}$"},
            "function": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "version": {"type": ["integer", "null"]},
            "async": {"type": "boolean"},
            "queuedAt": {"type": "string"},
            "startedAt": NULLABLE_STRING,
            "duration": {"type": ["number", "null"], "description": "milliseconds"},
            "parameters": {"description": "null when not kept (FUNCTIONS_RUN_HISTORY_PARAMETERS=no, caps)"},
            "result": {"description": "a succeeded run's result; null when not kept"},
            "error": {"type": ["object", "null"], "description": 'as an error answer: {"type", "message"}'},
            "logs": {"type": "array", "items": ref("LogEntry")},
            "cold": {"type": ["boolean", "null"]},
            "notes": {"type": "array", "items": {"type": "string"}, "description": "what the caps cut"},
        },
    },
    "RunList": {
        "type": "object",
        "required": ["runs"],
        "properties": {"runs": {"type": "array", "items": ref("Run")}},
    },
    "QueuedRun": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"const": "queued"}},
    },
}
ERROR_RESPONSES = {
    "Conflict": "409 Conflict: the run has finished already (or is not held by this instance).",
    "TooManyRequests": "429 TooManyRequests: the workspace runs FUNCTIONS_MAX_CONCURRENT_RUNS already; "
    "retry after `Retry-After` seconds (async runs queue instead).",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
ASYNC_PARAM: Doc = {
    "name": "async",
    "in": "query",
    "required": False,
    "description": "true: queue the run and answer 202 at once; read it at `Location`",
    "schema": {"enum": ["true", "false", "1", "0", "yes", "no"]},
}
QUEUED: Doc = json_answer(
    "queued (async=true)",
    ref("QueuedRun"),
    {"Location": {"description": "/v2/functions/{workspace}/runs/{id}", "schema": {"type": "string"}}},
)


def with_async(run_op: Doc) -> Doc:
    """The run operation, with `?async=true` and its 202, and the concurrency limit's 429."""
    post = run_op["post"]
    post["parameters"] = [*post["parameters"], ASYNC_PARAM]
    post["responses"] = {
        **post["responses"],
        "202": QUEUED,
        "429": {**error("TooManyRequests")},
    }
    return run_op


def op(summary: str, responses: Doc, params: list[Doc], api_errors: Doc) -> Doc:
    return {"summary": summary, "parameters": params, "responses": {**responses, **api_errors}}


def paths(workspace: Doc, api_errors: Doc) -> Doc:
    number = {"name": "number", "in": "path", "required": True, "schema": {"type": "string"}}
    run_id = {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}
    filters = [
        {"name": "function", "in": "query", "schema": {"type": "string"}},
        {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
        {"name": "before", "in": "query", "schema": {"type": "string"}, "description": "a run id"},
    ]
    bad, missing = {"400": error("InvalidRequest")}, {"404": error("NotFound")}
    one_run = {"200": json_answer("the run", ref("Run")), **bad, **missing}
    return {
        "/v2/functions/{workspace}/versions": {
            "get": op(
                "The saved versions, newest first",
                {"200": json_answer("versions", ref("VersionList")), **bad, **missing},
                [workspace],
                api_errors,
            )
        },
        "/v2/functions/{workspace}/versions/{number}": {
            "get": op(
                "A saved version's body, exactly as sent",
                {"200": json_answer("the body", ref("Workspace")), **bad, **missing},
                [workspace, number],
                api_errors,
            )
        },
        "/v2/functions/{workspace}/versions/{number}/restore": {
            "post": op(
                "Save a version again, as the newest (packages installed as in a save)",
                {
                    "200": json_answer("the body as saved", ref("Workspace")),
                    **missing,
                    "400": error("SaveRejected"),
                },
                [workspace, number],
                api_errors,
            )
        },
        "/v2/functions/{workspace}/runs": {
            "get": op(
                "The recorded runs, newest first",
                {"200": json_answer("runs", ref("RunList")), **bad, **missing},
                [workspace, *filters],
                api_errors,
            )
        },
        "/v2/functions/{workspace}/runs/{run}": {
            "get": op(
                "A recorded run: queued, running, or its outcome", one_run, [workspace, run_id], api_errors
            ),
            "delete": op(
                "Cancel a run that has not finished",
                {**one_run, "409": error("Conflict")},
                [workspace, run_id],
                api_errors,
            ),
        },
    }
