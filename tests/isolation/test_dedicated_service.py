"""FUNCTIONS_ISOLATION=dedicated through HTTP: a real `functions serve`, a host per workspace."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.serving import serving
from tests.python.kernels import kernel

pytestmark = [pytest.mark.node, kernel]


def save(client: httpx.Client, workspace: str, language: str = "nodejs", **functions: str) -> None:
    body = {"functions": {name: {"code": code, "language": language} for name, code in functions.items()}}
    answer = client.post(f"/v2/functions/{workspace}", json=body)
    assert answer.status_code == 200, answer.text


def run(client: httpx.Client, workspace: str, function: str, **params: Any) -> dict[str, Any]:
    answer = client.post(f"/v2/functions/{workspace}/run/{function}", json={"parameters": params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def runtimes(client: httpx.Client) -> dict[str, Any]:
    report: dict[str, Any] = client.get("/sys/healthcheck").json()["runtimes"]
    return report


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    storage = tmp_path_factory.mktemp("dedicated")
    with serving(storage, FUNCTIONS_ISOLATION="dedicated", KERNEL_POOL_SIZE="2") as url:
        with httpx.Client(base_url=url, timeout=30.0) as http:
            yield http


def test_each_nodejs_workspace_gets_a_host_and_a_save_closes_it(client: httpx.Client) -> None:
    for workspace in ("one", "two"):
        save(client, workspace, hello="return `hello ${parameters.who}`;")
        assert run(client, workspace, "hello", who=workspace)["result"] == f"hello {workspace}"
    nodejs = runtimes(client)["nodejs"]
    assert nodejs["status"] == "ok" and nodejs["isolation"] == "dedicated"
    assert nodejs["hosts"] == 2
    save(
        client, "one", hello="return `hi ${parameters.who}`;"
    )  # the next run starts a fresh host with the new code
    assert runtimes(client)["nodejs"]["hosts"] == 1
    assert run(client, "one", "hello", who="again")["result"] == "hi again"


def test_a_save_that_does_not_compile_is_refused_without_starting_a_host(client: httpx.Client) -> None:
    hosts = runtimes(client)["nodejs"]["hosts"]
    answer = client.post("/v2/functions/broken", json={"functions": {"f": {"code": "return 1 +;"}}})
    assert answer.status_code == 400 and "line" in answer.text
    assert runtimes(client)["nodejs"]["hosts"] == hosts


def test_python_workspaces_run_in_kernels_of_their_own(client: httpx.Client) -> None:
    for workspace in ("py-one", "py-two"):
        save(client, workspace, "python", add="return parameters['a'] + parameters['b']")
        assert run(client, workspace, "add", a=1, b=2)["result"] == 3
    python = runtimes(client)["python"]
    assert python["status"] == "ok"
    assert python["kernel_processes"] == 3  # the pool's one kernel (it only compiles) and one per workspace
