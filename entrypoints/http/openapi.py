"""The OpenAPI 3.1 description of the HTTP API, written by hand so it says what the service promises."""

from typing import Any

from domain.model import FUNCTION_NAME, WORKSPACE_ID, Language, ParamType
from entrypoints.http import openapi_history
from entrypoints.http.playground import ASSETS as PLAYGROUND_ASSETS

Doc = dict[str, Any]


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Doc, example: Any = None) -> Doc:
    media: Doc = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def answer(description: str, schema: str, headers: Doc | None = None) -> Doc:
    response: Doc = {"description": description, "content": json_content(ref(schema))}
    if headers:
        response["headers"] = headers
    return response


def error(name: str) -> Doc:
    return {"$ref": f"#/components/responses/{name}"}


EXAMPLE_BODY = {
    "functions": {
        "hello": {
            "code": 'return "Hello " + name;',
            "language": "nodejs",
            "parameters": {"name": {"type": "string", "default": "world"}},
        }
    },
    "dependencies": {"lodash": "^4.17.21"},
    "disableNpmRegistry": False,
}

# A null stands for a field left out (the original service's clients send some), so it is declared.
SCHEMAS: Doc = {
    "Parameter": {
        "type": "object",
        "description": "A declared run parameter, JSON-Schema-like. Unknown keys are kept.",
        "properties": {
            "type": {"enum": [*(t.value for t in ParamType), None]},
            "description": {"type": ["string", "null"]},
            "default": {"description": "used when the run does not give this parameter"},
        },
        "additionalProperties": True,
    },
    "Function": {
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {"type": "string", "description": "the body of an (async) function"},
            "language": {"enum": [*(lang.value for lang in Language), None], "default": "nodejs"},
            "parameters": {"type": ["object", "null"], "additionalProperties": ref("Parameter")},
        },
        "additionalProperties": True,
    },
    "Workspace": {
        "type": "object",
        "description": "A save body; it is answered and read back exactly as sent, unknown keys included.",
        "required": ["functions"],
        "properties": {
            "functions": {
                "type": "object",
                "description": "function name -> function",
                "propertyNames": {"pattern": f"^{FUNCTION_NAME.pattern}$"},
                "additionalProperties": ref("Function"),
            },
            "dependencies": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "disableNpmRegistry": {"type": ["boolean", "null"], "default": False},
        },
        "additionalProperties": True,
    },
    "WorkspaceList": {
        "type": "object",
        "required": ["workspaces"],
        "properties": {"workspaces": {"type": "array", "items": {"type": "string"}}},
    },
    "RunRequest": {
        "type": "object",
        "properties": {"parameters": {"type": ["object", "null"], "default": {}}},
    },
    "LogEntry": {
        "type": "object",
        "required": ["level", "message", "timestamp"],
        "properties": {
            "level": {"enum": ["log", "info", "warn", "error", "debug"]},
            "message": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    },
    "RunResult": {
        "type": "object",
        "required": ["result", "logs", "duration"],
        "properties": {
            "result": {"description": "the function's return value as JSON"},
            "logs": {"type": "array", "items": ref("LogEntry"), "maxItems": 1001},
            "duration": {"type": "number", "description": "milliseconds the function ran"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "description": "the error kind, e.g. InvalidRequest"},
                    "message": {"type": "string"},
                    "requestId": {"type": "string", "description": "InternalError only: quote it in reports"},
                },
                "additionalProperties": True,
            }
        },
    },
    "RunError": {
        "description": "A run that started and failed: the error, and what the function logged.",
        "allOf": [
            ref("Error"),
            {
                "type": "object",
                "required": ["logs", "duration"],
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "stack": {"type": "string"}},
                    },
                    "logs": {"type": "array", "items": ref("LogEntry")},
                    "duration": {"type": "number"},
                },
            },
        ],
    },
    "Health": {
        "type": "object",
        "required": ["status", "ready", "state", "runtimes"],
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "ready": {"type": "boolean", "description": "whether runs are taken (else they answer 503)"},
            "state": {"enum": ["starting", "ready", "stopping", "stopped"]},
            "runtimes": {
                "type": "object",
                "description": "language -> that runtime's state",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"status": {"enum": ["ok", "starting", "unavailable"]}},
                },
            },
        },
    },
}

ERROR_RESPONSES: Doc = {
    "InvalidRequest": "400 InvalidRequest: malformed JSON, a wrong shape, a bad name or an unknown language.",
    "SaveRejected": "400 InvalidRequest, CompileError (names function, line, column) or DependencyError "
    "(names the package). The previous version stays in place.",
    "RunRejected": "400 InvalidRequest, or InvalidParameters naming the parameter of the wrong type.",
    "Unauthorized": "401 Unauthorized: FUNCTIONS_API_KEY is set and the bearer key is missing or wrong.",
    "NotFound": "404 NotFound: unknown workspace, function or route.",
    "MethodNotAllowed": "405 MethodNotAllowed: the route exists, not with this method.",
    "PayloadTooLarge": "413 PayloadTooLarge: the body is over REQUEST_MAX_SIZE.",
    "Unavailable": "503 Unavailable: a runtime or the storage cannot serve right now.",
    "InternalError": "500 InternalError: a bug on our side; the body carries a requestId.",
}
RUN_HEADERS: Doc = {
    "Server-Timing": {
        "description": "queue, cold-start and run times (ms): `queue;dur=0.12, cold;dur=15.3, run;dur=0.84`",
        "schema": {"type": "string"},
    },
    "X-Functions-Worker": {
        "description": "whether a warm worker ran it",
        "schema": {"enum": ["warm", "cold"]},
    },
}
RUN_FAILURES: Doc = {
    "422": "FunctionError (the code threw: message, name, stack), ResourceLimitError (memory or output "
    "limit) or ResultNotSerializable (the result cannot become JSON).",
    "504": "TimeoutError: the run went over its timeout.",
}


def path_param(name: str, pattern: str, description: str) -> Doc:
    schema = {"type": "string", "pattern": f"^{pattern}$", "maxLength": 128}
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


WORKSPACE = path_param("workspace", WORKSPACE_ID.pattern, "1-128 of A-Z a-z 0-9 _ - ., starting alphanumeric")
FUNCTION = path_param(
    "function", FUNCTION_NAME.pattern, "1-128 of A-Z a-z 0-9 _ - . $, starting with a letter, _ or $"
)
API_ERRORS = {"401": error("Unauthorized"), "500": error("InternalError"), "503": error("Unavailable")}


def operation(summary: str, responses: Doc, *, params: tuple[Doc, ...] = (), body: Doc | None = None) -> Doc:
    op: Doc = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = body
        op["responses"] = {**responses, "413": error("PayloadTooLarge")}
    return op


def workspace_ops() -> Doc:
    body = {"required": True, "content": json_content(ref("Workspace"), EXAMPLE_BODY)}
    found = {"404": error("NotFound"), **API_ERRORS}
    return {
        "post": operation(
            "Create or replace a workspace (all or nothing)",
            {
                "200": answer("the saved body, exactly as sent", "Workspace"),
                "400": error("SaveRejected"),
                **API_ERRORS,
            },
            params=(WORKSPACE,),
            body=body,
        ),
        "get": operation(
            "Read a workspace back",
            {"200": answer("the saved body", "Workspace"), "400": error("InvalidRequest"), **found},
            params=(WORKSPACE,),
        ),
        "delete": operation(
            "Delete a workspace and stop its workers",
            {"204": {"description": "deleted"}, "400": error("InvalidRequest"), **found},
            params=(WORKSPACE,),
        ),
    }


def run_op() -> Doc:
    body = {"required": False, "content": json_content(ref("RunRequest"), {"parameters": {"name": "world"}})}
    failures = {
        status: {"description": text, "headers": RUN_HEADERS, "content": json_content(ref("RunError"))}
        for status, text in RUN_FAILURES.items()
    }
    responses = {
        "200": answer("the function's result and logs", "RunResult", RUN_HEADERS),
        "400": error("RunRejected"),
        "404": error("NotFound"),
        **failures,
        **API_ERRORS,
    }
    return {"post": operation("Run one function", responses, params=(WORKSPACE, FUNCTION), body=body)}


def plain_get(summary: str, responses: Doc) -> Doc:
    return {"get": operation(summary, {**responses, "500": error("InternalError")})}


def playground_asset() -> Doc:
    names = sorted(name for name in PLAYGROUND_ASSETS if name != "index.html")
    asset = {"name": "asset", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    responses = {
        "200": {"description": "JavaScript or CSS"},
        "404": error("NotFound"),
        "500": error("InternalError"),
    }
    return {"get": operation("The playground's script and style files", responses, params=(asset,))}


def paths() -> Doc:
    return {
        "/v2/functions": {
            "get": operation("List workspace ids", {"200": answer("ids", "WorkspaceList"), **API_ERRORS})
        },
        "/v2/functions/{workspace}": workspace_ops(),
        "/v2/functions/{workspace}/run/{function}": openapi_history.with_async(run_op()),
        **openapi_history.paths(WORKSPACE, API_ERRORS),
        "/sys/healthcheck": plain_get("Liveness and each runtime's state", {"200": answer("ok", "Health")}),
        "/metrics": plain_get(
            "Prometheus metrics (text format 0.0.4), open like the healthcheck",
            {"200": {"description": "text/plain; version=0.0.4"}},
        ),
        "/openapi.json": plain_get("This document", {"200": {"description": "OpenAPI 3.1 JSON"}}),
        "/docs": plain_get("A page to read this document", {"200": {"description": "HTML"}}),
        "/playground": plain_get("A page to edit, save and run workspaces", {"200": {"description": "HTML"}}),
        "/playground/{asset}": playground_asset(),
    }


def document() -> Doc:
    """The whole OpenAPI document."""
    responses = {
        name: {"description": text, "content": json_content(ref("Error"))}
        for name, text in {**ERROR_RESPONSES, **openapi_history.ERROR_RESPONSES}.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Functions service",
            "version": "2",
            "description": "Stores workspaces of small JavaScript and Python functions, and runs them. "
            'Every error is JSON: {"error": {"type", "message", ...}}.',
        },
        "paths": paths(),
        "components": {"schemas": {**SCHEMAS, **openapi_history.SCHEMAS}, "responses": responses},
    }
