"""The main service with PYTHON_API_URL pointing at a python-api process: both real processes, over HTTP.

The python-api here serves the scripted fake runtime (a function's code names a program of
tests/fakes.py), so the wire, the errors and the process wiring are tested apart from the kernels.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers
from starlette.testclient import TestClient

from adapters.storage.memory import InMemoryStore
from domain.model import Language
from entrypoints.container import build_container
from entrypoints.http.app import create_app
from tests.e2e.serving import free_port, serving
from tests.fakes import PROGRAMS, ScriptedRuntime
from tests.remote import python_api_process

TIMEOUT_S = 0.5
BODY = {
    "functions": {
        "echo": {
            "code": "echo",
            "language": "python",
            "parameters": {"n": {"type": "integer", "default": 1}},
        },
        "boom": {"code": "boom", "language": "python"},
        "spin": {"code": "spin", "language": "python"},
    }
}


@pytest.fixture
def remote_service(tmp_path: Path) -> Iterator[str]:
    """The main service's URL; its Python runs go to a python-api process serving the fake."""
    with python_api_process(fake_timeout_s=TIMEOUT_S) as python_api:
        with serving(tmp_path, PYTHON_API_URL=python_api, PYTHON_FUNCTIONS_RUN_TIMEOUT="500") as url:
            yield url


def embedded_answers() -> list[tuple[int, Any]]:
    """What the same calls answer with the fake runtime embedded in the service, for comparison."""
    container = build_container({})
    container.store.override(providers.Object(InMemoryStore()))
    fake = ScriptedRuntime(programs=PROGRAMS, language=Language.PYTHON, timeout_s=TIMEOUT_S)
    container.runtimes.override(providers.Dict({Language.PYTHON: providers.Object(fake)}))
    with TestClient(create_app(container)) as client:
        return calls(client)


def calls(client: httpx.Client | TestClient) -> list[tuple[int, Any]]:
    answers = [client.post("/v2/functions/demo", json=BODY)]
    for function, params in (("echo", {"x": "é"}), ("echo", {"n": "two"}), ("boom", {}), ("spin", {})):
        answers.append(client.post(f"/v2/functions/demo/run/{function}", json={"parameters": params}))
    answers.append(client.post("/v2/functions/demo/run/nope", json={}))
    return [(answer.status_code, without_duration(answer.json())) for answer in answers]


def without_duration(body: Any) -> Any:
    return {k: v for k, v in body.items() if k != "duration"} if isinstance(body, dict) else body


def test_runs_through_the_python_api_answer_as_the_embedded_runtime_does(remote_service: str) -> None:
    with httpx.Client(base_url=remote_service) as client:
        remote = calls(client)
    assert remote == embedded_answers()
    assert [status for status, _ in remote] == [200, 200, 400, 422, 504, 404]


def test_a_compile_error_on_the_python_api_is_a_400_naming_function_line_and_column(
    remote_service: str,
) -> None:
    broken = {"functions": {"bad": {"code": "no such program", "language": "python"}}}
    answer = httpx.post(f"{remote_service}/v2/functions/broken", json=broken)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["function"], error["line"], error["column"]) == ("CompileError", "bad", 1, 1)
    assert httpx.get(f"{remote_service}/v2/functions/broken").status_code == 404  # nothing was saved


def test_health_shows_the_remote_python_runtime(remote_service: str) -> None:
    python = httpx.get(f"{remote_service}/sys/healthcheck").json()["runtimes"]["python"]
    assert python["status"] == "ok" and python["url"].startswith("http://127.0.0.1:")


def test_an_unreachable_python_api_is_a_503_naming_it(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with serving(tmp_path, PYTHON_API_URL=nowhere) as url:
        answer = httpx.post(f"{url}/v2/functions/demo", json=BODY)
        assert answer.status_code == 503 and nowhere in answer.json()["error"]["message"]
        python = httpx.get(f"{url}/sys/healthcheck").json()["runtimes"]["python"]
        assert python["status"] == "unavailable" and nowhere in python["reason"]


def test_a_restarted_python_api_is_sent_the_workspace_again_and_runs_it(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, PYTHON_API_URL=f"http://127.0.0.1:{port}") as url:
        run = f"{url}/v2/functions/demo/run/echo"
        with python_api_process(fake_timeout_s=TIMEOUT_S, port=port):
            assert httpx.post(f"{url}/v2/functions/demo", json=BODY).status_code == 200
            assert httpx.post(run, json={"parameters": {"n": 1}}).json()["result"] == {"n": 1}
        assert httpx.post(run, json={}).status_code == 503  # nobody on the port
        with python_api_process(fake_timeout_s=TIMEOUT_S, port=port):
            # The new python-api does not know the revision: it says so, and the service sends the body.
            assert httpx.post(run, json={"parameters": {"n": 2}}).json()["result"] == {"n": 2}


@pytest.mark.parametrize(("service_key", "status"), [("s3cret", 200), (None, 503)])
def test_the_python_api_requires_the_api_key_that_the_service_sends(
    tmp_path: Path, service_key: str | None, status: int
) -> None:
    with python_api_process(fake_timeout_s=TIMEOUT_S, environ={"FUNCTIONS_API_KEY": "s3cret"}) as python_api:
        assert httpx.post(f"{python_api}/v1/evict", json={"id": "demo"}).status_code == 401
        environ = {
            "PYTHON_API_URL": python_api,
            **({"FUNCTIONS_API_KEY": service_key} if service_key else {}),
        }
        headers = {"authorization": f"Bearer {service_key}"} if service_key else {}
        with serving(tmp_path, **environ) as url:
            answer = httpx.post(f"{url}/v2/functions/demo", json=BODY, headers=headers)
            assert answer.status_code == status, answer.text
            if status == 503:
                assert "Unauthorized" in answer.json()["error"]["message"]


REAL_BODY = {
    "functions": {
        "hello": {
            "code": "print('hi', name)\nreturn {'hello': name, 'n': n * 2}",
            "language": "python",
            "parameters": {"name": {"type": "string", "default": "world"}, "n": {"type": "number"}},
        },
        "boom": {"code": "x = 1\nraise ValueError('boom')", "language": "python"},
        "spin": {"code": "while True:\n    pass", "language": "python"},
        "js": {"code": "return 'from node';"},
    }
}
REAL_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("hello", {"n": 2}),
    ("hello", {"n": "x"}),
    ("boom", {}),
    ("spin", {}),
    ("hello", {"n": 0}),
)


def real_calls(url: str) -> list[tuple[int, Any]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        answers = [client.post("/v2/functions/demo", json=REAL_BODY)]
        broken = {"functions": {"bad": {"code": "return 1 +", "language": "python"}}}
        answers.append(client.post("/v2/functions/broken", json=broken))
        for function, params in REAL_RUNS:
            answers.append(client.post(f"/v2/functions/demo/run/{function}", json={"parameters": params}))
    return [(answer.status_code, comparable(answer.json())) for answer in answers]


def comparable(body: Any) -> Any:
    """An answer without what differs from run to run: the duration and the log timestamps."""
    body = without_duration(body)
    if isinstance(body, dict) and "logs" in body:
        body["logs"] = [{k: v for k, v in entry.items() if k != "timestamp"} for entry in body["logs"]]
    return body


@pytest.mark.kernel
def test_real_python_through_the_python_api_answers_as_embedded_python(tmp_path: Path) -> None:
    environ = {"PYTHON_FUNCTIONS_RUN_TIMEOUT": "500", "KERNEL_POOL_SIZE": "2"}
    with serving(tmp_path / "embedded", **environ) as url:
        embedded = real_calls(url)
    with python_api_process(environ=environ) as python_api:
        with serving(tmp_path / "remote", PYTHON_API_URL=python_api, **environ) as url:
            remote = real_calls(url)
    assert remote == embedded
    assert [status for status, _ in remote] == [200, 400, 200, 400, 422, 504, 200]
    assert remote[1][1]["error"]["type"] == "CompileError" and remote[1][1]["error"]["function"] == "bad"
