"""Integers longer than Python converts (sys.get_int_max_str_digits(), 4300 digits) in a request body:
a 400 InvalidRequest naming where the number is and the limit, not a 500. Through the real app, with a
scripted JavaScript runtime and real Python kernels."""

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers
from starlette.testclient import TestClient

from adapters.storage.memory import InMemoryStore
from domain.model import Language
from entrypoints.container import build_container
from entrypoints.http.app import create_app
from tests.fakes import PROGRAMS, ScriptedRuntime
from tests.python.kernels import python_runtime

pytestmark = pytest.mark.kernel
LIMIT = sys.get_int_max_str_digits()
NUMBER = "{" + '"x": ' + "9" * 5000 + "}"


@pytest.fixture
def scripted() -> ScriptedRuntime:
    return ScriptedRuntime(programs=PROGRAMS)


@pytest.fixture
def client(scripted: ScriptedRuntime) -> Iterator[TestClient]:
    container = build_container({"PYTHON_FUNCTIONS_RUN_TIMEOUT": "5000"})
    container.store.override(providers.Object(InMemoryStore()))
    runtimes = {
        Language.NODEJS: providers.Object(scripted),
        Language.PYTHON: providers.Object(python_runtime(timeout_ms=5000)),
    }
    container.runtimes.override(providers.Dict(runtimes))
    with TestClient(create_app(container)) as client:
        functions = {
            "echo": {"code": "echo", "parameters": {"x": {"type": "number"}}},
            "digits": {
                "language": "python",
                "code": "return len(str(x))",
                "parameters": {"x": {"type": "number"}},
            },
        }
        assert client.post("/v2/functions/big", json={"functions": functions}).status_code == 200
        yield client


def invalid(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "InvalidRequest", error
    return error


def raw_post(client: TestClient, path: str, body: str) -> Any:
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("function", ["echo", "digits"])
def test_a_parameter_with_5000_digits_is_an_invalid_request_naming_it_and_the_limit(
    client: TestClient, scripted: ScriptedRuntime, function: str
) -> None:
    error = invalid(raw_post(client, f"/v2/functions/big/run/{function}", '{"parameters": ' + NUMBER + "}"))
    assert "$.parameters.x" in error["message"] and f"{LIMIT} digits" in error["message"], error
    assert "5000 digits" in error["message"] and "as a string" in error["message"], error
    assert (error["path"], error["limit"]) == ("$.parameters.x", LIMIT)
    assert scripted.calls == []


def test_a_negative_one_deep_in_a_list_is_found_too(client: TestClient) -> None:
    body = '{"parameters": {"x": 1, "rows": [[0, -' + "1" * (LIMIT + 1) + "]]}}"
    error = invalid(raw_post(client, "/v2/functions/big/run/echo", body))
    assert error["path"] == "$.parameters.rows[0][1]", error


def test_a_number_at_the_limit_still_reaches_both_runtimes(
    client: TestClient, scripted: ScriptedRuntime
) -> None:
    body = '{"parameters": {"x": ' + "9" * LIMIT + "}}"
    python = raw_post(client, "/v2/functions/big/run/digits", body)
    assert python.status_code == 200 and python.json()["result"] == LIMIT, python.text
    assert raw_post(client, "/v2/functions/big/run/echo", body).status_code == 200
    assert len(scripted.calls) == 1


def test_a_default_with_5000_digits_in_a_save_is_an_invalid_request(client: TestClient) -> None:
    body = (
        '{"functions": {"f": {"language": "python", "code": "return x", '
        '"parameters": {"x": {"type": "number", "default": ' + "1" * 5000 + "}}}}}"
    )
    error = invalid(raw_post(client, "/v2/functions/other", body))
    assert error["path"] == "$.functions.f.parameters.x.default", error
    assert client.get("/v2/functions/other").status_code == 404
