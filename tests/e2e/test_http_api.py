"""The HTTP API end to end, through the real app and container with the store and runtimes overridden."""

import json
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from dependency_injector import providers
from starlette.routing import Route
from starlette.testclient import TestClient

from adapters.storage.memory import InMemoryStore
from domain.model import Json, Language, Workspace
from entrypoints.container import Container, build_container
from entrypoints.http.app import create_app
from tests.e2e.readme_calls import README_RUN, README_SAVE, body_of, data_of
from tests.fakes import PROGRAMS, ScriptedRuntime

HELLO = 'return "Hello " + name;'  # the original README's function, played by a Python coroutine


async def hello(params: Mapping[str, Json]) -> Json:
    return "Hello " + params["name"]


async def not_json(params: Mapping[str, Json]) -> Json:
    return float("nan")


def container_for(runtime: ScriptedRuntime, store: Any = None, **environ: str) -> Container:
    container = build_container({"REQUEST_MAX_SIZE": "1kb", **environ})
    container.store.override(providers.Object(store or InMemoryStore()))
    container.runtimes.override(providers.Dict({Language.NODEJS: providers.Object(runtime)}))
    return container


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime(programs={**PROGRAMS, HELLO: hello, "nan": not_json}, timeout_s=0.2)


@pytest.fixture
def client(runtime: ScriptedRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(container_for(runtime))) as client:
        yield client


def save(client: TestClient, workspace: str = "demo", **functions: str) -> None:
    body = {"functions": {name: {"code": code} for name, code in functions.items()}}
    assert client.post(f"/v2/functions/{workspace}", json=body).status_code == 200


def error_of(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind and error["message"]
    return error


JSON_HEADER = {"Content-Type": "application/json"}


def test_the_original_readme_curl_calls_work_as_written(client: TestClient) -> None:
    saved = client.post("/v2/functions/test", content=body_of(README_SAVE), headers=JSON_HEADER)
    assert saved.status_code == 200 and saved.json() == data_of(README_SAVE)
    ran = client.post("/v2/functions/test/run/hello", content=body_of(README_RUN), headers=JSON_HEADER)
    assert ran.status_code == 200
    assert ran.json() == {"result": "Hello world", "logs": [], "duration": ran.json()["duration"]}
    assert isinstance(ran.json()["duration"], int | float)


def test_a_save_answers_the_body_exactly_as_sent(client: TestClient) -> None:
    body = {
        "functions": {
            "f": {"code": "echo", "parameters": {"p": {"type": "integer", "x-ui": {"w": 2}}}, "tag": 1}
        },
        "dependencies": {},
        "owner": {"team": "data"},
    }
    assert client.post("/v2/functions/demo", json=body).json() == body  # nothing added, unknown keys kept
    assert client.get("/v2/functions/demo").json() == body


def test_a_saved_workspace_is_listed_and_a_deleted_one_is_gone(client: TestClient) -> None:
    save(client, "b", f="echo")
    save(client, "a", f="echo")
    assert client.get("/v2/functions").json() == {"workspaces": ["a", "b"]}
    deleted = client.delete("/v2/functions/a")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get("/v2/functions").json() == {"workspaces": ["b"]}
    error_of(client.get("/v2/functions/a"), 404, "NotFound")


def test_a_run_answers_the_result_with_timing_headers(client: TestClient) -> None:
    save(client, f="echo")
    ran = client.post("/v2/functions/demo/run/f", json={"parameters": {"x": [1, "two"]}})
    assert ran.json()["result"] == {"x": [1, "two"]}
    assert re.fullmatch(r"run;dur=\d+\.\d\d", ran.headers["server-timing"])
    assert ran.headers["x-functions-worker"] == "warm"


@pytest.mark.parametrize("body", [b"", b"  ", b"{}", b'{"parameters": null}'])
def test_a_run_without_parameters_gets_an_empty_object(client: TestClient, body: bytes) -> None:
    save(client, f="echo")
    assert client.post("/v2/functions/demo/run/f", content=body).json()["result"] == {}


@pytest.mark.parametrize(
    ("body", "where"),
    [(b'{"functions": {', "line 1, column 16"), (b'{\n "functions": {}\n,}', "line 3"), (b"[NaN]", "NaN")],
)
def test_malformed_json_is_an_invalid_request_saying_where(
    client: TestClient, body: bytes, where: str
) -> None:
    error = error_of(client.post("/v2/functions/demo", content=body), 400, "InvalidRequest")
    assert where in error["message"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "empty"),
        ("[]", "JSON object"),
        ("{}", "'functions' is required"),
        ('{"functions": []}', "functions"),
        ('{"functions": {"f": {"code": 1}}}', "code"),
        ('{"functions": {"f": {}}}', "code"),
        ('{"functions": {"f": {"code": "x", "language": "ruby"}}}', "must be one of nodejs, python"),
        ('{"functions": {"1f": {"code": "x"}}}', "invalid function name"),
        ('{"functions": {}, "disableNpmRegistry": "yes"}', "disableNpmRegistry"),
        ('{"functions": {"f": {"code": "x", "parameters": {"p": {"type": "date"}}}}}', "must be one of"),
    ],
)
def test_a_save_of_the_wrong_shape_is_an_invalid_request(client: TestClient, body: str, says: str) -> None:
    assert says in error_of(client.post("/v2/functions/demo", content=body), 400, "InvalidRequest")["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/functions/bad%20name"),
        ("GET", "/v2/functions/.hidden"),
        ("DELETE", "/v2/functions/" + "x" * 129),
        ("POST", "/v2/functions/-x/run/f"),
        ("POST", "/v2/functions/demo/run/1f"),
        ("POST", "/v2/functions/demo/run/f%20g"),
    ],
)
def test_a_bad_name_in_the_path_is_an_invalid_request(client: TestClient, method: str, path: str) -> None:
    error_of(client.request(method, path, json={"functions": {}}), 400, "InvalidRequest")


@pytest.mark.parametrize("body", [b"[1]", b'"x"', b'{"parameters": [1]}', b'{"parameters": 5}'])
def test_a_run_body_of_the_wrong_shape_is_an_invalid_request(client: TestClient, body: bytes) -> None:
    save(client, f="echo")
    error_of(client.post("/v2/functions/demo/run/f", content=body), 400, "InvalidRequest")


def test_a_parameter_of_the_wrong_type_is_invalid_parameters_naming_it(client: TestClient) -> None:
    client.post("/v2/functions/test", content=body_of(README_SAVE))
    error = error_of(
        client.post("/v2/functions/test/run/hello", json={"parameters": {"name": 3}}),
        400,
        "InvalidParameters",
    )
    assert error["parameter"] == "name" and error["expected"] == "string"


def test_a_compile_error_is_refused_naming_the_function_and_the_old_version_stays(client: TestClient) -> None:
    save(client, f="echo")
    refused = client.post(
        "/v2/functions/demo", json={"functions": {"f": {"code": "echo"}, "g": {"code": "1 +"}}}
    )
    error = error_of(refused, 400, "CompileError")
    assert (error["function"], error["line"], error["column"]) == ("g", 1, 1)
    assert list(client.get("/v2/functions/demo").json()["functions"]) == ["f"]


def test_unknown_workspaces_functions_and_routes_are_404(client: TestClient) -> None:
    save(client, f="echo")
    error_of(client.get("/v2/functions/nope"), 404, "NotFound")
    error_of(client.delete("/v2/functions/nope"), 404, "NotFound")
    error_of(client.post("/v2/functions/nope/run/f"), 404, "NotFound")
    error_of(client.post("/v2/functions/demo/run/nope"), 404, "NotFound")
    assert "/nope" in error_of(client.get("/nope"), 404, "NotFound")["message"]


def test_a_wrong_method_is_405_with_the_allowed_ones(client: TestClient) -> None:
    answer = client.put("/v2/functions/demo", json={})
    error_of(answer, 405, "MethodNotAllowed")
    assert {"GET", "POST", "DELETE"} <= set(answer.headers["allow"].replace(" ", "").split(","))


def test_a_body_over_the_limit_by_content_length_is_413(client: TestClient) -> None:
    body = {"functions": {"f": {"code": "echo" + " " * 2000}}}
    error = error_of(client.post("/v2/functions/demo", json=body), 413, "PayloadTooLarge")
    assert "REQUEST_MAX_SIZE" in error["message"] and "1kb" in error["message"] and error["limit"] == 1024


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    save(client, f="echo")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the app must count as it reads
        yield b'{"parameters": {"x": "'
        for _ in range(8):
            yield b"y" * 256
        yield b'"}}'

    error_of(client.post("/v2/functions/demo/run/f", content=chunks()), 413, "PayloadTooLarge")


def test_a_body_just_at_the_limit_is_read(client: TestClient) -> None:
    save(client, f="echo")
    padding = 1024 - len(b'{"parameters": {"x": ""}}')
    body = b'{"parameters": {"x": "' + b"y" * padding + b'"}}'
    assert client.post("/v2/functions/demo/run/f", content=body).status_code == 200


def test_a_function_that_throws_is_422_with_its_error_logs_and_headers(client: TestClient) -> None:
    save(client, f="boom")
    answer = client.post("/v2/functions/demo/run/f")
    assert error_of(answer, 422, "FunctionError") == {
        "type": "FunctionError",
        "message": "boom",
        "name": "ValueError",
    }
    assert answer.json()["logs"] == [] and answer.json()["duration"] == 0
    assert answer.headers["server-timing"] and answer.headers["x-functions-worker"] == "warm"


def test_a_run_over_its_timeout_is_504(client: TestClient) -> None:
    save(client, f="spin")
    assert "timed out" in error_of(client.post("/v2/functions/demo/run/f"), 504, "TimeoutError")["message"]


def test_a_result_that_cannot_become_json_is_422(client: TestClient) -> None:
    save(client, f="nan")
    error_of(client.post("/v2/functions/demo/run/f"), 422, "ResultNotSerializable")


def test_a_language_without_a_runtime_is_503(client: TestClient) -> None:
    body = {"functions": {"f": {"code": "echo", "language": "python"}}}
    assert "python" in error_of(client.post("/v2/functions/demo", json=body), 503, "Unavailable")["message"]


class BrokenStore:
    """A store with a bug: every call raises something no layer expects."""

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        raise RuntimeError("bug")

    async def get(self, workspace_id: str) -> Workspace:
        raise RuntimeError("bug")

    async def delete(self, workspace_id: str) -> None:
        raise RuntimeError("bug")

    async def list(self) -> list[str]:
        raise RuntimeError("bug")


def test_a_bug_is_500_with_a_request_id_that_the_log_carries(
    runtime: ScriptedRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(container_for(runtime, BrokenStore()))
    with TestClient(app, raise_server_exceptions=False) as client:
        error = error_of(client.get("/v2/functions"), 500, "InternalError")
    assert "bug" not in error["message"]  # no internals leak
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and error["requestId"] in logged[0].getMessage() and logged[0].exc_info


def test_the_healthcheck_reports_each_runtime(client: TestClient) -> None:
    health = client.get("/sys/healthcheck").json()
    assert health == {
        "status": "ok",
        "ready": True,
        "state": "ready",
        "runtimes": {"nodejs": {"status": "ok"}},
    }


def test_the_healthcheck_is_degraded_when_a_runtime_is_not_ok(runtime: ScriptedRuntime) -> None:
    with TestClient(create_app(container_for(runtime))) as client:
        runtime.closed = True  # the fake then reports "starting"
        assert client.get("/sys/healthcheck").json()["status"] == "degraded"


def test_the_lifespan_starts_and_closes_the_runtimes(runtime: ScriptedRuntime) -> None:
    with TestClient(create_app(container_for(runtime))):
        assert runtime.started and not runtime.closed
    assert runtime.closed


def test_update_scripts_on_startup_regenerates_every_workspace(runtime: ScriptedRuntime) -> None:
    store = InMemoryStore()
    container = container_for(runtime, store, UPDATE_SCRIPTS_ON_STARTUP="yes")
    with TestClient(create_app(container)) as client:
        client.post("/v2/functions/demo", json={"functions": {"f": {"code": "echo"}}})
        store.generated["demo"] = {}  # as an old version of the service would have left it
    with TestClient(create_app(container)):
        assert store.generated["demo"]


def test_openapi_describes_every_route_of_the_app(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    routes = [r for r in client.app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]
    for route in routes:
        described = document["paths"][route.path]
        assert {m.lower() for m in route.methods or ()} - {"head"} <= set(described), route.path


def test_openapi_references_only_what_it_defines(client: TestClient) -> None:
    text = client.get("/openapi.json").text
    document = json.loads(text)
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref


def test_the_docs_page_is_html_that_loads_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "openapi.json" in page.text
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page.text, re.IGNORECASE)
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_with_an_api_key_every_api_route_needs_it(runtime: ScriptedRuntime) -> None:
    with TestClient(create_app(container_for(runtime, FUNCTIONS_API_KEY="s3cret"))) as client:
        for method, path in [
            ("GET", "/v2/functions"),
            ("POST", "/v2/functions/demo/run/f"),
            ("GET", "/v2/functions/x"),
        ]:
            refused = client.request(method, path)
            assert error_of(refused, 401, "Unauthorized")["message"].find("FUNCTIONS_API_KEY") >= 0
            wrong = client.request(method, path, headers={"Authorization": "Bearer s3cre"})
            assert wrong.status_code == 401
        allowed = client.get("/v2/functions", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        assert client.get("/sys/healthcheck").status_code == 200  # probes need no key


@pytest.mark.parametrize("caller", ["127.0.0.1", "::1"])
def test_a_caller_on_loopback_is_not_trusted_for_it(runtime: ScriptedRuntime, caller: str) -> None:
    """Functions could call the API from the machine itself: being on loopback proves nothing."""
    app = create_app(container_for(runtime, FUNCTIONS_API_KEY="s3cret"))
    with TestClient(app, client=(caller, 40000)) as client:
        body = {"functions": {"f": {"code": "return 1"}}}
        for method, path, payload in [
            ("POST", "/v2/functions/victim", body),
            ("DELETE", "/v2/functions/victim", None),
            ("POST", "/v2/functions/victim/run/f", {}),
        ]:
            assert client.request(method, path, json=payload).status_code == 401


def test_without_an_api_key_no_route_asks_for_one(client: TestClient) -> None:
    assert client.get("/v2/functions").status_code == 200


def test_a_save_with_a_lone_surrogate_is_an_invalid_request_saying_where(client: TestClient) -> None:
    body = b'{"functions": {"a": {"code": "return \'\\ud800\';"}}}'
    answer = client.post("/v2/functions/s", content=body, headers={"content-type": "application/json"})
    assert "$.functions.a.code" in error_of(answer, 400, "InvalidRequest")["message"]
    assert client.get("/v2/functions/s").status_code == 404


@pytest.mark.parametrize("number", [b"1e400", b"-1e999"])
def test_a_number_out_of_range_is_an_invalid_request(client: TestClient, number: bytes) -> None:
    save(client, f="echo")
    answer = client.post("/v2/functions/demo/run/f", content=b'{"parameters": {"x": ' + number + b"}}")
    assert "out of range" in error_of(answer, 400, "InvalidRequest")["message"]
    body = b'{"functions": {"g": {"code": "echo", "parameters": {"x": {"default": ' + number + b"}}}}}"
    error_of(client.post("/v2/functions/demo", content=body), 400, "InvalidRequest")
