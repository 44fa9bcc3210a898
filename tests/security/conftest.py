"""The hostile suite's service: a real `functions serve` process with secrets planted in its environment.

Attacks go through HTTP as a tenant's code would. After each attack, `survived()` checks that the
service still answers a hello in a workspace of its own within a second.
"""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serving import serving

CANARY = f"canary-{uuid.uuid4().hex}"
API_KEY = f"key-{uuid.uuid4().hex}"
TIMEOUT_MS = 3000  # room for a memory bomb to reach its limit on a loaded machine


class Tenant:
    """A client of the service under attack: save workspaces, run their functions, check it survived."""

    def __init__(self, url: str, storage: Path) -> None:
        self.url, self.storage = url, storage
        self.http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30.0)

    def save(self, workspace: str, functions: dict[str, Any], language: str = "nodejs") -> httpx.Response:
        body = {
            "functions": {
                name: {"language": language, **(spec if isinstance(spec, dict) else {"code": spec})}
                for name, spec in functions.items()
            }
        }
        return self.http.post(f"/v2/functions/{workspace}", json=body)

    def run(self, workspace: str, function: str, params: Any = None) -> httpx.Response:
        body = {} if params is None else {"parameters": params}
        return self.http.post(f"/v2/functions/{workspace}/run/{function}", json=body)

    def attack(
        self, code: str, params: Any = None, language: str = "nodejs", workspace: str = "attacker"
    ) -> httpx.Response:
        """Save `code` as the only function of `workspace` and run it once; the save must succeed."""
        saved = self.save(workspace, {"f": code}, language)
        assert saved.status_code == 200, saved.text
        return self.run(workspace, "f", params)

    def survived(self, language: str = "nodejs") -> None:
        """Another workspace still answers a hello, within a second."""
        workspace = f"bystander-{language}"
        code = "return 'hello'"
        if self.http.get(f"/v2/functions/{workspace}").status_code != 200:
            assert self.save(workspace, {"hello": code}, language).status_code == 200
        started = time.monotonic()
        answer = self.run(workspace, "hello")
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == "hello"
        assert took < 1.0, f"the bystander's hello took {took:.2f} s"


@pytest.fixture(scope="session")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    storage = tmp_path_factory.mktemp("hostile")
    environ = {
        "FUNCTIONS_API_KEY": API_KEY,
        "SECRET_CANARY": CANARY,
        "NPM_CONFIG__AUTH": CANARY,  # a registry token, as an operator would set one
        "FUNCTIONS_RUN_TIMEOUT": str(TIMEOUT_MS),
        "PYTHON_FUNCTIONS_RUN_TIMEOUT": str(TIMEOUT_MS),
        "KERNEL_POOL_SIZE": "2",
        # Memory bombs must meet MemoryError well within the 1.5 s timeout on a loaded machine: filling the
        # default 512 MiB (plus the 384 MiB address-space reserve) took up to 1 s here.
        "PYTHON_WORKER_MAX_MEMORY_MB": "256",
        # The service's stderr is a pipe read only at the end: access logs, and the stack a crashing host
        # prints (logged as warnings), would fill it and stall the service.
        "LOG_LEVEL": "error",
    }
    with serving(storage, **environ) as url:
        client = Tenant(url, storage)
        yield client
        client.http.close()


def function_error(answer: httpx.Response, name: str, *fragments: str) -> dict[str, Any]:
    """The answer is a 422 FunctionError of class `name` whose message holds every fragment."""
    assert answer.status_code == 422, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["type"] == "FunctionError", error
    assert error["name"] == name, error
    for fragment in fragments:
        assert fragment in error["message"], error
    return error


class Arsenal:
    """Many attacks saved at once as the functions of one workspace, each run on its own.

    One save per group rather than one per attack: every save of a Python workspace replaces its
    subinterpreter, and closing dozens of them back to back costs the kernel more than the attacks.
    """

    def __init__(
        self, tenant: Tenant, workspace: str, codes: dict[str, str], language: str = "python"
    ) -> None:
        self.tenant, self.workspace = tenant, workspace
        self.names = {key: f"a{index}" for index, key in enumerate(codes)}
        saved = tenant.save(workspace, {self.names[key]: code for key, code in codes.items()}, language)
        assert saved.status_code == 200, saved.text

    def run(self, key: str, params: Any = None) -> httpx.Response:
        return self.tenant.run(self.workspace, self.names[key], params)
